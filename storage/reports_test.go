package storage_test

import (
	"context"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestReports(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		score := int64(-100)
		reps := []*storage.Report{
			{Kind: storage.ReportEvent, Reporter: "@a:test", RoomID: "!r:test", EventID: "$e", TargetUser: "@spam:test", Reason: "spam", Score: &score, CreatedTS: 1},
			{Kind: storage.ReportRoom, Reporter: "@a:test", RoomID: "!r:test", Reason: "bad room", CreatedTS: 2},
			{Kind: storage.ReportUser, Reporter: "@b:test", TargetUser: "@spam:test", CreatedTS: 3},
		}
		var ids []int64
		for _, r := range reps {
			id, err := storage.InsertReport(ctx, db, r)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		got, err := storage.GetReport(ctx, db, ids[0])
		if err != nil || got.Kind != "event" || got.EventID != "$e" || got.TargetUser != "@spam:test" || got.Score == nil || *got.Score != -100 || got.Resolved {
			t.Fatalf("get: %+v %v", got, err)
		}
		if got, _ := storage.GetReport(ctx, db, ids[1]); got.Score != nil || got.Reason != "bad room" {
			t.Fatalf("room report: %+v", got)
		}
		if _, err := storage.GetReport(ctx, db, 999999); err != storage.ErrNotFound {
			t.Fatalf("missing report: %v", err)
		}
		list, err := storage.ListReports(ctx, db, 0, 2, false)
		if err != nil || len(list) != 2 || list[0].ID != ids[2] || list[1].ID != ids[1] {
			t.Fatalf("first page: %+v %v", list, err)
		}
		list, err = storage.ListReports(ctx, db, ids[1], 10, false)
		if err != nil || len(list) != 1 || list[0].ID != ids[0] {
			t.Fatalf("second page: %+v %v", list, err)
		}
		if ok, err := storage.ResolveReport(ctx, db, ids[2]); err != nil || !ok {
			t.Fatalf("resolve: %v %v", ok, err)
		}
		if ok, err := storage.ResolveReport(ctx, db, 999999); err != nil || ok {
			t.Fatalf("resolve missing: %v %v", ok, err)
		}
		list, err = storage.ListReports(ctx, db, 0, 10, true)
		if err != nil || len(list) != 2 || list[0].ID != ids[1] {
			t.Fatalf("unresolved: %+v %v", list, err)
		}
	})
}
