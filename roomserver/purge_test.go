package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// TestPurgesKeepCachesTrue: after a purge the room server answers from
// the store, not from what it cached of the deleted rows, and the
// caller's writes share the purge's transaction.
func TestPurgesKeepCachesTrue(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newTestServer(t, db)
		alice := "@alice:test.local"
		roomID, err := rs.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: "10", Events: []InitialEvent{
			{Type: "m.room.member", StateKey: sp(alice), Content: map[string]any{"membership": "join"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		send := func(body string) string {
			ev, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)})
			if err != nil {
				t.Fatal(err)
			}
			return ev.EventID
		}
		old, last := send("old"), send("last")
		if evs, _ := rs.Events(ctx, []string{old, last}); len(evs) != 2 {
			t.Fatalf("cached %d events, want 2", len(evs))
		}

		// History: the old message goes, the extremity stays.
		n, err := rs.PurgeHistory(ctx, roomID, time.Now().Add(time.Minute).UnixMilli(), nil)
		if err != nil || n != 1 {
			t.Fatalf("PurgeHistory = %d, %v; want 1 event", n, err)
		}
		evs, err := rs.Events(ctx, []string{old, last})
		if err != nil || len(evs) != 1 || evs[0].EventID() != last {
			t.Fatalf("after PurgeHistory Events = %v, %v; want only %s", evs, err, last)
		}

		// A failing inTx rolls the purge back.
		boom := errors.New("boom")
		if _, err := rs.PurgeRoom(ctx, roomID, func(*storage.Tx, int64) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("PurgeRoom with failing inTx: %v", err)
		}
		if _, err := rs.CurrentState(ctx, roomID); err != nil {
			t.Fatalf("room gone after a rolled-back purge: %v", err)
		}

		var inTx int64
		if _, err := rs.PurgeRoom(ctx, roomID, func(_ *storage.Tx, n int64) error { inTx = n; return nil }); err != nil {
			t.Fatal(err)
		}
		if inTx == 0 {
			t.Fatal("inTx was not given the deleted events")
		}
		if _, err := rs.CurrentState(ctx, roomID); !errors.Is(err, ErrRoomNotFound) {
			t.Fatalf("CurrentState after PurgeRoom: %v, want ErrRoomNotFound", err)
		}
		if evs, err := rs.Events(ctx, []string{last}); err != nil || len(evs) != 0 {
			t.Fatalf("Events after PurgeRoom = %d, %v; want none", len(evs), err)
		}
	})
}
