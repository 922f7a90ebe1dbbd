package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func e2eeTestDevice(t *testing.T, db *storage.DB, userID, deviceID string) {
	t.Helper()
	ctx := context.Background()
	if ok, _ := storage.AccountExists(ctx, db, userID); !ok {
		if _, err := storage.CreateAccount(ctx, db, &storage.Account{UserID: userID, Localpart: userID[1 : len(userID)-len(":test")], CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := storage.CreateDevice(ctx, db, &storage.Device{UserID: userID, DeviceID: deviceID, CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
}

// One-time keys go to one claimer each, even concurrently, then the
// fallback key is handed out and marked used.
func TestE2EEClaimKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e2eeTestDevice(t, db, "@o:test", "D")
		var keys []storage.OneTimeKey
		for i := range 10 {
			keys = append(keys, storage.OneTimeKey{KeyID: fmt.Sprintf("signed_curve25519:%02d", i), Algorithm: "signed_curve25519", JSON: json.RawMessage(fmt.Sprintf(`{"key":"k%d"}`, i))})
		}
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.AddOneTimeKeys(ctx, tx, "@o:test", "D", keys); err != nil {
				return err
			}
			return storage.SetFallbackKey(ctx, tx, "@o:test", "D", storage.OneTimeKey{KeyID: "signed_curve25519:FB", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"fb","fallback":true}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
		// Same key again (re-signed) is fine; a different key is a conflict.
		if err := storage.AddOneTimeKeys(ctx, db, "@o:test", "D", []storage.OneTimeKey{{KeyID: "signed_curve25519:01", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"k1","signatures":{"x":{}}}`)}}); err != nil {
			t.Fatalf("identical key: %v", err)
		}
		var ce *storage.KeyConflictError
		if err := storage.AddOneTimeKeys(ctx, db, "@o:test", "D", []storage.OneTimeKey{{KeyID: "signed_curve25519:01", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"other"}`)}}); !errors.As(err, &ce) || ce.KeyID != "signed_curve25519:01" {
			t.Fatalf("conflicting key: %v", err)
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					k, err := storage.ClaimKey(ctx, tx, "@o:test", "D", "signed_curve25519")
					if err != nil || k == nil {
						return fmt.Errorf("claim: %v %v", k, err)
					}
					mu.Lock()
					got[k.KeyID]++
					mu.Unlock()
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		for _, k := range keys {
			if got[k.KeyID] != 1 {
				t.Fatalf("%s claimed %d times", k.KeyID, got[k.KeyID])
			}
		}
		if got["signed_curve25519:FB"] != 20 {
			t.Fatalf("fallback claimed %d times, want 20", got["signed_curve25519:FB"])
		}
		counts, unused, err := storage.SyncKeyCounts(ctx, db, "@o:test", "D")
		if err != nil || counts["signed_curve25519"] != 0 || len(unused) != 0 {
			t.Fatalf("after claims: %v %v %v", counts, unused, err)
		}
		if k, err := storage.ClaimKey(ctx, db, "@o:test", "NOPE", "signed_curve25519"); k != nil || err != nil {
			t.Fatalf("unknown device: %v %v", k, err)
		}
	})
}

// To-device: a since-token acknowledges, overflow moves past `to`, and an
// old token gets the unacknowledged messages again.
func TestE2EEToDeviceInbox(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		var msgs []storage.ToDeviceMessage
		for i := range 5 {
			msgs = append(msgs, storage.ToDeviceMessage{UserID: "@r:test", DeviceID: "R", Sender: "@s:test", Type: "t", Content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		}
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			_, err := storage.InsertToDevice(ctx, tx, msgs)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		to := db.Stream.Current()
		woken := make(chan struct{}, 1)
		first, err := storage.TakeToDevice(ctx, db, "@r:test", "R", 0, to, 3, func() { woken <- struct{}{} })
		if err != nil || len(first) != 3 || string(first[0].Content) != `{"n":0}` {
			t.Fatalf("first batch: %v %v", first, err)
		}
		<-woken // the overflow was moved to a new, visible position
		to2 := db.Stream.Current()
		if to2 <= to {
			t.Fatalf("overflow did not move the stream: %d <= %d", to2, to)
		}
		again, _ := storage.TakeToDevice(ctx, db, "@r:test", "R", 0, to, 3, nil)
		if len(again) != 3 {
			t.Fatalf("unacknowledged messages not redelivered: %d", len(again))
		}
		second, err := storage.TakeToDevice(ctx, db, "@r:test", "R", to, to2, 3, nil)
		if err != nil || len(second) != 2 || string(second[0].Content) != `{"n":3}` || string(second[1].Content) != `{"n":4}` {
			t.Fatalf("second batch: %s %v", second, err)
		}
		if n, _ := storage.PendingToDevice(ctx, db, "@r:test", "R"); n != 2 {
			t.Fatalf("acknowledged messages not deleted: %d left", n)
		}
		if rest, _ := storage.TakeToDevice(ctx, db, "@r:test", "R", to2, to2, 3, nil); len(rest) != 0 {
			t.Fatalf("acknowledged messages delivered again: %d", len(rest))
		}
		if n, _ := storage.PendingToDevice(ctx, db, "@r:test", "R"); n != 0 {
			t.Fatalf("%d messages left after the last acknowledgement", n)
		}
		var mark int64
		if err := db.QueryRowContext(ctx, `SELECT pos FROM e2ee_stream_mark WHERE id = 1`).Scan(&mark); err != nil || mark != to2 {
			t.Fatalf("stream mark %d (%v), want %d", mark, err, to2)
		}
	})
}

// Deleting a device drops its keys and inbox and records a change.
func TestE2EEDeviceCleanup(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e2eeTestDevice(t, db, "@u:test", "A")
		e2eeTestDevice(t, db, "@u:test", "B")
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if _, err := storage.SetDeviceKeys(ctx, tx, "@u:test", "B", []byte(`{"device_id":"B"}`), "ed", 1); err != nil {
				return err
			}
			_, err := storage.InsertToDevice(ctx, tx, []storage.ToDeviceMessage{{UserID: "@u:test", DeviceID: "B", Sender: "@s:test", Type: "t", Content: json.RawMessage(`{}`)}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		before := db.Stream.Current()
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return storage.DeleteDevices(ctx, tx, "@u:test", []string{"B"}) }); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.GetDeviceKeys(ctx, db, "@u:test", "B"); err != storage.ErrNotFound {
			t.Fatalf("keys survived: %v", err)
		}
		if n, _ := storage.PendingToDevice(ctx, db, "@u:test", "B"); n != 0 {
			t.Fatalf("inbox survived: %d", n)
		}
		ch, err := storage.DeviceListChangesRange(ctx, db, before, db.Stream.Current(), 10)
		if err != nil || len(ch) != 1 || ch[0].UserID != "@u:test" || ch[0].DeviceID != "B" || !ch[0].Deleted {
			t.Fatalf("device-list change: %+v %v", ch, err)
		}
		changed, _, err := storage.DeviceListUpdates(ctx, db, "@u:test", before, db.Stream.Current())
		if err != nil || len(changed) != 1 || changed[0] != "@u:test" {
			t.Fatalf("own change not reported: %v %v", changed, err)
		}
	})
}

