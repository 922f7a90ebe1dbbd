package storage_test

import (
	"context"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func insertNotifs(t *testing.T, db *storage.DB, ns ...storage.Notification) int64 {
	t.Helper()
	var pos int64
	err := db.WithTx(context.Background(), func(tx *storage.Tx) error {
		var err error
		pos, err = storage.InsertNotifications(context.Background(), tx, ns)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestNotificationCountsAndReceipts(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		n := func(room, ev string, pos int64, thread string, hl bool) storage.Notification {
			return storage.Notification{UserID: "@a:test", RoomID: room, EventID: ev, EventPos: pos, ThreadID: thread, Highlight: hl, Actions: []byte(`["notify"]`), TS: pos}
		}
		p1 := insertNotifs(t, db, n("!r:test", "$1", 1, "", false), n("!r:test", "$2", 2, "main", true), n("!r:test", "$3", 3, "$root", false),
			n("!s:test", "$4", 4, "main", true))
		// Duplicate inserts are ignored.
		insertNotifs(t, db, n("!r:test", "$1", 1, "", false))
		counts, err := storage.UnreadCounts(ctx, db, "@a:test", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c := counts["!r:test"]["main"]; c.Notifications != 2 || c.Highlights != 1 {
			t.Fatalf("main counts %+v", counts)
		}
		if c := counts["!r:test"]["$root"]; c.Notifications != 1 || c.Highlights != 0 {
			t.Fatalf("thread counts %+v", counts)
		}
		if some, _ := storage.UnreadCounts(ctx, db, "@a:test", []string{"!s:test"}); len(some) != 1 || some["!s:test"]["main"].Highlights != 1 {
			t.Fatalf("counts of one room %+v", some)
		}
		if rooms, _ := storage.NotificationRoomsRange(ctx, db, "@a:test", p1-1, db.Stream.Current()); len(rooms) != 2 {
			t.Fatalf("rooms in range: %v", rooms)
		}
		if rooms, _ := storage.NotificationRoomsRange(ctx, db, "@a:test", db.Stream.Current(), db.Stream.Current()); len(rooms) != 0 {
			t.Fatalf("empty range: %v", rooms)
		}
		// A threaded receipt on main clears main only.
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@a:test", ThreadID: "main", EventID: "$2", EventPos: 2, TS: 1})
		counts, _ = storage.UnreadCounts(ctx, db, "@a:test", nil)
		if len(counts["!r:test"]) != 1 || counts["!r:test"]["$root"].Notifications != 1 {
			t.Fatalf("after main receipt %+v", counts)
		}
		// An unthreaded private receipt clears everything up to it.
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read.private", UserID: "@a:test", EventID: "$3", EventPos: 3, TS: 1})
		counts, _ = storage.UnreadCounts(ctx, db, "@a:test", nil)
		if len(counts["!r:test"]) != 0 || counts["!s:test"]["main"].Highlights != 1 {
			t.Fatalf("after unthreaded receipt %+v", counts)
		}
		// A row written after a receipt that covers it counts as read.
		insertNotifs(t, db, n("!r:test", "$late", 3, "main", true))
		if counts, _ = storage.UnreadCounts(ctx, db, "@a:test", nil); len(counts["!r:test"]) != 0 {
			t.Fatalf("late row counted: %+v", counts)
		}
		// Paging, newest first, with read flags and the highlight filter.
		page, err := storage.ListNotifications(ctx, db, "@a:test", 0, 2, false)
		if err != nil || len(page) != 2 || page[0].EventID != "$late" || !page[0].Read || page[1].EventID != "$4" || page[1].Read {
			t.Fatalf("page 1: %+v %v", page, err)
		}
		rest, _ := storage.ListNotifications(ctx, db, "@a:test", page[1].ID, 10, false)
		if len(rest) != 3 || rest[2].EventID != "$1" || !rest[2].Read || string(rest[2].Actions) != `["notify"]` {
			t.Fatalf("page 2: %+v", rest)
		}
		hl, _ := storage.ListNotifications(ctx, db, "@a:test", 0, 10, true)
		if len(hl) != 3 {
			t.Fatalf("highlights: %+v", hl)
		}
		if other, _ := storage.ListNotifications(ctx, db, "@b:test", 0, 10, false); len(other) != 0 {
			t.Fatalf("other user's: %+v", other)
		}
	})
}
