package storage_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestRelations(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var pos int64
		room := newExtraRoom(t, db, "!r:test", &pos)
		other := newExtraRoom(t, db, "!o:test", &pos)
		root := room.event("m.room.message", nil, "@alice:test", `{"body":"root"}`)
		root2 := room.event("m.room.message", nil, "@carol:test", `{"body":"root2"}`)
		foreign := other.event("m.room.message", nil, "@eve:test", `{"body":"elsewhere"}`)
		rel := func(child, parent, relType, typ, sender string, p int64, key string) {
			t.Helper()
			if err := storage.InsertRelation(ctx, db, storage.Relation{EventID: child, RoomID: "!r:test", RelatesTo: parent, RelType: relType, Type: typ,
				Sender: sender, StreamPos: p, AggregationKey: key}); err != nil {
				t.Fatal(err)
			}
		}
		rel("$t1", root, "m.thread", "m.room.message", "@bob:test", 10, "")
		rel("$t2", root, "m.thread", "m.room.encrypted", "@bob:test", 11, "")
		rel("$edit", root, "m.replace", "m.room.message", "@alice:test", 12, "")
		rel("$like", root, "m.annotation", "m.reaction", "@bob:test", 13, "👍")
		rel("$t3", root, "m.thread", "m.room.message", "@carol:test", 14, "")
		rel("$r1", "$t1", "m.annotation", "m.reaction", "@alice:test", 15, "🎉")
		rel("$u1", root2, "m.thread", "m.room.message", "@dave:test", 16, "")
		rel("$x", foreign, "m.thread", "m.room.message", "@bob:test", 17, "")   // a child in !r pointing at !o's event
		rel("$t1", "$other", "m.thread", "m.room.message", "@bob:test", 18, "") // ignored: $t1 already relates

		ids := func(rs []storage.Relation) string {
			var out []string
			for _, r := range rs {
				out = append(out, r.EventID)
			}
			return fmt.Sprint(out)
		}
		page := func(q storage.RelationsQuery) string {
			t.Helper()
			q.RoomID = "!r:test"
			if q.To == 0 {
				q.To = math.MaxInt64
			}
			if q.Limit == 0 {
				q.Limit = 10
			}
			rs, err := storage.ChildRelations(ctx, db, q)
			if err != nil {
				t.Fatal(err)
			}
			return ids(rs)
		}
		if got := page(storage.RelationsQuery{Parent: root, Backwards: true}); got != "[$t3 $like $edit $t2 $t1]" {
			t.Fatalf("all children: %s", got)
		}
		if got := page(storage.RelationsQuery{Parent: root, RelType: "m.thread"}); got != "[$t1 $t2 $t3]" {
			t.Fatalf("threads forwards: %s", got)
		}
		if got := page(storage.RelationsQuery{Parent: root, RelType: "m.thread", EventType: "m.room.message", Backwards: true, Limit: 1}); got != "[$t3]" {
			t.Fatalf("typed page: %s", got)
		}
		if got := page(storage.RelationsQuery{Parent: root, From: 10, To: 12, Backwards: true}); got != "[$edit $t2]" {
			t.Fatalf("range: %s", got)
		}
		rs, err := storage.RelationsOf(ctx, db, "!r:test", []string{root, "$t1"}, []string{"m.annotation"}, 10)
		if err != nil || ids(rs) != "[$like $r1]" || rs[0].AggregationKey != "👍" {
			t.Fatalf("RelationsOf: %s %v", ids(rs), err)
		}
		rs, err = storage.ParentRelations(ctx, db, []string{root, root2, foreign}, []string{"m.replace", "m.thread"})
		if err != nil || ids(rs) != "[$t1 $t2 $edit $t3 $u1 $x]" {
			t.Fatalf("ParentRelations: %s %v", ids(rs), err)
		}

		// Thread summaries only count children in the root's room ($x is
		// in !r but relates to an event of !o).
		sums, err := storage.ThreadSummaries(ctx, db, []string{root, root2, foreign, "$unknown"}, "@carol:test", math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		if len(sums) != 2 {
			t.Fatalf("summaries: %+v", sums)
		}
		if s := sums[root]; s.Count != 3 || s.LatestEvent != "$t3" || s.LatestPos != 14 || s.UserEvents != 1 || s.RoomID != "!r:test" {
			t.Fatalf("root summary: %+v", s)
		}
		if s := sums[root2]; s.Count != 1 || s.LatestEvent != "$u1" || s.UserEvents != 0 {
			t.Fatalf("root2 summary: %+v", s)
		}
		if sums, _ := storage.ThreadSummaries(ctx, db, []string{root}, "@bob:test", 11); sums[root].Count != 2 || sums[root].LatestEvent != "$t2" || sums[root].UserEvents != 2 {
			t.Fatalf("capped summary: %+v", sums[root])
		}

		roots := func(by string, capPos, before int64, limit int) string {
			t.Helper()
			ts, err := storage.ThreadRoots(ctx, db, "!r:test", by, capPos, before, limit)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range ts {
				out = append(out, fmt.Sprintf("%s@%d", r.Root, r.LatestPos))
			}
			return fmt.Sprint(out)
		}
		if got := roots("", math.MaxInt64, math.MaxInt64, 10); got != fmt.Sprintf("[%s@17 %s@16 %s@14]", foreign, root2, root) {
			t.Fatalf("roots: %s", got)
		}
		if got := roots("", math.MaxInt64, 15, 10); got != fmt.Sprintf("[%s@14]", root) {
			t.Fatalf("roots before: %s", got)
		}
		if got := roots("", 12, math.MaxInt64, 10); got != fmt.Sprintf("[%s@11]", root) {
			t.Fatalf("roots capped: %s", got)
		}
		// Alice sent root; Dave replied in root2; Bob replied to root (and $x).
		if got := roots("@alice:test", math.MaxInt64, math.MaxInt64, 10); got != fmt.Sprintf("[%s@14]", root) {
			t.Fatalf("alice participated: %s", got)
		}
		if got := roots("@dave:test", math.MaxInt64, math.MaxInt64, 10); got != fmt.Sprintf("[%s@16]", root2) {
			t.Fatalf("dave participated: %s", got)
		}
		if got := roots("@bob:test", math.MaxInt64, math.MaxInt64, 1); got != fmt.Sprintf("[%s@17]", foreign) {
			t.Fatalf("bob participated, limit 1: %s", got)
		}

		if err := storage.DeleteRelation(ctx, db, "$t3"); err != nil {
			t.Fatal(err)
		}
		if sums, _ := storage.ThreadSummaries(ctx, db, []string{root}, "@carol:test", math.MaxInt64); sums[root].Count != 2 || sums[root].LatestEvent != "$t2" || sums[root].UserEvents != 0 {
			t.Fatalf("after delete: %+v", sums[root])
		}
	})
}
