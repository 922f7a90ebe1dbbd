package clientapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/storage/storagetest"
)

// ---------------------------------------------------------------------------
// Pure helpers.

func TestAccountsTokensAndIDs(t *testing.T) {
	tok, hash := newToken(accessTokenPrefix)
	if !strings.HasPrefix(tok, accessTokenPrefix) || len(tok) != len(accessTokenPrefix)+43 || hash != hashToken(tok) || len(hash) != 64 {
		t.Fatalf("token %q hash %q", tok, hash)
	}
	tok2, _ := newToken(accessTokenPrefix)
	if tok == tok2 {
		t.Fatal("tokens repeat")
	}
	for range 100 {
		id := newDeviceID()
		if len(id) != 10 || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			t.Fatalf("device id %q", id)
		}
	}
}

func TestAccountsUserIDs(t *testing.T) {
	a := newAccounts(Options{ServerName: "example.org"}, nil, nil)
	cases := map[string]string{"alice": "@alice:example.org", "ALICE": "@alice:example.org", "@Alice:example.org": "@alice:example.org", "@alice:EXAMPLE.org": "@alice:example.org"}
	for in, want := range cases {
		if got, ok := a.resolveLocalUser(in); !ok || got != want {
			t.Errorf("resolve %q = %q %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "@alice:other.org", "@alice", "@:example.org"} {
		if _, ok := a.resolveLocalUser(bad); ok {
			t.Errorf("resolve %q should fail", bad)
		}
	}
	if _, ok := a.checkNewLocalpart(strings.Repeat("a", 250)); ok {
		t.Error("overlong user ID accepted")
	}
}

func TestAccountsTokenCache(t *testing.T) {
	c := tokenCache{entries: map[string]cachedToken{}, gen: map[string]uint64{}}
	now := time.Now()
	ep := c.currentEpoch()
	c.put("h", cachedToken{dev: httpapi.Device{UserID: "@a:x"}, cachedAt: now}, ep)
	if _, ok := c.get("h", now); !ok {
		t.Fatal("miss after put")
	}
	if _, ok := c.get("h", now.Add(tokenCacheTTL)); ok {
		t.Fatal("hit after TTL")
	}
	c.invalidateUser("@a:x")
	if _, ok := c.get("h", now); ok {
		t.Fatal("hit after invalidation")
	}
	// A row read before an invalidation is not cached.
	ep = c.currentEpoch()
	c.invalidateUser("@b:x")
	c.put("h2", cachedToken{dev: httpapi.Device{UserID: "@a:x"}, cachedAt: now}, ep)
	if _, ok := c.get("h2", now); ok {
		t.Fatal("stale row cached")
	}
}

// ---------------------------------------------------------------------------
// Handlers over a real store.

type fakeRS struct {
	roomserver.API
	mu   sync.Mutex
	sent []roomserver.SendRequest
}

func (f *fakeRS) SendEvent(ctx context.Context, req roomserver.SendRequest) (*storage.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, req)
	return &storage.Event{}, nil
}

type testServer struct {
	t  *testing.T
	a  *API
	h  http.Handler
	db *storage.DB
	rs *fakeRS
}

func newTestServer(t *testing.T, db *storage.DB, mod func(*Options)) *testServer {
	opts := Options{ServerName: "test.local", BaseURL: "https://test.local", RegistrationMode: "open", SharedSecret: "s3cret", MaxRequestBytes: 1 << 20}
	if mod != nil {
		mod(&opts)
	}
	rs := &fakeRS{}
	a, err := New(opts, db, rs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// No role system here: every decidable requirement is granted.
	a.SetAuthorizer(func(r *http.Request, _ *httpapi.Device, need perm.Requirement) (httpapi.Response, bool) {
		if _, err := need.For(r); err != nil {
			return httpapi.Forbidden("%v", err), false
		}
		return httpapi.Response{}, true
	})
	return &testServer{t: t, a: a, h: a.Handler(), db: db, rs: rs}
}

func (s *testServer) do(method, path, token string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd *bytes.Reader
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "192.0.2.1:1234"
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	s.h.ServeHTTP(w, req)
	out := map[string]any{}
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			s.t.Fatalf("%s %s: non-JSON body %q", method, path, w.Body.String())
		}
	}
	return w.Code, out
}

