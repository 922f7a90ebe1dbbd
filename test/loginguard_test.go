package test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"enclave/config"
	"enclave/storage"
)

func passwordLogin(t *testing.T, srv *Server, user, password string) rawResp {
	t.Helper()
	return raw(t, "POST", srv.URL+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password})
}

// TestLoginLockout: consecutive wrong passwords lock the account — even
// the right password is refused with 429 and retry_after_ms while it
// lasts — the lockout is audited, doubles with each further failure, and a
// successful login forgives. It holds with rate limits off.
func TestLoginLockout(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.RateLimits.Enabled = false
			c.Auth.LockoutAfterFailures = 3
			c.Auth.Lockout = config.Duration{Duration: 1500 * time.Millisecond}
			c.Auth.LockoutMax = config.Duration{Duration: 10 * time.Second}
		}})
		Register(t, srv.URL, "alice", "right-password", false)
		for i := 0; i < 3; i++ {
			passwordLogin(t, srv, "alice", "wrong").wantErr(t, "wrong password", http.StatusForbidden, "M_FORBIDDEN")
		}
		locked := passwordLogin(t, srv, "alice", "right-password")
		locked.wantErr(t, "right password while locked", http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		first, _ := locked.Body["retry_after_ms"].(float64)
		if first <= 0 || first > 1500 {
			t.Fatalf("retry_after_ms %v, want (0, 1500]", first)
		}
		row := findAudit(t, auditRows(t, srv), "account.lockout", func(r *storage.AuditRow) bool { return r.Target == "@alice:localhost" })
		if det := details(t, row); det["failures"] != float64(3) {
			t.Fatalf("lockout entry details %v, want failures 3", det)
		}
		// Another user is not affected.
		Register(t, srv.URL, "bob", "bob-password", false)
		if r := passwordLogin(t, srv, "bob", "bob-password"); r.Status != http.StatusOK {
			t.Fatalf("bob's login while alice is locked: %d %s", r.Status, r.Raw)
		}

		time.Sleep(time.Duration(first)*time.Millisecond + 100*time.Millisecond)
		// One more failure after the lockout doubles it.
		passwordLogin(t, srv, "alice", "wrong").wantErr(t, "wrong password after the lockout", http.StatusForbidden, "M_FORBIDDEN")
		again := passwordLogin(t, srv, "alice", "right-password")
		again.wantErr(t, "right password in the second lockout", http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		if second, _ := again.Body["retry_after_ms"].(float64); second <= 1500 || second > 3000 {
			t.Fatalf("second lockout retry_after_ms %v, want (1500, 3000]", second)
		}

		time.Sleep(3100 * time.Millisecond)
		if r := passwordLogin(t, srv, "alice", "right-password"); r.Status != http.StatusOK {
			t.Fatalf("login after the lockout: %d %s", r.Status, r.Raw)
		}
		// The success forgave: two failures do not lock.
		for i := 0; i < 2; i++ {
			passwordLogin(t, srv, "alice", "wrong").wantErr(t, "wrong password after success", http.StatusForbidden, "M_FORBIDDEN")
		}
		if r := passwordLogin(t, srv, "alice", "right-password"); r.Status != http.StatusOK {
			t.Fatalf("login after two failures: %d %s", r.Status, r.Raw)
		}
	})
}

// TestLoginRateLimits: rate_limits.login_per_second and login_burst pace
// password guessing per account and per client address (the red team's
// 280 wrong logins on one account got 280×403 and no 429).
func TestLoginRateLimits(t *testing.T) {
	srv := Start(t, storage.SQLite, Options{Configure: func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.PerSecond, c.RateLimits.Burst = 1000, 1000 // the general limiter stays out of the way
		c.RateLimits.LoginPerSecond, c.RateLimits.LoginBurst = 0.5, 5
		c.Auth.LockoutAfterFailures = 0 // rate limits alone
	}})
	Register(t, srv.URL, "carol", "carol-password", false)
	count := func(user string, n int) (forbidden, limited int) {
		for i := 0; i < n; i++ {
			switch r := passwordLogin(t, srv, user, "wrong"); r.Status {
			case http.StatusForbidden:
				forbidden++
			case http.StatusTooManyRequests:
				if r.errcode() != "M_LIMIT_EXCEEDED" || r.Body["retry_after_ms"] == nil {
					t.Fatalf("429 without M_LIMIT_EXCEEDED/retry_after_ms: %s", r.Raw)
				}
				limited++
			default:
				t.Fatalf("login: %d %s", r.Status, r.Raw)
			}
		}
		return
	}
	// One address, one account: the burst, then 429s.
	forbidden, limited := count("carol", 40)
	if forbidden > 7 || limited < 33 {
		t.Fatalf("40 wrong logins on one account: %d×403, %d×429; want at most the burst (5, +1 for refill) answered", forbidden, limited)
	}
	// The address is spent as well: guesses at other names are refused too.
	if f, l := count("someone-else", 5); f != 0 || l != 5 {
		t.Fatalf("guesses at another name from the same address: %d×403, %d×429, want all 429", f, l)
	}
	// The account is spent on its own: from a fresh address carol is still
	// limited, while another account is not.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	login := func(user string) int {
		body := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + user + `"},"password":"wrong"}`
		resp, err := other.Post(srv.URL+"/_matrix/client/v3/login", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := login("carol"); code != http.StatusTooManyRequests {
		t.Fatalf("carol from a fresh address: %d, want 429 (the account's own bucket)", code)
	}
	if code := login("dave"); code != http.StatusForbidden {
		t.Fatalf("another name from a fresh address: %d, want 403", code)
	}
}
