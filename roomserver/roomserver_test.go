package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func newTestServer(t *testing.T, db *storage.DB) *RoomServer {
	_, key, _ := ed25519.GenerateKey(nil)
	return New(db, "test.local", "ed25519:t", key)
}

func sp(s string) *string { return &s }

func TestCreateSendAndAuth(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, ver := range []gomatrixserverlib.RoomVersion{"1", "10", "11", "12"} {
			rs := newTestServer(t, db)
			var seen []string
			rs.Subscribe(func(o OutputEvent) { seen = append(seen, o.Event.EventID) })
			alice, bob := "@alice:test.local", "@bob:test.local"
			users := map[string]int{alice: 100}
			if ver == "12" { // creators are privileged, and must not be listed
				users = map[string]int{}
			}
			roomID, err := rs.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: ver, Events: []InitialEvent{
				{Type: "m.room.member", StateKey: sp(alice), Content: map[string]any{"membership": "join"}},
				{Type: "m.room.power_levels", StateKey: sp(""), Content: map[string]any{"users": users}},
				{Type: "m.room.join_rules", StateKey: sp(""), Content: map[string]any{"join_rule": "invite"}},
			}})
			if err != nil {
				t.Fatalf("v%s create: %v", ver, err)
			}
			if len(seen) != 4 {
				t.Fatalf("v%s: %d output events, want 4", ver, len(seen))
			}
			// Bob may not join an invite-only room.
			_, err = rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)})
			var na *NotAllowedError
			if !errors.As(err, &na) {
				t.Fatalf("v%s: bob joined an invite-only room: %v", ver, err)
			}
			if m, _ := rs.Membership(ctx, roomID, bob); m != "" {
				t.Fatalf("v%s: failed join changed state: %q", ver, m)
			}
			// Invite, then join.
			if _, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"invite"}`)}); err != nil {
				t.Fatal(err)
			}
			if _, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
				t.Fatal(err)
			}
			// Idempotent message send.
			e1, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi","msgtype":"m.text"}`), TxnID: "t1", DeviceID: "D"})
			if err != nil {
				t.Fatal(err)
			}
			e2, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi","msgtype":"m.text"}`), TxnID: "t1", DeviceID: "D"})
			if err != nil || e2.EventID != e1.EventID {
				t.Fatalf("retry gave %v %v, want %s", e2, err, e1.EventID)
			}
			// Redaction by the sender strips content.
			if _, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: bob, Type: "m.room.redaction", Redacts: e1.EventID, Content: json.RawMessage(`{}`)}); err != nil {
				t.Fatal(err)
			}
			red, _ := storage.GetEvent(ctx, db, e1.EventID)
			if !red.Redacted {
				t.Fatalf("v%s: event not redacted", ver)
			}
			// A fresh room server (restart) sees the same state from the store.
			rs2 := newTestServer(t, db)
			st, err := rs2.CurrentState(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			if st.Membership(bob) != "join" || st.Get("m.room.join_rules", "") == nil {
				t.Fatalf("v%s: reloaded state wrong: %v", ver, st.Membership(bob))
			}
			before, err := rs2.StateAt(ctx, e1.EventID, false)
			if err != nil || before.Membership(bob) != "join" {
				t.Fatalf("v%s: state at event: %v", ver, err)
			}
		}
	})
}

// TestSendTxnRecordedByAnotherWriter: when the send's transaction ID is
// recorded by another writer between the room server's check and its
// commit (a killed process whose commit PostgreSQL finished while its
// successor served the client's retry), the retry answers that writer's
// event instead of failing, and stores nothing of its own.
func TestSendTxnRecordedByAnotherWriter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		if db.Dialect != storage.Postgres {
			t.Skip("SQLite has one writer at a time: the other writer cannot commit inside our transaction")
		}
		ctx := context.Background()
		alice := "@alice:test.local"
		first := newTestServer(t, db)
		roomID, err := first.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: "10", Events: []InitialEvent{
			{Type: "m.room.member", StateKey: sp(alice), Content: map[string]any{"membership": "join"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		send := func(rs *RoomServer, body string) (*storage.Event, error) {
			return rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, DeviceID: "DEV", TxnID: "t1", Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)})
		}
		var other *storage.Event
		second := newTestServer(t, db)
		second.AddHook(func(ctx context.Context, _ *storage.Tx, ev *storage.Event, _ gomatrixserverlib.PDU) error {
			if ev.Type != "m.room.message" || other != nil {
				return nil
			}
			var err error
			other, err = send(first, "from the other writer")
			return err
		})
		got, err := send(second, "retry")
		if err != nil {
			t.Fatalf("retry failed: %v", err)
		}
		if other == nil || got.EventID != other.EventID {
			t.Fatalf("retry answered %s, want the other writer's %v", got.EventID, other)
		}
		if _, err := storage.GetTxn(ctx, db, alice, "DEV", TxnScope(roomID), "t1"); err != nil {
			t.Fatal(err)
		}
		evs, err := storage.RoomEventsRange(ctx, db, roomID, 0, 1<<62, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Type == "m.room.message" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d messages stored, want 1", n)
		}
	})
}