func (s *testServer) expect(code int, errcode string, gotCode int, body map[string]any) {
	s.t.Helper()
	if gotCode != code || (errcode != "" && body["errcode"] != errcode) {
		s.t.Fatalf("want %d %s, got %d %v", code, errcode, gotCode, body)
	}
}

// register runs the open-mode dummy flow and returns the response.
func (s *testServer) register(username, password string, extra map[string]any) map[string]any {
	s.t.Helper()
	req := map[string]any{"username": username, "password": password}
	for k, v := range extra {
		req[k] = v
	}
	code, body := s.do("POST", "/_matrix/client/v3/register", "", req)
	s.expect(401, "", code, body)
	req["auth"] = map[string]any{"type": "m.login.dummy", "session": body["session"]}
	code, body = s.do("POST", "/_matrix/client/v3/register", "", req)
	s.expect(200, "", code, body)
	return body
}

func (s *testServer) login(user, password string, extra map[string]any) (int, map[string]any) {
	req := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password}
	for k, v := range extra {
		req[k] = v
	}
	return s.do("POST", "/_matrix/client/v3/login", "", req)
}

func TestAccountsRegisterAndLogin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestServer(t, db, nil)

		// Flows first.
		code, body := s.do("POST", "/_matrix/client/v3/register", "", map[string]any{})
		s.expect(401, "", code, body)
		if body["session"] == "" || body["completed"] == nil || body["params"] == nil {
			t.Fatalf("challenge %v", body)
		}
		flows := body["flows"].([]any)
		if len(flows) != 1 || flows[0].(map[string]any)["stages"].([]any)[0] != "m.login.dummy" {
			t.Fatalf("flows %v", flows)
		}

		// Bad input is refused before auth.
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "bad name"})
		s.expect(400, "M_INVALID_USERNAME", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/register", "", `{"username": 5}`)
		s.expect(400, "M_BAD_JSON", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/register", "", `{nope`)
		s.expect(400, "M_NOT_JSON", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/register?kind=guest", "", map[string]any{})
		s.expect(403, "M_GUEST_ACCESS_FORBIDDEN", code, body)

		reg := s.register("Alice", "pw1", map[string]any{"initial_device_display_name": "phone"})
		if reg["user_id"] != "@alice:test.local" || reg["access_token"] == "" || len(reg["device_id"].(string)) != 10 || reg["home_server"] != "test.local" {
			t.Fatalf("register %v", reg)
		}
		tok := reg["access_token"].(string)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", tok, nil)
		if code != 200 || body["user_id"] != "@alice:test.local" || body["device_id"] != reg["device_id"] || body["is_guest"] != false {
			t.Fatalf("whoami %d %v", code, body)
		}
		dev, err := storage.GetDevice(context.Background(), db, "@alice:test.local", reg["device_id"].(string))
		if err != nil || dev.DisplayName != "phone" {
			t.Fatalf("device %+v %v", dev, err)
		}
		acc, _ := storage.GetAccount(context.Background(), db, "@alice:test.local")
		if acc.DisplayName != "alice" || !strings.HasPrefix(acc.PasswordHash, "$argon2id$") {
			t.Fatalf("account %+v", acc)
		}

		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "x"})
		s.expect(400, "M_USER_IN_USE", code, body)
		code, body = s.do("GET", "/_matrix/client/v3/register/available?username=alice", "", nil)
		s.expect(400, "M_USER_IN_USE", code, body)
		code, body = s.do("GET", "/_matrix/client/r0/register/available?username=bob", "", nil)
		if code != 200 || body["available"] != true {
			t.Fatalf("available %d %v", code, body)
		}
		code, body = s.do("GET", "/_matrix/client/v3/register/available?username=b%20b", "", nil)
		s.expect(400, "M_INVALID_USERNAME", code, body)

		// Username generated; password given only in the first round.
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"password": "gen"})
		s.expect(401, "", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": body["session"]}, "inhibit_login": true})
		s.expect(200, "", code, body)
		if body["access_token"] != nil || !strings.HasPrefix(body["user_id"].(string), "@") {
			t.Fatalf("inhibit_login %v", body)
		}
		gen := body["user_id"].(string)
		if code, _ := s.login(gen, "gen", nil); code != 200 {
			t.Fatalf("login as generated user: %d", code)
		}

		// Password required at completion.
		_, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nopw"})
		sess := body["session"]
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nopw", "auth": map[string]any{"type": "m.login.dummy", "session": sess}})
		s.expect(400, "M_MISSING_PARAM", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nopw", "password": "p", "auth": map[string]any{"session": sess}})
		s.expect(200, "", code, body)
		// The session is spent.
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nopw2", "password": "p", "auth": map[string]any{"type": "m.login.dummy", "session": sess}})
		s.expect(400, "M_UNKNOWN", code, body)

		// Login.
		code, body = s.do("GET", "/_matrix/client/r0/login", "", nil)
		if code != 200 || len(body["flows"].([]any)) != 2 {
			t.Fatalf("login flows %d %v", code, body)
		}
		for _, who := range []string{"alice", "ALICE", "@alice:test.local", "@Alice:test.local"} {
			code, body = s.login(who, "pw1", nil)
			if code != 200 || body["user_id"] != "@alice:test.local" || body["access_token"] == "" || body["expires_in_ms"] != nil {
				t.Fatalf("login %q: %d %v", who, code, body)
			}
			wk := body["well_known"].(map[string]any)["m.homeserver"].(map[string]any)
			if wk["base_url"] != "https://test.local" {
				t.Fatalf("well_known %v", body["well_known"])
			}
		}
		code, body = s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw1"})
		s.expect(200, "", code, body)
		code, body = s.login("alice", "wrong", nil)
		s.expect(403, "M_FORBIDDEN", code, body)
		msgWrong := body["error"]
		code, body = s.login("nobody", "wrong", nil)
		s.expect(403, "M_FORBIDDEN", code, body)
		if body["error"] != msgWrong {
			t.Fatalf("unknown user and wrong password must look alike: %v vs %v", body["error"], msgWrong)
		}
		code, body = s.login("@alice:elsewhere", "pw1", nil)
		s.expect(403, "M_FORBIDDEN", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.fancy"})
		s.expect(400, "M_UNKNOWN", code, body)

		// Reusing a device ID replaces its token.
		code, first := s.login("alice", "pw1", map[string]any{"device_id": "MYDEVICE"})
		s.expect(200, "", code, first)
		if first["device_id"] != "MYDEVICE" {
			t.Fatalf("device_id %v", first)
		}
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", first["access_token"].(string), nil)
		s.expect(200, "", code, body)
		code, second := s.login("alice", "pw1", map[string]any{"device_id": "MYDEVICE"})
		s.expect(200, "", code, second)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", first["access_token"].(string), nil)
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		if body["soft_logout"] != nil {
			t.Fatalf("revoked token must not be soft: %v", body)
		}
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", second["access_token"].(string), nil)
		s.expect(200, "", code, body)

		// Missing/unknown tokens.
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", "", nil)
		s.expect(401, "M_MISSING_TOKEN", code, body)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", "enc_at_nope", nil)
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)

		// Logout revokes at once (despite the cache) and deletes the device.
		code, body = s.do("POST", "/_matrix/client/v3/logout", second["access_token"].(string), nil)
		s.expect(200, "", code, body)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", second["access_token"].(string), nil)
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		if _, err := storage.GetDevice(context.Background(), db, "@alice:test.local", "MYDEVICE"); err != storage.ErrNotFound {
			t.Fatalf("device after logout: %v", err)
		}
		code, body = s.do("GET", "/_matrix/client/v3/account/3pid", tok, nil)
		if code != 200 || len(body["threepids"].([]any)) != 0 {
			t.Fatalf("3pid %d %v", code, body)
		}
		code, body = s.do("POST", "/_matrix/client/r0/logout/all", tok, nil)
		s.expect(200, "", code, body)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", tok, nil)
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		if ids, _ := storage.ListDeviceIDs(context.Background(), db, "@alice:test.local"); len(ids) != 0 {
			t.Fatalf("devices after logout/all: %v", ids)
		}

		// m.login.token.
		lt, _, err := s.a.accounts.createLoginToken(context.Background(), "@alice:test.local")
		if err != nil {
			t.Fatal(err)
		}
		code, body = s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": lt})
		if code != 200 || body["user_id"] != "@alice:test.local" {
			t.Fatalf("token login %d %v", code, body)
		}
		code, body = s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": lt})
		s.expect(403, "M_FORBIDDEN", code, body)
	})
}

