package test

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"enclave/storage"
)

// TestReadYourWritesEveryWrite holds a lower stream position uncommitted
// (another writer mid-transaction) while a client writes a receipt, a
// to-device message and presence: each write answers only once its own
// position is visible, so the /sync the client makes right after the 200
// has it. Before, only room sends and account data waited, and a /sync
// straight after a receipt could miss it (the CI flake of
// TestRemovingAccountData, for every other stream). SQLite cannot show
// the window (the open transaction holds its single write lock, so the
// client's write waits for it anyway); PostgreSQL does.
func TestReadYourWritesEveryWrite(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		room := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
		ev := mustOK(t, "send", raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/t1", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "hi"})).Body["event_id"].(string)

		writes := []struct {
			name, method, path string
			body               any
			seen               func(sync map[string]any) bool
		}{
			{"receipt", "POST", "/rooms/" + url.PathEscape(room) + "/receipt/m.read/" + url.PathEscape(ev), map[string]any{},
				func(s map[string]any) bool {
					join, _ := s["rooms"].(map[string]any)["join"].(map[string]any)
					r, _ := join[room].(map[string]any)
					eph, _ := r["ephemeral"].(map[string]any)
					evs, _ := eph["events"].([]any)
					for _, e := range evs {
						if e.(map[string]any)["type"] == "m.receipt" {
							return true
						}
					}
					return false
				}},
			{"to-device", "PUT", "/sendToDevice/m.test/txn-rw", map[string]any{"messages": map[string]any{alice.UserID: map[string]any{alice.DeviceID: map[string]any{"n": 1}}}},
				func(s map[string]any) bool {
					td, _ := s["to_device"].(map[string]any)
					evs, _ := td["events"].([]any)
					return len(evs) == 1
				}},
			{"account data", "PUT", "/user/" + url.PathEscape(alice.UserID) + "/account_data/m.test.rw", map[string]any{"v": 1},
				func(s map[string]any) bool {
					ad, _ := s["account_data"].(map[string]any)
					evs, _ := ad["events"].([]any)
					for _, e := range evs {
						if e.(map[string]any)["type"] == "m.test.rw" {
							return true
						}
					}
					return false
				}},
		}
		for _, w := range writes {
			t.Run(w.name, func(t *testing.T) {
				since := mustOK(t, "sync", raw(t, "GET", cs(srv.URL)+"/sync?timeout=0", alice.AccessToken, nil)).Body["next_batch"].(string)
				// Another writer holds a lower position open.
				holding, release, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
				var releaseOnce sync.Once
				free := func() { releaseOnce.Do(func() { close(release) }) }
				defer free() // a failed check must not leave the store blocked
				go func() {
					held <- srv.DB.WithTx(context.Background(), func(tx *storage.Tx) error {
						tx.NextPos("account_data")
						close(holding)
						<-release
						return nil
					})
				}()
				<-holding
				answered := make(chan rawResp, 1)
				go func() { answered <- raw(t, w.method, cs(srv.URL)+w.path, alice.AccessToken, w.body) }()
				select {
				case r := <-answered:
					t.Fatalf("%s answered %d while a lower position was uncommitted: a /sync now could miss it", w.name, r.Status)
				case <-time.After(300 * time.Millisecond):
				}
				free()
				if err := <-held; err != nil {
					t.Fatal(err)
				}
				mustOK(t, w.name, <-answered)
				s := mustOK(t, "sync", raw(t, "GET", cs(srv.URL)+"/sync?timeout=0&since="+url.QueryEscape(since), alice.AccessToken, nil)).Body
				if !w.seen(s) {
					t.Fatalf("the /sync straight after the %s's 200 misses it: %v", w.name, s)
				}
			})
		}
	})
}
