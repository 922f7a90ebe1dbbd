package storage_test

import (
	"context"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func putReceipt(t *testing.T, db *storage.DB, r storage.Receipt) bool {
	t.Helper()
	var stored bool
	err := db.WithTx(context.Background(), func(tx *storage.Tx) error {
		var err error
		stored, err = storage.PutReceipt(context.Background(), tx, &r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

func TestReceiptsForwardOnlyAndVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		setMember(t, db, "!r:test", "@a:test", "join")
		setMember(t, db, "!r:test", "@b:test", "join")
		setMember(t, db, "!other:test", "@c:test", "join")
		if !putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@b:test", EventID: "$e5", EventPos: 5, TS: 1}) {
			t.Fatal("first receipt not stored")
		}
		if putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@b:test", EventID: "$e3", EventPos: 3, TS: 2}) {
			t.Fatal("older receipt moved the marker back")
		}
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@b:test", ThreadID: "main", EventID: "$e3", EventPos: 3, TS: 2})
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read.private", UserID: "@b:test", EventID: "$e6", EventPos: 6, TS: 3})
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read.private", UserID: "@a:test", EventID: "$e6", EventPos: 6, TS: 3})
		putReceipt(t, db, storage.Receipt{RoomID: "!other:test", Type: "m.read", UserID: "@c:test", EventID: "$o1", EventPos: 9, TS: 3})

		own, _ := storage.UserReceipts(ctx, db, "@b:test", "!r:test")
		if len(own) != 3 || own[0].EventID != "$e5" || own[0].ThreadID != "" || own[1].ThreadID != "main" || own[2].Type != "m.read.private" {
			t.Fatalf("b's receipts: %+v", own)
		}
		got, err := storage.ReceiptsRange(ctx, db, "@a:test", 0, db.Stream.Current())
		if err != nil {
			t.Fatal(err)
		}
		// a sees b's public receipts and its own private one, nothing of b's
		// private receipt, nothing of a room it is not in.
		seen := map[string]bool{}
		for _, r := range got {
			seen[r.UserID+" "+r.Type+" "+r.ThreadID] = true
		}
		if len(got) != 3 || !seen["@b:test m.read "] || !seen["@b:test m.read main"] || !seen["@a:test m.read.private "] {
			t.Fatalf("a's view: %+v", got)
		}
		last := got[len(got)-1].StreamPos
		putReceipt(t, db, storage.Receipt{RoomID: "!r:test", Type: "m.read", UserID: "@b:test", EventID: "$e8", EventPos: 8, TS: 4})
		inc, _ := storage.ReceiptsRange(ctx, db, "@a:test", last, db.Stream.Current())
		if len(inc) != 1 || inc[0].EventID != "$e8" {
			t.Fatalf("incremental: %+v", inc)
		}
	})
}