func TestAccountsClosedAndTokenRegistration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		closed := newTestServer(t, db, func(o *Options) { o.RegistrationMode = "closed" })
		code, body := closed.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "x", "password": "y"})
		closed.expect(403, "M_FORBIDDEN", code, body)
		code, body = closed.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", "", nil)
		closed.expect(403, "M_FORBIDDEN", code, body)

		s := newTestServer(t, db, func(o *Options) { o.RegistrationMode = "token"; o.RegistrationTokens = []string{"static-tok"} })
		one := int64(1)
		storage.CreateRegistrationToken(context.Background(), db, &storage.RegistrationToken{Token: "once", UsesAllowed: &one})

		valid := func(tok string) any {
			_, body := s.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", nil)
			return body["valid"]
		}
		if valid("static-tok") != true || valid("once") != true || valid("nope") != false {
			t.Fatal("validity")
		}
		code, body = s.do("GET", "/_matrix/client/v1/register/m.login.registration_token/validity", "", nil)
		s.expect(400, "M_MISSING_PARAM", code, body)

		regWith := func(user, tok string) (int, map[string]any) {
			code, body := s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": user, "password": "pw"})
			if code != 401 || body["flows"].([]any)[0].(map[string]any)["stages"].([]any)[0] != "m.login.registration_token" {
				t.Fatalf("token flow %d %v", code, body)
			}
			return s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": user, "password": "pw",
				"auth": map[string]any{"type": "m.login.registration_token", "token": tok, "session": body["session"]}})
		}
		code, body = regWith("u1", "wrong")
		s.expect(401, "M_FORBIDDEN", code, body)
		if body["session"] == nil || body["flows"] == nil {
			t.Fatalf("failed stage must repeat the challenge: %v", body)
		}
		code, body = regWith("u1", "once")
		s.expect(200, "", code, body)
		rt, _ := storage.GetRegistrationToken(context.Background(), db, "once")
		if rt.Completed != 1 || rt.Pending != 0 {
			t.Fatalf("token counters %+v", rt)
		}
		if valid("once") != false {
			t.Fatal("used-up token still valid")
		}
		code, body = regWith("u2", "once")
		s.expect(401, "M_FORBIDDEN", code, body)
		code, body = regWith("u2", "static-tok")
		s.expect(200, "", code, body)
	})
}

