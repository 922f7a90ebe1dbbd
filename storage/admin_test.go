package storage_test

import (
	"context"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestAdminAccountListing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for i, a := range []storage.Account{
			{UserID: "@alice:test", Localpart: "alice", DisplayName: "Alice Liddell", IsAdmin: true},
			{UserID: "@bob:test", Localpart: "bob", DisplayName: "Builder"},
			{UserID: "@carol:test", Localpart: "carol", Deactivated: true},
			{UserID: "@guest1:test", Localpart: "guest1", IsGuest: true},
		} {
			a.CreatedTS = int64(100 - i)
			if ok, err := storage.CreateAccount(ctx, db, &a); err != nil || !ok {
				t.Fatal(err)
			}
		}
		_ = storage.UpsertDevice(ctx, db, &storage.Device{UserID: "@bob:test", DeviceID: "D", CreatedTS: 1, LastSeenTS: 777})
		names := func(f storage.AccountFilter) ([]string, int) {
			t.Helper()
			accs, total, err := storage.ListAdminAccounts(ctx, db, f)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, a := range accs {
				out = append(out, a.UserID)
			}
			return out, total
		}
		if got, total := names(storage.AccountFilter{}); total != 3 || len(got) != 3 || got[0] != "@alice:test" {
			t.Fatalf("default (no deactivated): %v %d", got, total)
		}
		if _, total := names(storage.AccountFilter{Deactivated: true}); total != 4 {
			t.Fatalf("with deactivated: %d", total)
		}
		f := false
		if got, _ := names(storage.AccountFilter{Guests: &f}); len(got) != 2 {
			t.Fatalf("no guests: %v", got)
		}
		tr := true
		if got, _ := names(storage.AccountFilter{Admins: &tr}); len(got) != 1 || got[0] != "@alice:test" {
			t.Fatalf("admins: %v", got)
		}
		if got, _ := names(storage.AccountFilter{Name: "builder"}); len(got) != 1 || got[0] != "@bob:test" {
			t.Fatalf("name matches display name: %v", got)
		}
		if got, _ := names(storage.AccountFilter{UserID: "LIC"}); len(got) != 1 || got[0] != "@alice:test" {
			t.Fatalf("user_id contains: %v", got)
		}
		if got, total := names(storage.AccountFilter{From: 1, Limit: 1}); total != 3 || len(got) != 1 || got[0] != "@bob:test" {
			t.Fatalf("paging: %v %d", got, total)
		}
		if got, _ := names(storage.AccountFilter{OrderBy: "creation_ts", Backwards: true}); got[0] != "@alice:test" {
			t.Fatalf("order creation desc: %v", got)
		}
		accs, _, _ := storage.ListAdminAccounts(ctx, db, storage.AccountFilter{Name: "bob"})
		if len(accs) != 1 || accs[0].LastSeenTS != 777 {
			t.Fatalf("last seen: %+v", accs)
		}
		if err := storage.ReactivateAccount(ctx, db, "@carol:test"); err != nil {
			t.Fatal(err)
		}
		if _, total := names(storage.AccountFilter{}); total != 4 {
			t.Fatal("reactivated account not listed")
		}
	})
}

func TestRoomBlocksHoldsNotices(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.GetRoomBlock(ctx, db, "!r:test"); err != storage.ErrNotFound {
			t.Fatalf("no block: %v", err)
		}
		if err := storage.BlockRoom(ctx, db, storage.RoomBlock{RoomID: "!r:test", BlockedBy: "@a:test", BlockedTS: 1}); err != nil {
			t.Fatal(err)
		}
		if ok, err := storage.UnblockRoom(ctx, db, "!r:test"); err != nil || !ok {
			t.Fatalf("unblock: %v %v", ok, err)
		}
		_ = storage.BlockRoom(ctx, db, storage.RoomBlock{RoomID: "!p:test", BlockedTS: 1})
		_ = storage.BlockRoom(ctx, db, storage.RoomBlock{RoomID: "!p:test", BlockedTS: 2, Purged: true})
		_ = storage.BlockRoom(ctx, db, storage.RoomBlock{RoomID: "!p:test", BlockedTS: 3})
		b, err := storage.GetRoomBlock(ctx, db, "!p:test")
		if err != nil || !b.Purged {
			t.Fatalf("purged flag must stick: %+v %v", b, err)
		}
		if ok, _ := storage.UnblockRoom(ctx, db, "!p:test"); ok {
			t.Fatal("a purged room was unblocked")
		}
		if l, _ := storage.ListRoomBlocks(ctx, db); len(l) != 1 {
			t.Fatalf("blocks: %+v", l)
		}

		// Legal holds, directly on a room or through a member.
		_ = storage.SetCurrentState(ctx, db, storage.CurrentStateRow{RoomID: "!h:test", Type: "m.room.member", StateKey: "@held:test", EventID: "$m", Membership: "join"})
		if held, _ := storage.RoomUnderHold(ctx, db, "!h:test"); held {
			t.Fatal("held without a hold")
		}
		if err := storage.PutLegalHold(ctx, db, storage.LegalHold{Scope: storage.HoldUser, Target: "@held:test", Reason: "case 1", CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
		if held, _ := storage.RoomUnderHold(ctx, db, "!h:test"); !held {
			t.Fatal("member's hold does not hold the room")
		}
		_ = storage.PutLegalHold(ctx, db, storage.LegalHold{Scope: storage.HoldRoom, Target: "!x:test", Reason: "a", CreatedTS: 1})
		_ = storage.PutLegalHold(ctx, db, storage.LegalHold{Scope: storage.HoldRoom, Target: "!x:test", Reason: "b", CreatedTS: 2})
		holds, _ := storage.ListLegalHolds(ctx, db)
		if len(holds) != 2 || holds[0].Target != "!x:test" || holds[0].Reason != "b" {
			t.Fatalf("holds: %+v", holds)
		}
		if held, _ := storage.RoomUnderHold(ctx, db, "!x:test"); !held {
			t.Fatal("room hold")
		}
		if ok, _ := storage.DeleteLegalHold(ctx, db, storage.HoldRoom, "!x:test"); !ok {
			t.Fatal("delete hold")
		}
		if ok, _ := storage.DeleteLegalHold(ctx, db, storage.HoldRoom, "!x:test"); ok {
			t.Fatal("deleted twice")
		}

		if id, err := storage.ServerNoticeRoom(ctx, db, "@u:test"); err != nil || id != "" {
			t.Fatalf("no notice room: %q %v", id, err)
		}
		_ = storage.SetServerNoticeRoom(ctx, db, "@u:test", "!n1:test")
		_ = storage.SetServerNoticeRoom(ctx, db, "@u:test", "!n2:test")
		if id, _ := storage.ServerNoticeRoom(ctx, db, "@u:test"); id != "!n2:test" {
			t.Fatalf("notice room %q", id)
		}
	})
}

func TestPurgeRoomAndAdminRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, id := range []string{"!a:test", "!b:test"} {
			if err := storage.InsertRoom(ctx, db, &storage.Room{RoomID: id, Version: "10", Creator: "@c:test", CreatedTS: 1, IsPublic: id == "!a:test"}); err != nil {
				t.Fatal(err)
			}
		}
		sk := ""
		for i, ev := range []struct{ id, typ, key, js, membership string }{
			{"$n", "m.room.name", "", `{"content":{"name":"Alpha"}}`, ""},
			{"$m1", "m.room.member", "@c:test", `{"content":{"membership":"join"}}`, "join"},
			{"$m2", "m.room.member", "@r:other", `{"content":{"membership":"join"}}`, "join"},
			{"$m3", "m.room.member", "@l:test", `{"content":{"membership":"leave"}}`, "leave"},
		} {
			key := ev.key
			if ev.typ == "m.room.name" {
				key = sk
			}
			if _, err := storage.InsertEvent(ctx, db, &storage.Event{StreamPos: int64(i + 1), EventID: ev.id, RoomID: "!a:test", RoomVersion: "10", Type: ev.typ, StateKey: &key, Sender: "@c:test", JSON: []byte(ev.js)}); err != nil {
				t.Fatal(err)
			}
			if err := storage.SetCurrentState(ctx, db, storage.CurrentStateRow{RoomID: "!a:test", Type: ev.typ, StateKey: key, EventID: ev.id, Membership: ev.membership, StreamPos: int64(i + 1)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := storage.InsertAlias(ctx, db, "#a:test", "!a:test", "@c:test"); err != nil {
			t.Fatal(err)
		}
		rooms, err := storage.ListAdminRooms(ctx, db, "test", "")
		if err != nil || len(rooms) != 2 {
			t.Fatalf("rooms: %v %v", rooms, err)
		}
		a := rooms[0]
		if a.RoomID != "!a:test" || a.JoinedMembers != 2 || a.JoinedLocalMembers != 1 || a.StateEvents != 4 || a.State["m.room.name"]["name"] != "Alpha" || !a.IsPublic {
			t.Fatalf("room a: %+v", a)
		}
		one, _ := storage.ListAdminRooms(ctx, db, "test", "!b:test")
		if len(one) != 1 || one[0].JoinedMembers != 0 {
			t.Fatalf("room b: %+v", one)
		}
		n, err := storage.PurgeRoom(ctx, db, "!a:test")
		if err != nil || n != 4 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if _, err := storage.GetRoom(ctx, db, "!a:test"); err != storage.ErrNotFound {
			t.Fatalf("room survives purge: %v", err)
		}
		if _, _, err := storage.GetAlias(ctx, db, "#a:test"); err != storage.ErrNotFound {
			t.Fatalf("alias survives purge: %v", err)
		}
		if m, _ := storage.RoomMembers(ctx, db, "!a:test", "join"); len(m) != 0 {
			t.Fatalf("members survive purge: %v", m)
		}
		rooms, _ = storage.ListAdminRooms(ctx, db, "test", "")
		if len(rooms) != 1 {
			t.Fatalf("rooms after purge: %d", len(rooms))
		}
	})
}
