package storage_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// TestRoomGaps: a hole is found by the range its next free position lies
// in, moves down as it is filled, and goes when closed or out of room;
// positions set aside are never handed out.
func TestRoomGaps(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		lo, p := db.Stream.ReserveAfterGap("events", 1000)
		db.Stream.Committed(p)
		db.Stream.Release(p)
		if p != lo+1000 {
			t.Fatalf("reserved %d after setting aside from %d", p, lo)
		}
		if next := db.Stream.Reserve("events"); next <= p {
			t.Fatalf("next position %d within the gap", next)
		} else {
			db.Stream.Release(next)
		}
		g := &storage.Gap{RoomID: "!r:test", EventID: "$e", EventPos: p, NextPos: p - 1, FloorPos: lo, PrevIDs: []string{"$x"}}
		if err := storage.InsertGap(ctx, db, g); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.GapBelow(ctx, db, "!r:test", p-1, p); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a range above the hole found it: %v", err)
		}
		got, err := storage.GapBelow(ctx, db, "!r:test", 0, p-1)
		if err != nil || !reflect.DeepEqual(got, g) {
			t.Fatalf("GapBelow = %+v, %v; want %+v", got, err, g)
		}
		g.NextPos, g.PrevIDs = p-11, []string{"$y"}
		if err := storage.UpdateGap(ctx, db, g); err != nil {
			t.Fatal(err)
		}
		if got, err := storage.GetGap(ctx, db, "!r:test", "$e"); err != nil || got.NextPos != p-11 || got.PrevIDs[0] != "$y" {
			t.Fatalf("after filling: %+v, %v", got, err)
		}
		g.PrevIDs = nil
		if err := storage.UpdateGap(ctx, db, g); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.GetGap(ctx, db, "!r:test", "$e"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a closed hole stays: %v", err)
		}
	})
}