func TestAccountsRefreshAndExpiry(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestServer(t, db, func(o *Options) { o.RefreshTokenAccess = time.Hour })
		s.register("bob", "pw", nil)
		code, body := s.login("bob", "pw", map[string]any{"refresh_token": true})
		if code != 200 || body["refresh_token"] == nil || body["expires_in_ms"] != float64(time.Hour.Milliseconds()) {
			t.Fatalf("login with refresh %d %v", code, body)
		}
		rt := body["refresh_token"].(string)
		code, body = s.do("POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": rt})
		if code != 200 || body["access_token"] == nil || body["refresh_token"] == nil || body["expires_in_ms"] == nil {
			t.Fatalf("refresh %d %v", code, body)
		}
		newAT, newRT := body["access_token"].(string), body["refresh_token"].(string)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", newAT, nil)
		s.expect(200, "", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": rt})
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": "enc_rt_nope"})
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/refresh", "", map[string]any{})
		s.expect(400, "M_MISSING_PARAM", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": newRT})
		s.expect(200, "", code, body)

		// Expired access tokens answer soft_logout.
		// The lifetime leaves room for a slow login (argon2 under load) before
		// the first use.
		exp := newTestServer(t, db, func(o *Options) { o.AccessTokenLifetime = 2 * time.Second })
		code, body = exp.login("bob", "pw", nil)
		if code != 200 || body["expires_in_ms"] != float64(2000) {
			t.Fatalf("login with lifetime %d %v", code, body)
		}
		at := body["access_token"].(string)
		code, body = exp.do("GET", "/_matrix/client/v3/account/whoami", at, nil)
		exp.expect(200, "", code, body)
		time.Sleep(2100 * time.Millisecond)
		code, body = exp.do("GET", "/_matrix/client/v3/account/whoami", at, nil)
		exp.expect(401, "M_UNKNOWN_TOKEN", code, body)
		if body["soft_logout"] != true {
			t.Fatalf("expired token: %v", body)
		}
	})
}

