package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func putAD(t *testing.T, db *storage.DB, user, room, typ, content string) int64 {
	t.Helper()
	var pos int64
	err := db.WithTx(context.Background(), func(tx *storage.Tx) error {
		var err error
		pos, err = storage.PutAccountData(context.Background(), tx, user, room, typ, json.RawMessage(content))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestAccountDataStream(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		p1 := putAD(t, db, "@a:test", "", "m.direct", `{"@b:test":["!r:test"]}`)
		p2 := putAD(t, db, "@a:test", "!r:test", "m.tag", `{"tags":{}}`)
		putAD(t, db, "@other:test", "", "m.direct", `{}`)
		if p2 <= p1 || db.Stream.Current() < p2 {
			t.Fatalf("positions %d %d current %d", p1, p2, db.Stream.Current())
		}
		got, err := storage.GetAccountData(ctx, db, "@a:test", "", "m.direct")
		if err != nil || string(got) != `{"@b:test":["!r:test"]}` {
			t.Fatalf("get: %s %v", got, err)
		}
		if _, err := storage.GetAccountData(ctx, db, "@a:test", "!r:test", "m.direct"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("room/global must be separate: %v", err)
		}
		all, err := storage.AccountDataRange(ctx, db, "@a:test", 0, db.Stream.Current())
		if err != nil || len(all) != 2 || all[0].Type != "m.direct" || all[1].RoomID != "!r:test" {
			t.Fatalf("range all: %+v %v", all, err)
		}
		// Replacing moves the row forward; only it is in the later range.
		p3 := putAD(t, db, "@a:test", "", "m.direct", `{}`)
		rng, err := storage.AccountDataRange(ctx, db, "@a:test", p2, db.Stream.Current())
		if err != nil || len(rng) != 1 || rng[0].StreamPos != p3 || string(rng[0].Content) != `{}` {
			t.Fatalf("incremental range: %+v %v", rng, err)
		}
		if rng, _ := storage.AccountDataRange(ctx, db, "@a:test", p3, db.Stream.Current()); len(rng) != 0 {
			t.Fatalf("empty range returned %+v", rng)
		}
	})
}

func TestIgnoredUsersCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if m, err := storage.IgnoredUsers(ctx, db, "@a:test"); err != nil || len(m) != 0 {
			t.Fatalf("no list: %v %v", m, err)
		}
		putAD(t, db, "@a:test", "", storage.IgnoredUserListType, `{"ignored_users":{"@spam:test":{}}}`)
		m, err := storage.IgnoredUsers(ctx, db, "@a:test")
		if err != nil || !m["@spam:test"] || len(m) != 1 {
			t.Fatalf("after write: %v %v", m, err)
		}
		putAD(t, db, "@a:test", "", storage.IgnoredUserListType, `{"ignored_users":{}}`)
		if m, _ := storage.IgnoredUsers(ctx, db, "@a:test"); len(m) != 0 {
			t.Fatalf("cache not invalidated: %v", m)
		}
		putAD(t, db, "@b:test", "", storage.IgnoredUserListType, `{"ignored_users":{"@x:test":{},"@y:test":{}}}`)
		many, err := storage.IgnoredUsersMany(ctx, db, []string{"@a:test", "@b:test", "@c:test"})
		if err != nil || len(many["@a:test"]) != 0 || len(many["@b:test"]) != 2 || many["@c:test"] != nil {
			t.Fatalf("many: %v %v", many, err)
		}
	})
}
