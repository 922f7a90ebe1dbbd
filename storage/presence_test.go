package storage_test

import (
	"context"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func putPresence(t *testing.T, db *storage.DB, p storage.Presence) int64 {
	t.Helper()
	var pos int64
	err := db.WithTx(context.Background(), func(tx *storage.Tx) error {
		var err error
		pos, err = storage.PutPresence(context.Background(), tx, &p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestPresenceRows(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.GetPresence(ctx, db, "@a:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing: %v", err)
		}
		msg := "lunch"
		setMember(t, db, "!r:test", "@a:test", "join")
		setMember(t, db, "!r:test", "@b:test", "join")
		setMember(t, db, "!x:test", "@c:test", "join")
		first := putAD(t, db, "@z:test", "", "x", `{}`) // so a range can start after 0 and before a's row
		putPresence(t, db, storage.Presence{UserID: "@a:test", State: "online", StatusMsg: &msg, LastActiveTS: 10, CurrentlyActive: true})
		pb := putPresence(t, db, storage.Presence{UserID: "@b:test", State: "unavailable", LastActiveTS: 20})
		putPresence(t, db, storage.Presence{UserID: "@c:test", State: "online", LastActiveTS: 30})
		p, err := storage.GetPresence(ctx, db, "@a:test")
		if err != nil || p.State != "online" || p.StatusMsg == nil || *p.StatusMsg != "lunch" || !p.CurrentlyActive || p.LastActiveTS != 10 {
			t.Fatalf("get: %+v %v", p, err)
		}
		if err := storage.TouchPresence(ctx, db, "@a:test", 99); err != nil {
			t.Fatal(err)
		}
		if p, _ = storage.GetPresence(ctx, db, "@a:test"); p.LastActiveTS != 99 || p.StreamPos >= pb {
			t.Fatalf("touch must not move the stream position: %+v", p)
		}
		// Initial range (0) and an incremental one both leave out c.
		for _, from := range []int64{0, first} {
			rows, err := storage.PresenceRange(ctx, db, "@a:test", from, db.Stream.Current())
			if err != nil || len(rows) != 2 || rows[0].UserID != "@a:test" || rows[1].UserID != "@b:test" {
				t.Fatalf("range from %d: %+v %v", from, rows, err)
			}
		}
		// A user in no room sees only themselves.
		rows, _ := storage.PresenceRange(ctx, db, "@lonely:test", 0, db.Stream.Current())
		if len(rows) != 0 {
			t.Fatalf("lonely: %+v", rows)
		}
		putPresence(t, db, storage.Presence{UserID: "@lonely:test", State: "offline", LastActiveTS: 1})
		if rows, _ = storage.PresenceRange(ctx, db, "@lonely:test", 0, db.Stream.Current()); len(rows) != 1 {
			t.Fatalf("own presence: %+v", rows)
		}
		if rows, _ = storage.PresenceRange(ctx, db, "@a:test", pb, db.Stream.Current()); len(rows) != 0 {
			t.Fatalf("c's change leaked to a: %+v", rows)
		}
		active, _ := storage.ActivePresence(ctx, db)
		if len(active) != 3 {
			t.Fatalf("active: %+v", active)
		}
	})
}
