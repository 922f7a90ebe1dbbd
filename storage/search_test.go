package storage_test

import (
	"context"
	"fmt"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestSearchTerms(t *testing.T) {
	for in, want := range map[string]string{
		"Martians and Men":     "[martians and men]",
		`"a" OR b* NEAR(c) -d`: "[a or b near c d]",
		"it's   café:42 café":  "[it s café 42]",
		"":                     "[]",
		"***":                  "[]",
		"x1 x2 x3 x4 x5 x6 x7 x8 x9 x10 x11 x12 x13 x14 x15 x16 x17": "[x1 x2 x3 x4 x5 x6 x7 x8 x9 x10 x11 x12 x13 x14 x15 x16]",
	} {
		if got := fmt.Sprint(storage.SearchTerms(in)); got != want {
			t.Errorf("SearchTerms(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSearchIndex(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// Text stored before PrepareSearch is indexed when it runs.
		if err := storage.InsertSearchEntry(ctx, db, storage.SearchEntry{EventID: "$early", RoomID: "!a:test", Sender: "@u:test", Key: "content.body", Body: "early bird", StreamPos: 1}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ { // idempotent
			if err := storage.PrepareSearch(ctx, db); err != nil {
				t.Fatal(err)
			}
		}
		entries := []storage.SearchEntry{
			{EventID: "$1", RoomID: "!a:test", Key: "content.body", Body: "Martians landed near the river", StreamPos: 10},
			{EventID: "$2", RoomID: "!a:test", Key: "content.body", Body: "men and martians; martians everywhere, MARTIANS!", StreamPos: 11},
			{EventID: "$3", RoomID: "!b:test", Key: "content.body", Body: "martian men dance", StreamPos: 12},
			{EventID: "$4", RoomID: "!a:test", Key: "content.name", Body: "Martians club", StreamPos: 13},
			{EventID: "$5", RoomID: "!c:test", Key: "content.topic", Body: "about martians", StreamPos: 14},
			{EventID: "$6", RoomID: "!a:test", Key: "content.body", Body: "nothing to see", StreamPos: 15},
		}
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			for _, e := range entries {
				e.Sender = "@u:test"
				if err := storage.InsertSearchEntry(ctx, tx, e); err != nil {
					return err
				}
			}
			// A second insert of an event is ignored.
			return storage.InsertSearchEntry(ctx, tx, entries[0])
		})
		if err != nil {
			t.Fatal(err)
		}
		find := func(q storage.SearchQuery) string {
			t.Helper()
			if q.Limit == 0 {
				q.Limit = 10
			}
			hits, err := storage.SearchEvents(ctx, db, q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for i, h := range hits {
				ids = append(ids, h.EventID)
				if i > 0 && !q.Recent && h.Rank > hits[i-1].Rank {
					t.Fatalf("rank order: %+v", hits)
				}
			}
			return fmt.Sprint(ids)
		}
		all := []string{"!a:test", "!b:test", "!c:test"}
		// Prefix words, all required, case-insensitive.
		if got := find(storage.SearchQuery{Terms: []string{"martian"}, RoomIDs: all, Recent: true}); got != "[$5 $4 $3 $2 $1]" {
			t.Fatalf("recent: %s", got)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martians", "men"}, RoomIDs: all, Recent: true}); got != "[$2]" {
			t.Fatalf("AND: %s", got)
		}
		if got := find(storage.SearchQuery{Terms: []string{"early"}, RoomIDs: all}); got != "[$early]" {
			t.Fatalf("text stored before PrepareSearch: %s", got)
		}
		// Rank: three mentions beat one.
		if got := find(storage.SearchQuery{Terms: []string{"martians"}, RoomIDs: []string{"!a:test"}, Keys: []string{"content.body"}}); got != "[$2 $1]" {
			t.Fatalf("rank: %s", got)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martians"}, RoomIDs: all, Keys: []string{"content.name", "content.topic"}, Recent: true}); got != "[$5 $4]" {
			t.Fatalf("keys: %s", got)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martian"}, RoomIDs: all, Recent: true, Before: 13, Limit: 1}); got != "[$3]" {
			t.Fatalf("before: %s", got)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martian"}, RoomIDs: all, Recent: true, Offset: 3}); got != "[$2 $1]" {
			t.Fatalf("offset: %s", got)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martian"}, RoomIDs: nil}); got != "[]" {
			t.Fatalf("no rooms: %s", got)
		}
		// Query syntax cannot be injected through terms.
		if got := find(storage.SearchQuery{Terms: storage.SearchTerms(`martians OR "nothing"`), RoomIDs: all}); got != "[]" {
			t.Fatalf("injection: %s", got)
		}
		if err := storage.DeleteSearchEntry(ctx, db, "$2"); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteSearchEntry(ctx, db, "$missing"); err != nil {
			t.Fatal(err)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martians"}, RoomIDs: []string{"!a:test"}, Recent: true}); got != "[$4 $1]" {
			t.Fatalf("after delete: %s", got)
		}
		// Purging a room removes its text (and relations and stats).
		if err := storage.InsertRelation(ctx, db, storage.Relation{EventID: "$t", RoomID: "!a:test", RelatesTo: "$1", RelType: "m.thread", Type: "m.room.message", Sender: "@u:test", StreamPos: 20}); err != nil {
			t.Fatal(err)
		}
		err = db.WithTx(ctx, func(tx *storage.Tx) error { return storage.PurgeRoomIndexes(ctx, tx, "!a:test") })
		if err != nil {
			t.Fatal(err)
		}
		if got := find(storage.SearchQuery{Terms: []string{"martian"}, RoomIDs: all, Recent: true}); got != "[$5 $3]" {
			t.Fatalf("after purge: %s", got)
		}
		var n int
		for _, table := range []string{"event_search", "event_relations"} {
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE room_id = '!a:test'`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%s rows left after purge: %d %v", table, n, err)
			}
		}
		if db.Dialect == storage.SQLite {
			// The FTS index holds no text of the purged room either.
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_search_fts WHERE event_search_fts MATCH 'club OR river OR nothing'`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("fts rows left: %d %v", n, err)
			}
		}
	})
}
