package storage_test

import (
	"context"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestFedDeviceListStreams(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if id, err := storage.DeviceListStreamID(ctx, db, "@a:test"); err != nil || id != 0 {
			t.Fatalf("fresh stream ID %d %v", id, err)
		}
		first, prev, err := storage.NextDeviceListStreamIDs(ctx, db, "@a:test", 1)
		if err != nil || first != 1 || prev != 0 {
			t.Fatalf("first reservation: %d %d %v", first, prev, err)
		}
		first, prev, err = storage.NextDeviceListStreamIDs(ctx, db, "@a:test", 3)
		if err != nil || first != 2 || prev != 1 {
			t.Fatalf("second reservation: %d %d %v", first, prev, err)
		}
		if id, err := storage.DeviceListStreamID(ctx, db, "@a:test"); err != nil || id != 4 {
			t.Fatalf("stream ID after 4 updates: %d %v", id, err)
		}
		if first, _, err := storage.NextDeviceListStreamIDs(ctx, db, "@b:test", 1); err != nil || first != 1 {
			t.Fatalf("another user's stream: %d %v", first, err)
		}
	})
}

func TestFedInboundToDeviceDedup(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		mark := func(origin, sender, id string, ts int64) bool {
			t.Helper()
			fresh, err := storage.MarkInboundToDevice(ctx, db, origin, sender, id, ts)
			if err != nil {
				t.Fatal(err)
			}
			return fresh
		}
		if !mark("a.test", "@s:a.test", "m1", 10) || mark("a.test", "@s:a.test", "m1", 11) {
			t.Fatal("a message ID must be fresh once")
		}
		if !mark("a.test", "@t:a.test", "m1", 12) || !mark("b.test", "@s:a.test", "m1", 12) {
			t.Fatal("message IDs are per origin and sender")
		}
		// A rolled-back delivery is not remembered.
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if _, err := storage.MarkInboundToDevice(ctx, tx, "a.test", "@s:a.test", "m2", 20); err != nil {
				return err
			}
			return errors.New("delivery failed")
		})
		if err == nil || !mark("a.test", "@s:a.test", "m2", 21) {
			t.Fatal("an ID marked in a rolled-back transaction must stay fresh")
		}
		if n, err := storage.PruneInboundToDevice(ctx, db, 12); err != nil || n != 1 {
			t.Fatalf("pruned %d %v", n, err)
		}
		if !mark("a.test", "@s:a.test", "m1", 30) {
			t.Fatal("a pruned ID is fresh again")
		}
	})
}

func TestFedEphemeralRanges(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		from := db.Stream.Current()
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@a:test", EventID: "$e1", EventPos: 1, TS: 5})
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read.private", UserID: "@a:test", EventID: "$e2", EventPos: 2, TS: 6})
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@b:test", ThreadID: "main", EventID: "$e2", EventPos: 2, TS: 7})
		mid := db.Stream.Current()
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@a:test", EventID: "$e3", EventPos: 3, TS: 8})
		// One row per user and thread: @a's unthreaded receipt moved to $e3,
		// past mid, so the first range holds only @b's (the private one
		// never counts).
		got, err := storage.ReadReceiptsRange(ctx, db, from, mid, 10)
		if err != nil || len(got) != 1 || got[0].UserID != "@b:test" || got[0].ThreadID != "main" || got[0].TS != 7 {
			t.Fatalf("receipts in the first range: %+v %v", got, err)
		}
		got, err = storage.ReadReceiptsRange(ctx, db, from, db.Stream.Current(), 10)
		if err != nil || len(got) != 2 || got[1].EventID != "$e3" || got[0].StreamPos >= got[1].StreamPos {
			t.Fatalf("receipts in the whole range: %+v %v", got, err)
		}
		if page, err := storage.ReadReceiptsRange(ctx, db, from, db.Stream.Current(), 1); err != nil || len(page) != 1 || page[0] != got[0] {
			t.Fatalf("first page: %+v %v", page, err)
		}

		pfrom := db.Stream.Current()
		putPresence(t, db, storage.Presence{UserID: "@a:test", State: "online", LastActiveTS: 1})
		putPresence(t, db, storage.Presence{UserID: "@b:test", State: "unavailable", LastActiveTS: 2})
		ps, err := storage.PresenceChangesRange(ctx, db, pfrom, db.Stream.Current(), 10)
		if err != nil || len(ps) != 2 || ps[0].UserID != "@a:test" || ps[1].State != "unavailable" {
			t.Fatalf("presence changes: %+v %v", ps, err)
		}

		if id, err := storage.CurrentStateEventID(ctx, db, "!r:test", "m.room.server_acl", ""); err != nil || id != "" {
			t.Fatalf("empty state slot: %q %v", id, err)
		}
		setMember(t, db, "!r:test", "@a:test", "join")
		if id, err := storage.CurrentStateEventID(ctx, db, "!r:test", "m.room.member", "@a:test"); err != nil || id == "" {
			t.Fatalf("member slot: %q %v", id, err)
		}
	})
}

func TestFedOpenIDTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		h := storage.HashOpenIDToken("secret")
		if h == "secret" || len(h) != 64 {
			t.Fatalf("hash %q", h)
		}
		if err := storage.CreateOpenIDToken(ctx, db, h, "@a:test", 1000, 10); err != nil {
			t.Fatal(err)
		}
		if err := storage.CreateOpenIDToken(ctx, db, storage.HashOpenIDToken("old"), "@b:test", 500, 10); err != nil {
			t.Fatal(err)
		}
		if u, err := storage.OpenIDTokenUser(ctx, db, h, 999); err != nil || u != "@a:test" {
			t.Fatalf("valid token: %q %v", u, err)
		}
		if _, err := storage.OpenIDTokenUser(ctx, db, h, 1000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired token: %v", err)
		}
		if _, err := storage.OpenIDTokenUser(ctx, db, storage.HashOpenIDToken("nope"), 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
		// Creating a token sweeps expired ones.
		if err := storage.CreateOpenIDToken(ctx, db, storage.HashOpenIDToken("new"), "@c:test", 3000, 600); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM openid_tokens`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("tokens left: %d %v", n, err)
		}
	})
}
