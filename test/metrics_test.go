package test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"enclave/config"
	"enclave/storage"
)

// TestOpsMetrics checks that each operational metric docs/OPERATIONS.md
// lists moves with what it counts (issue 16: audit entries, sealer lag
// and checkpoints, login failures and lockouts, rate-limit refusals,
// media bytes, retention purges, sync waiters by kind, event
// persistence latency), read from the registry the metrics listener
// serves.
func TestOpsMetrics(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Auth.LockoutAfterFailures = 3
			c.Auth.Lockout = config.Duration{Duration: time.Minute}
			c.RateLimits.Enabled = true
			c.RateLimits.PerSecond, c.RateLimits.Burst = 2, 20
			c.RateLimits.LoginPerSecond, c.RateLimits.LoginBurst = 100, 100
		}})
		metric := func(name string, labels map[string]string) (value float64, count uint64, found bool) {
			t.Helper()
			mfs, err := srv.Registry.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() != name {
					continue
				}
			next:
				for _, m := range mf.GetMetric() {
					have := map[string]string{}
					for _, l := range m.GetLabel() {
						have[l.GetName()] = l.GetValue()
					}
					for k, v := range labels {
						if have[k] != v {
							continue next
						}
					}
					switch {
					case m.Counter != nil:
						return m.Counter.GetValue(), 0, true
					case m.Gauge != nil:
						return m.Gauge.GetValue(), 0, true
					case m.Histogram != nil:
						return m.Histogram.GetSampleSum(), m.Histogram.GetSampleCount(), true
					}
				}
			}
			return 0, 0, false
		}
		value := func(name string, labels map[string]string) float64 {
			t.Helper()
			v, _, _ := metric(name, labels)
			return v
		}

		alice := Register(t, srv.URL, "alice", "alice-pw", false)

		t.Run("login failures and lockouts", func(t *testing.T) {
			for range 3 {
				r := raw(t, "POST", cs(srv.URL)+"/login", "", map[string]any{
					"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong",
				})
				if r.Status != http.StatusForbidden {
					t.Fatalf("wrong password: %d %s", r.Status, r.Raw)
				}
			}
			if got := value("enclave_login_failures_total", map[string]string{"reason": "invalid_credentials"}); got != 3 {
				t.Errorf("login failures: %v, want 3", got)
			}
			if got := value("enclave_login_lockouts_total", nil); got != 1 {
				t.Errorf("lockouts: %v, want 1 (the third failure locks alice)", got)
			}
			r := raw(t, "POST", cs(srv.URL)+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "alice-pw",
			})
			if r.Status != http.StatusTooManyRequests {
				t.Fatalf("login while locked: %d %s", r.Status, r.Raw)
			}
			if got := value("enclave_login_failures_total", map[string]string{"reason": "locked_out"}); got != 1 {
				t.Errorf("locked-out failures: %v, want 1", got)
			}
		})

		t.Run("media bytes stored and served", func(t *testing.T) {
			body := bytes.Repeat([]byte("enclave-"), 125) // 1000 bytes
			req, _ := http.NewRequest("POST", srv.URL+"/_matrix/media/v3/upload?filename=a.bin", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("upload: %d %s", resp.StatusCode, b)
			}
			mxc := strings.TrimPrefix(string(b[strings.Index(string(b), "mxc://"):]), "mxc://")
			mxc = mxc[:strings.IndexByte(mxc, '"')]
			if got := value("enclave_media_bytes_total", map[string]string{"direction": "stored"}); got != 1000 {
				t.Errorf("stored bytes: %v, want 1000", got)
			}
			req, _ = http.NewRequest("GET", srv.URL+"/_matrix/client/v1/media/download/"+mxc, nil)
			req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(got, body) {
				t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(got))
			}
			if got := value("enclave_media_bytes_total", map[string]string{"direction": "served"}); got != 1000 {
				t.Errorf("served bytes: %v, want 1000", got)
			}
		})

		var room string
		t.Run("event persistence latency", func(t *testing.T) {
			_, before, _ := metric("enclave_roomserver_event_persist_seconds", map[string]string{"origin": "local"})
			room = mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
			for i := range 3 {
				mustOK(t, "send", raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/m"+string(rune('a'+i)), alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "hi"}))
			}
			sum, after, found := metric("enclave_roomserver_event_persist_seconds", map[string]string{"origin": "local"})
			// createRoom's events are stored in one transaction of their own.
			if !found || after-before != 3 || sum <= 0 {
				t.Errorf("persist histogram: %d → %d samples (sum %v), want 3 more", before, after, sum)
			}
		})

		t.Run("retention purges", func(t *testing.T) {
			mustOK(t, "retention", raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/state/m.room.retention", alice.AccessToken, map[string]any{"max_lifetime": 1000}))
			time.Sleep(1100 * time.Millisecond)
			purged, err := srv.Admin.RunRetention(context.Background())
			if err != nil || purged[room] != 3 {
				t.Fatalf("retention run: %v, %v", purged, err)
			}
			if got := value("enclave_retention_purged_events_total", nil); got != 3 {
				t.Errorf("retention purged: %v, want 3", got)
			}
		})

		t.Run("sync waiters by kind", func(t *testing.T) {
			since, _ := mustOK(t, "sync", raw(t, "GET", cs(srv.URL)+"/sync?timeout=0", alice.AccessToken, nil)).Body["next_batch"].(string)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				req, _ := http.NewRequestWithContext(ctx, "GET", cs(srv.URL)+"/sync?timeout=20000&since="+url.QueryEscape(since), nil)
				req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			waitFor(t, "a /sync waiter", 10*time.Second, func() bool {
				return value("enclave_sync_waiters", map[string]string{"kind": "sync"}) == 1
			})
			if got := value("enclave_sync_waiters", map[string]string{"kind": "sliding"}); got != 0 {
				t.Errorf("sliding waiters: %v, want 0", got)
			}
			cancel()
			waitFor(t, "the waiter gone", 10*time.Second, func() bool {
				return value("enclave_sync_waiters", map[string]string{"kind": "sync"}) == 0
			})
		})

		t.Run("audit entries, checkpoints and sealer lag", func(t *testing.T) {
			if err := srv.Audit.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Every chained row is an entry or a checkpoint: the head's index
			// counts both.
			entries, checkpoints := value("enclave_audit_entries_total", nil), value("enclave_audit_checkpoints_total", nil)
			if head := srv.Audit.CurrentHead(); entries < 10 || int64(entries+checkpoints) != head.N {
				t.Errorf("audit entries %v + checkpoints %v, want the head's n %d (and ≥ 10 entries for the actions above)", entries, checkpoints, head.N)
			}
			if checkpoints < 1 {
				t.Errorf("checkpoints: %v, want ≥ 1 after Checkpoint", checkpoints)
			}
			if lag, _, found := metric("enclave_audit_sealer_lag_seconds", nil); !found || lag < 0 || lag > 30 {
				t.Errorf("sealer lag: %v (found %v)", lag, found)
			}
		})

		// Last: it empties alice's bucket.
		t.Run("rate-limit refusals", func(t *testing.T) {
			before := value("enclave_clientapi_rate_limited_total", nil)
			refused := 0
			for i := range 40 {
				r := raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/burst"+strconv.Itoa(i), alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "burst"})
				if r.Status == http.StatusTooManyRequests {
					refused++
				}
			}
			if refused == 0 {
				t.Fatal("40 requests at once with a burst of 20 were never limited")
			}
			var total float64
			mfs, _ := srv.Registry.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "enclave_clientapi_rate_limited_total" {
					for _, m := range mf.GetMetric() {
						total += m.Counter.GetValue()
					}
				}
			}
			if total-before != float64(refused) {
				t.Errorf("rate_limited_total rose by %v, want the %d refusals", total-before, refused)
			}
		})
	})
}