// The spec's "better key" rule for key backup.
func TestE2EEBackupBetterKey(t *testing.T) {
	k := func(v bool, idx, fwd int64) *storage.BackupKey {
		return &storage.BackupKey{IsVerified: v, FirstMessageIndex: idx, ForwardedCount: fwd}
	}
	cases := []struct {
		new, old *storage.BackupKey
		better   bool
	}{
		{k(true, 9, 9), k(false, 0, 0), true},
		{k(false, 0, 0), k(true, 9, 9), false},
		{k(false, 1, 9), k(false, 2, 0), true},
		{k(false, 2, 0), k(false, 1, 9), false},
		{k(false, 1, 0), k(false, 1, 1), true},
		{k(false, 1, 1), k(false, 1, 1), false},
	}
	for i, c := range cases {
		if got := c.new.Better(c.old); got != c.better {
			t.Errorf("case %d: Better = %v, want %v", i, got, c.better)
		}
	}
}

// ReadSyncState reads counts, inbox and device lists in one query.
func TestE2EEReadSyncState(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e2eeTestDevice(t, db, "@v:test", "V")
		since := db.Stream.Current()
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.AddOneTimeKeys(ctx, tx, "@v:test", "V", []storage.OneTimeKey{
				{KeyID: "signed_curve25519:a", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"a"}`)},
				{KeyID: "signed_curve25519:b", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"b"}`)},
				{KeyID: "curve25519:c", Algorithm: "curve25519", JSON: json.RawMessage(`"c"`)},
			}); err != nil {
				return err
			}
			if err := storage.SetFallbackKey(ctx, tx, "@v:test", "V", storage.OneTimeKey{KeyID: "signed_curve25519:f", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"f"}`)}); err != nil {
				return err
			}
			for i := range 3 {
				if _, err := storage.InsertToDevice(ctx, tx, []storage.ToDeviceMessage{{UserID: "@v:test", DeviceID: "V", Sender: "@s:test", Type: "t", Content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}}); err != nil {
					return err
				}
			}
			_, err := storage.RecordDeviceListChange(ctx, tx, "@v:test", []string{"V"}, false, "")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		to := db.Stream.Current()
		st, err := storage.ReadSyncState(ctx, db, "@v:test", "V", since, to, 100, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Counts["signed_curve25519"] != 2 || st.Counts["curve25519"] != 1 || len(st.UnusedFallback) != 1 {
			t.Fatalf("counts %v fallback %v", st.Counts, st.UnusedFallback)
		}
		if len(st.ToDevice) != 3 || string(st.ToDevice[0].Content) != `{"n":0}` || string(st.ToDevice[2].Content) != `{"n":2}` {
			t.Fatalf("inbox %s", st.ToDevice)
		}
		if len(st.Changed) != 1 || st.Changed[0] != "@v:test" {
			t.Fatalf("changed %v", st.Changed)
		}
		// The next sync acknowledges; an initial sync reports no lists.
		st, err = storage.ReadSyncState(ctx, db, "@v:test", "V", to, to, 100, true, nil)
		if err != nil || len(st.ToDevice) != 0 || st.Changed != nil {
			t.Fatalf("after acknowledgement: %+v %v", st, err)
		}
		if n, _ := storage.PendingToDevice(ctx, db, "@v:test", "V"); n != 0 {
			t.Fatalf("%d messages left", n)
		}

		// The empty inbox and the counts are now kept in memory: every later
		// write must show in the next read exactly as the store has it.
		read := func(since int64) *storage.SyncState {
			t.Helper()
			st, err := storage.ReadSyncState(ctx, db, "@v:test", "V", since, db.Stream.Current(), 100, true, nil)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		if st := read(to); st.Counts["signed_curve25519"] != 2 || len(st.UnusedFallback) != 1 || len(st.ToDevice) != 0 {
			t.Fatalf("kept state: %+v", st)
		}
		claim := func(q storage.Querier) {
			t.Helper()
			if k, err := storage.ClaimKey(ctx, q, "@v:test", "V", "signed_curve25519"); err != nil || k == nil {
				t.Fatalf("claim: %v %v", k, err)
			}
		}
		claim(db) // outside a transaction
		if st := read(to); st.Counts["signed_curve25519"] != 1 {
			t.Fatalf("after a claim: %v", st.Counts)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { claim(tx); claim(tx); return nil }); err != nil {
			t.Fatal(err)
		}
		if st := read(to); st.Counts["signed_curve25519"] != 0 || len(st.UnusedFallback) != 0 {
			t.Fatalf("after the fallback key went: %v %v", st.Counts, st.UnusedFallback)
		}
		mark := db.Stream.Current()
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			_, err := storage.InsertToDevice(ctx, tx, []storage.ToDeviceMessage{{UserID: "@v:test", DeviceID: "V", Sender: "@s:test", Type: "t", Content: json.RawMessage(`{"n":9}`)}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if st := read(mark); len(st.ToDevice) != 1 || string(st.ToDevice[0].Content) != `{"n":9}` {
			t.Fatalf("new to-device message: %+v", st.ToDevice)
		}
		// A rolled-back upload changes nothing.
		_ = db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.AddOneTimeKeys(ctx, tx, "@v:test", "V", []storage.OneTimeKey{{KeyID: "signed_curve25519:z", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"z"}`)}}); err != nil {
				return err
			}
			return errors.New("roll back")
		})
		if st := read(db.Stream.Current()); st.Counts["signed_curve25519"] != 0 {
			t.Fatalf("rolled-back upload counted: %v", st.Counts)
		}
	})
}