func TestAccountsPasswordChangeAndUIA(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestServer(t, db, nil)
		main := s.register("carol", "old", nil)["access_token"].(string)
		_, other := s.login("carol", "old", nil)
		otherTok := other["access_token"].(string)

		code, body := s.do("POST", "/_matrix/client/v3/account/password", main, map[string]any{})
		s.expect(400, "M_MISSING_PARAM", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/account/password", main, map[string]any{"new_password": "new"})
		s.expect(401, "", code, body)
		sess := body["session"]
		if body["flows"].([]any)[0].(map[string]any)["stages"].([]any)[0] != "m.login.password" {
			t.Fatalf("flows %v", body)
		}
		code, body = s.do("POST", "/_matrix/client/v3/account/password", main, map[string]any{"new_password": "new",
			"auth": map[string]any{"type": "m.login.password", "session": sess, "identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "bad"}})
		s.expect(401, "M_FORBIDDEN", code, body)
		if body["session"] != sess || body["flows"] == nil {
			t.Fatalf("failed stage body %v", body)
		}
		// Someone else's identity is refused outright (403, not a retry).
		code, body = s.do("POST", "/_matrix/client/v3/account/password", main, map[string]any{"new_password": "new",
			"auth": map[string]any{"type": "m.login.password", "session": sess, "identifier": map[string]any{"type": "m.id.user", "user": "dave"}, "password": "old"}})
		s.expect(403, "M_FORBIDDEN", code, body)
		// A session started for this request cannot authorise another.
		code, body = s.do("POST", "/_matrix/client/v3/account/deactivate", main, map[string]any{
			"auth": map[string]any{"type": "m.login.password", "session": sess, "user": "carol", "password": "old"}})
		s.expect(403, "M_FORBIDDEN", code, body)
		code, body = s.do("POST", "/_matrix/client/r0/account/password", main, map[string]any{"new_password": "new",
			"auth": map[string]any{"type": "m.login.password", "session": sess, "identifier": map[string]any{"type": "m.id.user", "user": "@carol:test.local"}, "password": "old"}})
		s.expect(200, "", code, body)

		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", main, nil)
		s.expect(200, "", code, body)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", otherTok, nil)
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		code, body = s.login("carol", "old", nil)
		s.expect(403, "M_FORBIDDEN", code, body)
		code, body = s.login("carol", "new", nil)
		s.expect(200, "", code, body)

		// Auth without a session is processed in a new one; logout_devices=false keeps devices.
		code, body = s.do("POST", "/_matrix/client/v3/account/password", main, map[string]any{"new_password": "newer", "logout_devices": false,
			"auth": map[string]any{"type": "m.login.password", "user": "carol", "password": "new"}})
		s.expect(200, "", code, body)
		ids, _ := storage.ListDeviceIDs(context.Background(), db, "@carol:test.local")
		if len(ids) != 2 {
			t.Fatalf("devices after logout_devices=false: %v", ids)
		}
	})
}

func TestAccountsDeactivate(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestServer(t, db, nil)
		tok := s.register("erin", "pw", nil)["access_token"].(string)
		ctx := context.Background()
		for i, room := range []string{"!a:test.local", "!b:test.local", "!c:test.local"} {
			m := []string{"join", "invite", "leave"}[i]
			storage.SetCurrentState(ctx, db, storage.CurrentStateRow{RoomID: room, Type: "m.room.member", StateKey: "@erin:test.local", EventID: "$e" + m, Membership: m})
		}
		code, body := s.do("POST", "/_matrix/client/v3/account/deactivate", tok, map[string]any{})
		s.expect(401, "", code, body)
		code, body = s.do("POST", "/_matrix/client/v3/account/deactivate", tok, map[string]any{
			"auth": map[string]any{"type": "m.login.password", "session": body["session"], "identifier": map[string]any{"type": "m.id.user", "user": "erin"}, "password": "pw"}})
		if code != 200 || body["id_server_unbind_result"] != "no-support" {
			t.Fatalf("deactivate %d %v", code, body)
		}
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", tok, nil)
		s.expect(401, "M_UNKNOWN_TOKEN", code, body)
		code, body = s.login("erin", "pw", nil)
		s.expect(403, "M_USER_DEACTIVATED", code, body)
		code, body = s.login("erin", "wrong", nil)
		s.expect(403, "M_FORBIDDEN", code, body)
		s.rs.mu.Lock()
		defer s.rs.mu.Unlock()
		if len(s.rs.sent) != 2 {
			t.Fatalf("leaves sent: %+v", s.rs.sent)
		}
		for _, req := range s.rs.sent {
			if req.Type != "m.room.member" || *req.StateKey != "@erin:test.local" || req.Sender != "@erin:test.local" || string(req.Content) != `{"membership":"leave"}` || req.RoomID == "!c:test.local" {
				t.Fatalf("leave %+v", req)
			}
		}
		code, body = s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "erin", "password": "x"})
		s.expect(400, "M_USER_IN_USE", code, body)
	})
}

