package storage_test

import (
	"context"
	"fmt"
	"sync"
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
		counts, err := storage.UnreadCounts(ctx, db, "@a:test", nil, -1)
		if err != nil {
			t.Fatal(err)
		}
		if c := counts["!r:test"]["main"]; c.Notifications != 2 || c.Highlights != 1 {
			t.Fatalf("main counts %+v", counts)
		}
		if c := counts["!r:test"]["$root"]; c.Notifications != 1 || c.Highlights != 0 {
			t.Fatalf("thread counts %+v", counts)
		}
		if some, _ := storage.UnreadCounts(ctx, db, "@a:test", []string{"!s:test"}, -1); len(some) != 1 || some["!s:test"]["main"].Highlights != 1 {
			t.Fatalf("counts of one room %+v", some)
		}
		// Rooms whose totals moved after a position come back unasked.
		if moved, _ := storage.UnreadCounts(ctx, db, "@a:test", []string{}, p1-1); len(moved) != 2 {
			t.Fatalf("rooms moved since %d: %v", p1-1, moved)
		}
		if moved, _ := storage.UnreadCounts(ctx, db, "@a:test", []string{}, db.Stream.Current()); len(moved) != 0 {
			t.Fatalf("nothing moved: %v", moved)
		}
		// A threaded receipt on main clears main only.
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@a:test", ThreadID: "main", EventID: "$2", EventPos: 2, TS: 1})
		counts, _ = storage.UnreadCounts(ctx, db, "@a:test", nil, -1)
		if len(counts["!r:test"]) != 1 || counts["!r:test"]["$root"].Notifications != 1 {
			t.Fatalf("after main receipt %+v", counts)
		}
		// An unthreaded private receipt clears everything up to it.
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read.private", UserID: "@a:test", EventID: "$3", EventPos: 3, TS: 1})
		counts, _ = storage.UnreadCounts(ctx, db, "@a:test", nil, -1)
		if len(counts["!r:test"]) != 0 || counts["!s:test"]["main"].Highlights != 1 {
			t.Fatalf("after unthreaded receipt %+v", counts)
		}
		// A row written after a receipt that covers it counts as read.
		insertNotifs(t, db, n("!r:test", "$late", 3, "main", true))
		if counts, _ = storage.UnreadCounts(ctx, db, "@a:test", nil, -1); len(counts["!r:test"]) != 0 {
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

// Notification batches and read receipts for the same users written at
// once: the maintained totals must end equal to the rows a receipt has not
// reached, and no batch may deadlock (PostgreSQL runs them in parallel).
func TestUnreadCountsConcurrentWriters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		users := []string{"@a:test", "@b:test", "@c:test"}
		const events = 120
		for _, u := range users { // load every user's totals first: the writes below then update them in memory
			if _, err := storage.UnreadCounts(ctx, db, u, nil, -1); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		// Two batch writers, each listing the users in a different order.
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < events; i += 2 {
					pos := int64(i + 1)
					var ns []storage.Notification
					for k := range users {
						u := users[(k+w)%len(users)]
						ns = append(ns, storage.Notification{UserID: u, RoomID: "!r:test", EventID: fmt.Sprintf("$e%d", pos), EventPos: pos, Highlight: i%5 == 0, TS: pos})
					}
					if err := db.WithTx(ctx, func(tx *storage.Tx) error {
						_, err := storage.InsertNotifications(ctx, tx, ns)
						return err
					}); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		// Receipts of every user move forward while the batches land.
		for _, u := range users[:2] {
			wg.Add(1)
			go func(u string) {
				defer wg.Done()
				for p := int64(10); p <= 90; p += 10 {
					if err := db.WithTx(ctx, func(tx *storage.Tx) error {
						_, err := storage.PutReceipt(ctx, tx, &storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: u, EventID: fmt.Sprintf("$e%d", p), EventPos: p, TS: p})
						return err
					}); err != nil {
						errs <- err
						return
					}
				}
			}(u)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		want := map[string]storage.Counts{"@a:test": {}, "@b:test": {}, "@c:test": {}}
		for _, u := range users {
			read := int64(0)
			if u != "@c:test" {
				read = 90
			}
			c := want[u]
			for i := 0; i < events; i++ {
				if int64(i+1) > read {
					c.Notifications++
					if i%5 == 0 {
						c.Highlights++
					}
				}
			}
			want[u] = c
			got, err := storage.UnreadCounts(ctx, db, u, []string{"!r:test"}, -1)
			if err != nil {
				t.Fatal(err)
			}
			if got["!r:test"]["main"] != c {
				t.Errorf("%s: counts %+v, want %+v", u, got["!r:test"]["main"], c)
			}
			// The store itself agrees with the in-memory totals.
			err = db.WithTx(ctx, func(tx *storage.Tx) error {
				got, err = storage.UnreadCounts(ctx, tx, u, nil, -1)
				return err
			})
			if err != nil || got["!r:test"]["main"] != c {
				t.Errorf("%s: stored counts %+v (%v), want %+v", u, got["!r:test"]["main"], err, c)
			}
		}
	})
}

// TestNotificationBatchRepeats: a batch holding a stored row, a row twice
// and a new row stores and counts the new row once.
func TestNotificationBatchRepeats(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		n := func(ev string, pos int64, hl bool) storage.Notification {
			return storage.Notification{UserID: "@a:test", RoomID: "!r:test", EventID: ev, EventPos: pos, Highlight: hl, Actions: []byte(`["notify"]`), TS: pos}
		}
		insertNotifs(t, db, n("$1", 1, true))
		insertNotifs(t, db, n("$1", 1, true), n("$2", 2, false), n("$2", 2, false))
		c, err := storage.UnreadCounts(ctx, db, "@a:test", nil, -1)
		if err != nil {
			t.Fatal(err)
		}
		if c["!r:test"]["main"] != (storage.Counts{Notifications: 2, Highlights: 1}) {
			t.Fatalf("counts %+v", c)
		}
		list, err := storage.ListNotifications(ctx, db, "@a:test", 0, 10, false)
		if err != nil || len(list) != 2 {
			t.Fatalf("rows %+v %v", list, err)
		}
		// Read back from the table (inside a transaction), not the cache.
		_ = db.WithTx(ctx, func(tx *storage.Tx) error {
			if c, _ := storage.UnreadCounts(ctx, tx, "@a:test", nil, -1); c["!r:test"]["main"] != (storage.Counts{Notifications: 2, Highlights: 1}) {
				t.Errorf("stored counts %+v", c)
			}
			return nil
		})
	})
}
