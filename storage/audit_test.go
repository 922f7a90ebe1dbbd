package storage_test

import (
	"context"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestAuditRowsSealListFilter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rows := []*storage.AuditRow{
			{Pos: 5, TS: 1000, Kind: "entry", ActorUser: "@a:test", Action: "room.message", RoomID: "!r:test", Details: `{"x":1}`, EntryHash: "h1"},
			{Pos: 3, TS: 2000, Kind: "entry", ActorUser: "@b:test", Action: "room.join", RoomID: "!r:test", Details: "{}", EntryHash: "h2"},
			{Pos: 9, TS: 3000, Kind: "entry", ActorUser: "@a:test", Action: "account.login", Details: "{}", EntryHash: "h3"},
		}
		for _, r := range rows {
			if err := storage.InsertAuditRow(ctx, db, r, false); err != nil {
				t.Fatal(err)
			}
		}
		// Only rows at or below the watermark are offered, in pos order.
		un, err := storage.UnsealedAuditRows(ctx, db, 5, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(un) != 2 || un[0].EntryHash != "h2" || un[1].EntryHash != "h1" {
			t.Fatalf("unsealed up to 5: %+v", un)
		}
		all, _ := storage.UnsealedAuditRows(ctx, db, 100, 0, 10)
		if len(all) != 3 {
			t.Fatalf("want 3 unsealed, got %d", len(all))
		}
		for i, u := range all {
			ok, err := storage.SealAuditRow(ctx, db, u.ID, int64(i+1), "p", "c"+u.EntryHash)
			if err != nil || !ok {
				t.Fatalf("seal %d: %v %v", u.ID, ok, err)
			}
		}
		// Sealing twice is refused: a sealed row is never changed.
		if ok, err := storage.SealAuditRow(ctx, db, all[0].ID, 99, "p", "x"); err != nil || ok {
			t.Fatalf("re-seal: %v %v", ok, err)
		}
		// Chain indexes are unique.
		extra := &storage.AuditRow{Kind: "entry", Action: "x", Details: "{}", EntryHash: "h4"}
		if err := storage.InsertAuditRow(ctx, db, extra, false); err != nil {
			t.Fatal(err)
		}
		un, _ = storage.UnsealedAuditRows(ctx, db, 100, 0, 10)
		if _, err := storage.SealAuditRow(ctx, db, un[0].ID, 2, "p", "x"); err == nil {
			t.Fatal("duplicate n accepted")
		}
		if c, err := storage.CountUnsealedAudit(ctx, db); err != nil || c != 1 {
			t.Fatalf("unsealed count %d %v", c, err)
		}
		head, cp, err := storage.AuditHead(ctx, db)
		if err != nil || head == nil || head.N != 3 || head.ChainHash != "ch3" || cp != 0 {
			t.Fatalf("head %+v cp %d %v", head, cp, err)
		}
		got, err := storage.ListAuditRows(ctx, db, storage.AuditFilter{Actor: "@a:test"})
		if err != nil || len(got) != 2 || got[0].N != 2 || got[1].N != 3 {
			t.Fatalf("actor filter: %v %+v", err, got)
		}
		got, _ = storage.ListAuditRows(ctx, db, storage.AuditFilter{Action: "room.*"})
		if len(got) != 2 {
			t.Fatalf("action prefix filter: %d", len(got))
		}
		got, _ = storage.ListAuditRows(ctx, db, storage.AuditFilter{RoomID: "!r:test", SinceTS: 1500})
		if len(got) != 1 || got[0].Action != "room.join" {
			t.Fatalf("room+since filter: %+v", got)
		}
		got, _ = storage.ListAuditRows(ctx, db, storage.AuditFilter{FromN: 2, Limit: 1})
		if len(got) != 1 || got[0].N != 2 || got[0].Details != `{"x":1}` {
			t.Fatalf("from/limit: %+v", got)
		}
		first, last, ok, err := storage.AuditNRange(ctx, db, 1500, 0)
		if err != nil || !ok || first != 1 || last != 3 {
			t.Fatalf("range: %d %d %v %v", first, last, ok, err)
		}
		if _, _, ok, _ := storage.AuditNRange(ctx, db, 9000, 0); ok {
			t.Fatal("empty range reported rows")
		}
		var seen []int64
		if err := storage.EachAuditRow(ctx, db, 2, 0, func(r *storage.AuditRow) error { seen = append(seen, r.N); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 || seen[0] != 2 || seen[1] != 3 {
			t.Fatalf("each: %v", seen)
		}
		r, err := storage.AuditRowAt(ctx, db, 3)
		if err != nil || r.EntryHash != "h3" {
			t.Fatalf("row at 3: %+v %v", r, err)
		}
		if _, err := storage.AuditRowAt(ctx, db, 50); err != storage.ErrNotFound {
			t.Fatalf("missing row: %v", err)
		}
	})
}

// The SIEM cursor: 0 before any delivery, set per sink, never moved back.
func TestAuditSIEMCursor(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if n, err := storage.AuditSIEMCursor(ctx, db, "syslog:a"); err != nil || n != 0 {
			t.Fatalf("fresh cursor: %d, %v", n, err)
		}
		for _, step := range []struct {
			sink string
			set  int64
			want int64
		}{{"syslog:a", 5, 5}, {"syslog:a", 9, 9}, {"syslog:a", 3, 9}, {"file:b", 2, 2}} {
			if err := storage.SetAuditSIEMCursor(ctx, db, step.sink, step.set, 1000); err != nil {
				t.Fatal(err)
			}
			if n, err := storage.AuditSIEMCursor(ctx, db, step.sink); err != nil || n != step.want {
				t.Fatalf("%s after setting %d: %d, %v (want %d)", step.sink, step.set, n, err, step.want)
			}
		}
		if n, _ := storage.AuditSIEMCursor(ctx, db, "syslog:a"); n != 9 {
			t.Fatalf("another sink moved syslog:a to %d", n)
		}
	})
}