func adminMAC(secret, nonce, user, pw string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m.Write([]byte(nonce + "\x00" + user + "\x00" + pw + "\x00" + role))
	return hex.EncodeToString(m.Sum(nil))
}

func TestAccountsSharedSecretRegistration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestServer(t, db, func(o *Options) { o.RegistrationMode = "closed" })
		nonce := func() string {
			code, body := s.do("GET", "/_synapse/admin/v1/register", "", nil)
			if code != 200 || body["nonce"] == "" {
				t.Fatalf("nonce %d %v", code, body)
			}
			return body["nonce"].(string)
		}
		n := nonce()
		code, body := s.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": n, "username": "root", "password": "pw", "admin": true, "mac": adminMAC("wrong", n, "root", "pw", true)})
		s.expect(403, "M_FORBIDDEN", code, body)
		if body["error"] != "HMAC incorrect" {
			t.Fatalf("error %v", body)
		}
		// The nonce was spent by the failed attempt.
		code, body = s.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": n, "username": "root", "password": "pw", "admin": true, "mac": adminMAC("s3cret", n, "root", "pw", true)})
		s.expect(400, "M_UNKNOWN", code, body)
		n = nonce()
		code, body = s.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": n, "username": "root", "password": "pw", "admin": true, "mac": adminMAC("s3cret", n, "root", "pw", true)})
		if code != 200 || body["user_id"] != "@root:test.local" || body["access_token"] == nil || body["device_id"] == nil || body["home_server"] != "test.local" {
			t.Fatalf("admin register %d %v", code, body)
		}
		rootTok := body["access_token"].(string)
		code, body = s.do("GET", "/_matrix/client/v3/account/whoami", rootTok, nil)
		s.expect(200, "", code, body)
		dev, _, _ := s.a.accounts.lookupAccessToken(context.Background(), rootTok)
		if !dev.IsAdmin {
			t.Fatal("admin flag lost")
		}
		// Not admin, and the mac covers the flag.
		n = nonce()
		code, body = s.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": n, "username": "user", "password": "pw", "admin": true, "mac": adminMAC("s3cret", n, "user", "pw", false)})
		s.expect(403, "M_FORBIDDEN", code, body)
		n = nonce()
		code, body = s.do("POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": n, "username": "root", "password": "pw", "mac": adminMAC("s3cret", n, "root", "pw", false)})
		s.expect(400, "M_USER_IN_USE", code, body)

		off := newTestServer(t, db, func(o *Options) { o.SharedSecret = "" })
		code, body = off.do("GET", "/_synapse/admin/v1/register", "", nil)
		off.expect(400, "", code, body)
	})
}

func TestAccountsCreateUser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		uid, err := CreateUser(ctx, db, "test.local", "Frank", "pw", true)
		if err != nil || uid != "@frank:test.local" {
			t.Fatalf("%q %v", uid, err)
		}
		if _, err := CreateUser(ctx, db, "test.local", "frank", "pw", false); err != ErrUserInUse {
			t.Fatalf("duplicate: %v", err)
		}
		if _, err := CreateUser(ctx, db, "test.local", "bad name", "pw", false); err != ErrInvalidUsername {
			t.Fatalf("invalid: %v", err)
		}
		s := newTestServer(t, db, nil)
		code, body := s.login("frank", "pw", nil)
		s.expect(200, "", code, body)
	})
}

func BenchmarkAccountsLookupAccessToken(b *testing.B) {
	db := storagetest.Open(b, storage.SQLite)
	a, err := New(Options{ServerName: "test.local", RegistrationMode: "open"}, db, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	uid, err := CreateUser(ctx, db, "test.local", "bench", "pw", false)
	if err != nil {
		b.Fatal(err)
	}
	var sess *issuedSession
	if err := db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		sess, err = a.accounts.issueSession(ctx, tx, uid, "", "", false, time.Now())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := a.accounts.lookupAccessToken(ctx, sess.AccessToken); !ok {
				b.Fatal("lookup failed")
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			a.accounts.invalidateUserTokens(uid)
			if _, _, ok := a.accounts.lookupAccessToken(ctx, sess.AccessToken); !ok {
				b.Fatal("lookup failed")
			}
		}
	})
}
