package storage_test

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func TestFederationServerKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.GetServerKey(ctx, db, "a.org", "ed25519:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing key: %v", err)
		}
		k := storage.ServerKey{ServerName: "a.org", KeyID: "ed25519:x", PublicKey: "AAAA", ValidUntilTS: 10}
		if err := storage.UpsertServerKeys(ctx, db, []storage.ServerKey{k}); err != nil {
			t.Fatal(err)
		}
		k.ValidUntilTS, k.PublicKey = 0, "BBBB"
		k.ExpiredTS = 5
		if err := storage.UpsertServerKeys(ctx, db, []storage.ServerKey{k}); err != nil {
			t.Fatal(err)
		}
		got, err := storage.GetServerKey(ctx, db, "a.org", "ed25519:x")
		if err != nil || *got != k {
			t.Fatalf("got %+v %v, want %+v", got, err, k)
		}

		if _, _, err := storage.GetKeyResponse(ctx, db, "a.org"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing response: %v", err)
		}
		for _, raw := range []string{`{"v":1}`, `{"v":2}`} {
			if err := storage.SaveKeyResponse(ctx, db, "a.org", []byte(raw), 99, 1); err != nil {
				t.Fatal(err)
			}
		}
		raw, until, err := storage.GetKeyResponse(ctx, db, "a.org")
		if err != nil || string(raw) != `{"v":2}` || until != 99 {
			t.Fatalf("response %s %d %v", raw, until, err)
		}
	})
}

func TestFederationOwnKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(storage.RecordOwnKey(ctx, db, "ed25519:a", "KA", 100))
		must(storage.RecordOwnKey(ctx, db, "ed25519:a", "KA", 150)) // restart: unchanged
		must(storage.RecordOwnKey(ctx, db, "ed25519:b", "KB", 200)) // rotation
		keys, err := storage.OwnKeys(ctx, db)
		must(err)
		want := []storage.OwnKey{
			{KeyID: "ed25519:a", PublicKey: "KA", CreatedTS: 100, ExpiredTS: 200},
			{KeyID: "ed25519:b", PublicKey: "KB", CreatedTS: 200, ExpiredTS: 0},
		}
		if !reflect.DeepEqual(keys, want) {
			t.Fatalf("own keys %+v, want %+v", keys, want)
		}
	})
}

func TestFederationInboundTxns(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.GetInboundTxn(ctx, db, "a.org", "t1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing txn: %v", err)
		}
		if err := storage.PutInboundTxn(ctx, db, "a.org", "t1", []byte(`{"pdus":{}}`), 10); err != nil {
			t.Fatal(err)
		}
		// A duplicate keeps the first response.
		if err := storage.PutInboundTxn(ctx, db, "a.org", "t1", []byte(`{"other":1}`), 11); err != nil {
			t.Fatal(err)
		}
		if err := storage.PutInboundTxn(ctx, db, "b.org", "t1", []byte(`{"b":1}`), 20); err != nil {
			t.Fatal(err)
		}
		got, err := storage.GetInboundTxn(ctx, db, "a.org", "t1")
		if err != nil || string(got) != `{"pdus":{}}` {
			t.Fatalf("got %s %v", got, err)
		}
		n, err := storage.PruneInboundTxns(ctx, db, 15)
		if err != nil || n != 1 {
			t.Fatalf("pruned %d %v", n, err)
		}
		if _, err := storage.GetInboundTxn(ctx, db, "a.org", "t1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("pruned txn still there: %v", err)
		}
		if _, err := storage.GetInboundTxn(ctx, db, "b.org", "t1"); err != nil {
			t.Fatalf("newer txn pruned: %v", err)
		}
	})
}

func itemJSON(items []storage.QueuedItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = string(it.JSON)
	}
	return out
}

func TestFederationQueue(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			must(storage.EnqueuePDU(ctx, db, []string{"a.org", "b.org"}, []byte{'p', byte('0' + i)}, 1))
		}
		must(storage.EnqueueEDU(ctx, db, []string{"a.org"}, "m.receipt", "", []byte("r1"), 1))
		must(storage.EnqueueEDU(ctx, db, []string{"a.org"}, "m.typing", "!r|@u", []byte("t1"), 1))
		must(storage.EnqueueEDU(ctx, db, []string{"a.org"}, "m.typing", "!r|@v", []byte("v1"), 1))
		must(storage.EnqueueEDU(ctx, db, []string{"a.org"}, "m.typing", "!r|@u", []byte("t2"), 1)) // replaces t1

		dests, err := storage.QueuedDestinations(ctx, db)
		must(err)
		sort.Strings(dests)
		if !reflect.DeepEqual(dests, []string{"a.org", "b.org"}) {
			t.Fatalf("destinations %v", dests)
		}
		p, e, err := storage.QueueDepth(ctx, db, "a.org")
		if err != nil || p != 3 || e != 3 {
			t.Fatalf("depth %d %d %v", p, e, err)
		}

		b, err := storage.ClaimBatch(ctx, db, "a.org", "T1", 2, 10)
		must(err)
		if b.TxnID != "T1" || !reflect.DeepEqual(itemJSON(b.PDUs), []string{"p0", "p1"}) || !reflect.DeepEqual(itemJSON(b.EDUs), []string{"r1", "v1", "t2"}) {
			t.Fatalf("batch %s %v %v", b.TxnID, itemJSON(b.PDUs), itemJSON(b.EDUs))
		}
		// While T1 is in flight, a newer typing EDU does not replace the
		// claimed one, and a second claim returns T1 unchanged.
		must(storage.EnqueueEDU(ctx, db, []string{"a.org"}, "m.typing", "!r|@u", []byte("t3"), 1))
		again, err := storage.ClaimBatch(ctx, db, "a.org", "T2", 2, 10)
		must(err)
		if again.TxnID != "T1" || !reflect.DeepEqual(itemJSON(again.PDUs), itemJSON(b.PDUs)) || !reflect.DeepEqual(itemJSON(again.EDUs), itemJSON(b.EDUs)) {
			t.Fatalf("retry batch %s %v %v", again.TxnID, itemJSON(again.PDUs), itemJSON(again.EDUs))
		}
		must(storage.DeleteBatch(ctx, db, "a.org", "T1"))
		next, err := storage.ClaimBatch(ctx, db, "a.org", "T2", 2, 10)
		must(err)
		if next.TxnID != "T2" || !reflect.DeepEqual(itemJSON(next.PDUs), []string{"p2"}) || !reflect.DeepEqual(itemJSON(next.EDUs), []string{"t3"}) {
			t.Fatalf("next batch %s %v %v", next.TxnID, itemJSON(next.PDUs), itemJSON(next.EDUs))
		}
		must(storage.DeleteBatch(ctx, db, "a.org", "T2"))
		empty, err := storage.ClaimBatch(ctx, db, "a.org", "T3", 2, 10)
		must(err)
		if len(empty.PDUs)+len(empty.EDUs) != 0 {
			t.Fatalf("queue not empty: %+v", empty)
		}
		// b.org's copies are untouched.
		p, e, err = storage.QueueDepth(ctx, db, "b.org")
		if err != nil || p != 3 || e != 0 {
			t.Fatalf("b.org depth %d %d %v", p, e, err)
		}
	})
}
