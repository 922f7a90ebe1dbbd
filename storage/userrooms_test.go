package storage_test

import (
	"context"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

// UserRooms answers from memory after the first call: every later write
// (membership, room head, a room row arriving, a purge, a rolled-back
// transaction) must show in it exactly as a fresh read of the store would.
func TestUserRoomsCacheFollowsWrites(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const u = "@u:test"
		member := func(q storage.Querier, room, membership string, pos int64) {
			t.Helper()
			if err := storage.SetCurrentState(ctx, q, storage.CurrentStateRow{RoomID: room, Type: "m.room.member", StateKey: u, EventID: "$" + room + membership, Membership: membership, StreamPos: pos}); err != nil {
				t.Fatal(err)
			}
		}
		check := func(want map[string]storage.UserRoom) {
			t.Helper()
			for _, q := range []storage.Querier{db, nil} { // cached, then straight from the store
				var got map[string]storage.UserRoom
				var err error
				if q == nil {
					err = db.WithTx(ctx, func(tx *storage.Tx) error { got, err = storage.UserRooms(ctx, tx, u); return err })
				} else {
					got, err = storage.UserRooms(ctx, q, u)
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("rooms %v, want %v", got, want)
				}
				for id, w := range want {
					if got[id] != w {
						t.Fatalf("room %s: %+v, want %+v (all %v)", id, got[id], w, got)
					}
				}
			}
		}
		if err := storage.InsertRoom(ctx, db, &storage.Room{RoomID: "!a:test", Version: "10", Creator: u, CreatedTS: 1, LastPos: 1}); err != nil {
			t.Fatal(err)
		}
		member(db, "!a:test", "join", 1)
		// A remote invite: membership without a room row stays hidden.
		member(db, "!b:test", "invite", 2)
		check(map[string]storage.UserRoom{"!a:test": {Membership: "join", LastPos: 1, MemberPos: 1}})

		// Writes inside a transaction show once it commits.
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.UpdateRoomHead(ctx, tx, "!a:test", []string{"$x"}, 0, 2, 5); err != nil {
				return err
			}
			member(tx, "!a:test", "leave", 5)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		check(map[string]storage.UserRoom{"!a:test": {Membership: "leave", LastPos: 5, MemberPos: 5}})

		// The invited room's row arrives: the membership appears.
		if err := storage.InsertRoom(ctx, db, &storage.Room{RoomID: "!b:test", Version: "10", Creator: "@c:other", CreatedTS: 1, LastPos: 6}); err != nil {
			t.Fatal(err)
		}
		check(map[string]storage.UserRoom{"!a:test": {Membership: "leave", LastPos: 5, MemberPos: 5}, "!b:test": {Membership: "invite", LastPos: 6, MemberPos: 2}})

		// A rolled-back write changes nothing.
		boom := errors.New("boom")
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			member(tx, "!b:test", "join", 7)
			if err := storage.SetRoomLastPos(ctx, tx, "!b:test", 7); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		check(map[string]storage.UserRoom{"!a:test": {Membership: "leave", LastPos: 5, MemberPos: 5}, "!b:test": {Membership: "invite", LastPos: 6, MemberPos: 2}})

		// Purging a room forgets it.
		if _, err := storage.PurgeRoom(ctx, db, "!a:test"); err != nil {
			t.Fatal(err)
		}
		check(map[string]storage.UserRoom{"!b:test": {Membership: "invite", LastPos: 6, MemberPos: 2}})
	})
}
