package test

// The requests real clients make, replayed against a real server. The
// table below is the floor the team recorded in CLIENTS.md (Cinny,
// matrix-js-sdk 43 with Rust crypto, mautrix-go) plus what Element Web
// (matrix-js-sdk startClient and SyncApi, the Rust crypto machine, the
// settings and room views) and Element X (matrix-rust-sdk; its sync is
// Simplified Sliding Sync, MSC4186, which the server lacks) call at
// start-up and in everyday use. Every call is made the
// way the client makes it — same method, path, query and a realistic body —
// and must answer with the status and shape the spec gives, within
// ccDeadline, with CORS headers; before each call a browser-style OPTIONS
// preflight must answer 200 and allow the method, Authorization and
// Content-Type. Probes of unstable features the server does not offer must
// answer 404 M_UNRECOGNIZED at once (clients then fall back).
//
// With ENCLAVE_CLIENTS_MD=path the test also writes the endpoint list it
// exercised as a Markdown table (method, path, who calls it, status seen).

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"enclave/config"
	"enclave/storage"
)

// ccDeadline bounds every request, preflights included: a client that
// waits longer shows a spinner, and a hung probe blocks start-up.
const ccDeadline = 2 * time.Second

// ccOrigin is the web client's origin the preflights come from.
const ccOrigin = "https://app.element.io"

// Who makes a call (the md table's "client" column).
const (
	ccFloor   = "CLIENTS.md"  // seen from Cinny, matrix-js-sdk 43 and mautrix-go
	ccElement = "Element Web" // matrix-js-sdk startClient/SyncApi, Rust crypto, Element's views
	ccX       = "Element X"   // matrix-rust-sdk
	ccAll     = "CLIENTS.md, Element Web, Element X"
	ccBoth    = "CLIENTS.md, Element Web"
)

// ccCall is one request a client makes.
type ccCall struct {
	who    string
	as     string // "" unauthenticated, else a user of ccEnv.users
	method string
	// path with {placeholders}: {userId} and {deviceId} are the caller's,
	// {txnId} is fresh per call, the rest come from ccEnv.vars (captured by
	// earlier calls). Query values are escaped, path segments too.
	path string
	tmpl string // the spec's path template, when it differs from path's
	// body is nil, a JSON value, []byte (sent with ctype), or a
	// func(*ccEnv) any computed when the call runs.
	body   any
	ctype  string
	binary bool // the answer is a file, not JSON
	want   int
	// errcode the error must carry (when want >= 400).
	errcode string
	// check asserts the response's shape and captures values for later calls.
	check func(e *ccEnv, r ccResp)
	note  string // for the md table
}

// ccResp is a response: status, headers, raw body and (when JSON) the object.
type ccResp struct {
	Status  int
	Header  http.Header
	Raw     []byte
	Body    map[string]any
	Elapsed time.Duration
}

// ccEnv is the state shared by the calls of one run.
type ccEnv struct {
	t     *testing.T
	url   string
	users map[string]RegisterResult
	pw    map[string]string
	vars  map[string]string
	txn   int
	// priv holds signing keys minted by bodies and reused by later calls.
	priv map[string]ed25519.PrivateKey
}

// ccSeen records what each call answered, per store, for the md table.
type ccSeen struct {
	mu   sync.Mutex
	rows map[string]map[string][]string // method+tmpl → store → statuses
}

func TestClientRequests(t *testing.T) {
	seen := &ccSeen{rows: map[string]map[string][]string{}}
	calls := ccCalls()
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			// TURN configured, so /voip/turnServer hands out credentials.
			c.TURN.URIs = []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"}
			c.TURN.SharedSecret = "turn-secret"
		}})
		e := &ccEnv{url: srv.URL, users: map[string]RegisterResult{}, pw: map[string]string{},
			vars: map[string]string{"serverName": srv.Config.ServerName}, priv: map[string]ed25519.PrivateKey{}}
		for _, u := range []string{"alice", "bob", "carol"} {
			e.pw[u] = u + "-secret-pw"
			e.users[u] = Register(t, srv.URL, u, e.pw[u], false)
			e.vars[u] = e.users[u].UserID
			e.vars[u+"Device"] = e.users[u].DeviceID
		}
		for i, c := range calls {
			name := fmt.Sprintf("%03d %s %s", i, c.method, c.template())
			t.Run(name, func(t *testing.T) {
				e.t = t
				r := e.run(c)
				seen.add(c, string(d), r)
			})
		}
	})
	if p := os.Getenv("ENCLAVE_CLIENTS_MD"); p != "" && !t.Failed() {
		if err := os.WriteFile(p, []byte(seen.markdown(calls)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// template is the path shown for a call: the spec's template, no query.
func (c ccCall) template() string {
	if c.tmpl != "" {
		return c.tmpl
	}
	p, _, _ := strings.Cut(c.path, "?")
	return p
}

var ccPlaceholder = regexp.MustCompile(`\{([A-Za-z]+)\}`)

// resolve fills a call's placeholders: escaped as a path segment before
// the '?', as a query value after it.
func (e *ccEnv) resolve(c ccCall) string {
	e.txn++
	vars := map[string]string{"txnId": fmt.Sprintf("enclave-txn-%d", e.txn)}
	if u, ok := e.users[c.as]; ok {
		vars["userId"], vars["deviceId"] = u.UserID, u.DeviceID
	}
	fill := func(s string, esc func(string) string) string {
		return ccPlaceholder.ReplaceAllStringFunc(s, func(m string) string {
			k := m[1 : len(m)-1]
			v, ok := vars[k]
			if !ok {
				v, ok = e.vars[k]
			}
			if !ok {
				e.t.Fatalf("no value for %s: an earlier call that captures it failed", m)
			}
			return esc(v)
		})
	}
	p, q, hasQ := strings.Cut(c.path, "?")
	out := fill(p, url.PathEscape)
	if hasQ {
		var params []string
		for _, kv := range strings.Split(q, "&") {
			k, v, _ := strings.Cut(kv, "=")
			params = append(params, k+"="+url.QueryEscape(fill(v, func(s string) string { return s })))
		}
		out += "?" + strings.Join(params, "&")
	}
	return out
}

// run makes the preflight and the call, and asserts what every response
// must have; then the call's own check.
func (e *ccEnv) run(c ccCall) ccResp {
	t := e.t
	path := e.resolve(c)
	e.preflight(c.method, path)

	var body io.Reader
	ctype := ""
	b := c.body
	if f, ok := b.(func(*ccEnv) any); ok {
		b = f(e)
	}
	switch v := b.(type) {
	case nil:
	case []byte:
		body, ctype = bytes.NewReader(v), c.ctype
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctxT(t), c.method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", ccOrigin)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.as != "" {
		req.Header.Set("Authorization", "Bearer "+e.token(c.as))
	}
	r := e.do(req)
	if r.Elapsed > ccDeadline {
		t.Errorf("%s %s took %v (limit %v)", c.method, path, r.Elapsed, ccDeadline)
	}
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" && got != ccOrigin {
		t.Errorf("%s %s: Access-Control-Allow-Origin %q: a browser cannot read the answer", c.method, path, got)
	}
	if r.Status != c.want {
		t.Fatalf("%s %s: want %d, got %d %s", c.method, path, c.want, r.Status, ccShort(r.Raw))
	}
	_, uia := r.Body["flows"]
	if r.Status >= 400 && !(r.Status == 401 && uia) { // a UIA challenge carries flows, not an error
		if ec, _ := r.Body["errcode"].(string); ec != c.errcode {
			t.Fatalf("%s %s: want errcode %s, got %s", c.method, path, c.errcode, ccShort(r.Raw))
		}
		if _, ok := r.Body["error"].(string); !ok {
			t.Errorf("%s %s: error without an \"error\" string: %s", c.method, path, ccShort(r.Raw))
		}
	}
	if !c.binary && (!strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || !json.Valid(r.Raw)) {
		t.Fatalf("%s %s: answer is not JSON (%s): %s", c.method, path, r.Header.Get("Content-Type"), ccShort(r.Raw))
	}
	if c.check != nil {
		c.check(e, r)
	}
	return r
}

// preflight sends the OPTIONS request a browser sends before method on path.
func (e *ccEnv) preflight(method, path string) {
	t := e.t
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodOptions, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", ccOrigin)
	req.Header.Set("Access-Control-Request-Method", method)
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	r := e.do(req)
	h := r.Header
	switch {
	case r.Status != http.StatusOK:
		t.Errorf("preflight %s %s: status %d %s", method, path, r.Status, ccShort(r.Raw))
	case h.Get("Access-Control-Allow-Origin") != "*" && h.Get("Access-Control-Allow-Origin") != ccOrigin:
		t.Errorf("preflight %s %s: Access-Control-Allow-Origin %q", method, path, h.Get("Access-Control-Allow-Origin"))
	case !ccListHas(h.Get("Access-Control-Allow-Methods"), method, true):
		t.Errorf("preflight %s %s: Access-Control-Allow-Methods %q lacks the method", method, path, h.Get("Access-Control-Allow-Methods"))
	case !ccListHas(h.Get("Access-Control-Allow-Headers"), "Authorization", false) || !ccListHas(h.Get("Access-Control-Allow-Headers"), "Content-Type", true):
		t.Errorf("preflight %s %s: Access-Control-Allow-Headers %q lacks Authorization or Content-Type", method, path, h.Get("Access-Control-Allow-Headers"))
	}
	if r.Elapsed > ccDeadline {
		t.Errorf("preflight %s %s took %v", method, path, r.Elapsed)
	}
}

// follow continues a client's sync loop from r, as user: while done(r)
// is false it long-polls /sync?since=<next_batch><extra> for at most
// ccDeadline in all, and returns the last answer. A write is acknowledged
// before /sync can show it — stream positions commit out of order and a row
// becomes visible once every lower position has committed (the push
// notifier writes its rows just after the event's own transaction) — so a
// client sees it on its next poll, which wakes the moment it is visible.
func (e *ccEnv) follow(user, extra string, r ccResp, done func(ccResp) bool) ccResp {
	e.t.Helper()
	start := time.Now()
	for !done(r) {
		if time.Since(start) > ccDeadline {
			e.t.Errorf("sync loop: not done after %v", time.Since(start))
			return r
		}
		tok, _ := r.Body["next_batch"].(string)
		req, err := http.NewRequestWithContext(ctxT(e.t), "GET", e.url+"/_matrix/client/v3/sync?timeout=500&since="+url.QueryEscape(tok)+extra, nil)
		if err != nil {
			e.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.token(user))
		if r = e.do(req); r.Status != 200 {
			e.t.Fatalf("sync loop: %d %s", r.Status, ccShort(r.Raw))
		}
	}
	return r
}

// ccListHas reports whether a comma-separated header value allows v; a
// "*" counts when wildcard is true (Fetch never lets "*" stand for
// Authorization: it must be named).
func ccListHas(list, v string, wildcard bool) bool {
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if (wildcard && s == "*") || strings.EqualFold(s, v) {
			return true
		}
	}
	return false
}

func (e *ccEnv) do(req *http.Request) ccResp {
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	r := ccResp{Status: resp.StatusCode, Header: resp.Header, Raw: b, Elapsed: time.Since(start)}
	_ = json.Unmarshal(b, &r.Body)
	return r
}

// token is the access token of user (or of a captured session: vars[user+"Token"]).
func (e *ccEnv) token(user string) string {
	if tok, ok := e.vars[user+"Token"]; ok {
		return tok
	}
	u, ok := e.users[user]
	if !ok {
		e.t.Fatalf("no session %q", user)
	}
	return u.AccessToken
}

func ccShort(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "…"
	}
	return string(b)
}

// --- shape assertions ------------------------------------------------------

// dig walks r's JSON object along keys (array elements by index "0", "1"…).
func (r ccResp) dig(keys ...string) (any, bool) {
	var cur any = r.Body
	for _, k := range keys {
		switch v := cur.(type) {
		case map[string]any:
			var ok bool
			if cur, ok = v[k]; !ok {
				return nil, false
			}
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func (e *ccEnv) str(r ccResp, keys ...string) string {
	e.t.Helper()
	v, _ := r.dig(keys...)
	s, ok := v.(string)
	if !ok || s == "" {
		e.t.Errorf("%s: want a non-empty string, got %v in %s", strings.Join(keys, "."), v, ccShort(r.Raw))
	}
	return s
}

func (e *ccEnv) obj(r ccResp, keys ...string) map[string]any {
	e.t.Helper()
	v, _ := r.dig(keys...)
	m, ok := v.(map[string]any)
	if !ok {
		e.t.Errorf("%s: want an object, got %v in %s", strings.Join(keys, "."), v, ccShort(r.Raw))
	}
	return m
}

func (e *ccEnv) list(r ccResp, keys ...string) []any {
	e.t.Helper()
	v, _ := r.dig(keys...)
	l, ok := v.([]any)
	if !ok {
		e.t.Errorf("%s: want an array, got %v in %s", strings.Join(keys, "."), v, ccShort(r.Raw))
	}
	return l
}

func (e *ccEnv) num(r ccResp, keys ...string) float64 {
	e.t.Helper()
	v, _ := r.dig(keys...)
	n, ok := v.(float64)
	if !ok {
		e.t.Errorf("%s: want a number, got %v in %s", strings.Join(keys, "."), v, ccShort(r.Raw))
	}
	return n
}

func (e *ccEnv) boolean(r ccResp, keys ...string) bool {
	e.t.Helper()
	v, _ := r.dig(keys...)
	b, ok := v.(bool)
	if !ok {
		e.t.Errorf("%s: want a boolean, got %v in %s", strings.Join(keys, "."), v, ccShort(r.Raw))
	}
	return b
}

// ccFind returns the object of list whose key is val.
func ccFind(list []any, key, val string) map[string]any {
	for _, x := range list {
		if m, ok := x.(map[string]any); ok && m[key] == val {
			return m
		}
	}
	return nil
}

// capture stores a string of r for later calls' placeholders.
func (e *ccEnv) capture(name string, r ccResp, keys ...string) {
	e.t.Helper()
	if s := e.str(r, keys...); s != "" {
		e.vars[name] = s
	}
}

// ccEmptyObject checks the {} the spec gives many writes.
func ccEmptyObject(e *ccEnv, r ccResp) {
	if len(r.Body) != 0 {
		e.t.Errorf("want {}, got %s", ccShort(r.Raw))
	}
}

// ccUnrecognized is the answer to an unstable probe the server lacks.
func ccUnrecognized(who, method, path, note string) ccCall {
	return ccCall{who: who, as: "alice", method: method, path: path, want: 404, errcode: "M_UNRECOGNIZED", note: note}
}

// --- request bodies --------------------------------------------------------

// keyPair mints an ed25519 key, remembered under name; it returns the
// unpadded base64 public key.
func (e *ccEnv) keyPair(name string) string {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	e.priv[name] = priv
	e.vars[name+"Pub"] = e2eeB64.EncodeToString(pub)
	return e.vars[name+"Pub"]
}

func ccRandKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return e2eeB64.EncodeToString(b)
}

// keysUpload is what the Rust crypto machine sends first: signed device
// keys, a signed one-time key and a fallback key.
func ccKeysUpload(e *ccEnv) any {
	u := e.users["alice"]
	dev := e.vars["aliceElementDevice"]
	pub := e.keyPair("aliceDeviceKey")
	priv := e.priv["aliceDeviceKey"]
	keyID := "ed25519:" + dev
	deviceKeys := e2eeSign(map[string]any{
		"user_id": u.UserID, "device_id": dev,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + dev: ccRandKey(), keyID: pub},
	}, u.UserID, keyID, priv)
	return map[string]any{
		"device_keys":   deviceKeys,
		"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": e2eeSign(map[string]any{"key": ccRandKey()}, u.UserID, keyID, priv)},
		"fallback_keys": map[string]any{"signed_curve25519:AAAAAg": e2eeSign(map[string]any{"key": ccRandKey(), "fallback": true}, u.UserID, keyID, priv)},
	}
}

// ccDehydratedDevice is the body matrix-rust-sdk's dehydrated device
// upload sends: opaque device_data and the device's own signed keys.
func ccDehydratedDevice(e *ccEnv) any {
	u := e.users["alice"]
	const dev = "DEHYDRATEDCC"
	pub := e.keyPair("aliceDehydratedKey")
	priv := e.priv["aliceDehydratedKey"]
	keyID := "ed25519:" + dev
	return map[string]any{
		"device_id":                   dev,
		"initial_device_display_name": "Dehydrated device",
		"device_data":                 map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": ccRandKey()},
		"device_keys": e2eeSign(map[string]any{
			"user_id": u.UserID, "device_id": dev, "dehydrated": true,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"curve25519:" + dev: ccRandKey(), keyID: pub},
		}, u.UserID, keyID, priv),
		"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": e2eeSign(map[string]any{"key": ccRandKey()}, u.UserID, keyID, priv)},
		"fallback_keys": map[string]any{"signed_curve25519:AAAAAg": e2eeSign(map[string]any{"key": ccRandKey(), "fallback": true}, u.UserID, keyID, priv)},
	}
}

// ccCrossSigning is the cross-signing bootstrap: a master key and the
// self- and user-signing keys it signs.
func ccCrossSigning(e *ccEnv) map[string]any {
	uid := e.users["alice"].UserID
	key := func(usage, name string) map[string]any {
		pub := e.keyPair(name)
		return map[string]any{"user_id": uid, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
	}
	master := key("master", "master")
	mk := "ed25519:" + e.vars["masterPub"]
	return map[string]any{
		"master_key":       master,
		"self_signing_key": e2eeSign(key("self_signing", "selfSigning"), uid, mk, e.priv["master"]),
		"user_signing_key": e2eeSign(key("user_signing", "userSigning"), uid, mk, e.priv["master"]),
	}
}

// ccPNG is a small image to upload as an avatar.
func ccPNG() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 128, 255})
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

// ccAdminRegister is the shared-secret registration body for dave.
func ccAdminRegister(e *ccEnv) any {
	mac := hmac.New(sha1.New, []byte(SharedSecret))
	mac.Write([]byte(e.vars["nonce"] + "\x00dave\x00dave-secret-pw\x00notadmin"))
	return map[string]any{"nonce": e.vars["nonce"], "username": "dave", "password": "dave-secret-pw", "admin": false, "mac": hex.EncodeToString(mac.Sum(nil))}
}

// passwordAuth is the UIA auth dict for m.login.password in session.
func (e *ccEnv) passwordAuth(user string) map[string]any {
	return map[string]any{"type": "m.login.password", "session": e.vars["uiaSession"],
		"identifier": map[string]any{"type": "m.id.user", "user": e.users[user].UserID}, "password": e.pw[user]}
}

// ccUIAChallenge checks a 401 UIA answer offers m.login.password and keeps its session.
func ccUIAChallenge(e *ccEnv, r ccResp) {
	e.capture("uiaSession", r, "session")
	for _, f := range e.list(r, "flows") {
		if st, ok := f.(map[string]any)["stages"].([]any); ok && slices.Contains(st, any("m.login.password")) {
			return
		}
	}
	e.t.Errorf("UIA flows lack m.login.password: %s", ccShort(r.Raw))
}

// ccHasEvent asserts list holds the event with this ID.
func ccHasEvent(e *ccEnv, what string, list []any, eventID string) map[string]any {
	e.t.Helper()
	ev := ccFind(list, "event_id", eventID)
	if ev == nil {
		e.t.Errorf("%s: event %s missing from %d events", what, eventID, len(list))
	}
	return ev
}

// The filter Element's SyncApi creates: lazy-loaded members, 20 events,
// per-thread unread counts.
var ccElementFilter = map[string]any{"room": map[string]any{
	"state":    map[string]any{"lazy_load_members": true},
	"timeline": map[string]any{"limit": 20, "unread_thread_notifications": true},
}}

// --- the table -------------------------------------------------------------

func ccCalls() []ccCall {
	return []ccCall{
		// Discovery and login (before a session exists).
		{who: ccAll, method: "GET", path: "/.well-known/matrix/client", want: 200, note: "m.homeserver.base_url",
			check: func(e *ccEnv, r ccResp) {
				if u, err := url.Parse(e.str(r, "m.homeserver", "base_url")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					e.t.Errorf("base_url is not an http(s) URL: %s", r.Raw)
				}
			}},
		{who: ccAll, method: "GET", path: "/_matrix/client/versions", want: 200, note: "v1.1 … v1.16",
			check: func(e *ccEnv, r ccResp) {
				v := e.list(r, "versions")
				for _, want := range []string{"v1.1", "v1.11", "v1.16"} {
					if !slices.Contains(v, any(want)) {
						e.t.Errorf("versions lack %s: %v", want, v)
					}
				}
				uf := e.obj(r, "unstable_features")
				// Element X logs in only where simplified sliding sync is
				// advertised.
				if uf["org.matrix.simplified_msc3575"] != true {
					e.t.Errorf("does not advertise org.matrix.simplified_msc3575")
				}
			}},
		ccUnrecognized(ccElement+", "+ccX, "GET", "/_matrix/client/v1/auth_metadata", "OIDC discovery (MSC2965): not offered, clients fall back to /login"),
		ccUnrecognized(ccElement+", "+ccX, "GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", "unstable OIDC discovery: not offered"),
		ccUnrecognized(ccElement, "GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", "older OIDC discovery: not offered"),
		{who: ccAll, method: "GET", path: "/_matrix/client/v3/login", want: 200, note: "flows include m.login.password",
			check: func(e *ccEnv, r ccResp) {
				if ccFind(e.list(r, "flows"), "type", "m.login.password") == nil {
					e.t.Errorf("no m.login.password flow: %s", r.Raw)
				}
			}},
		{who: ccElement, method: "POST", path: "/_matrix/client/v3/register?kind=guest", want: 403, errcode: "M_GUEST_ACCESS_FORBIDDEN",
			body: map[string]any{}, note: "guest registration refused (Element then shows the login page)"},
		{who: ccBoth, method: "POST", path: "/_matrix/client/v3/register", want: 401, body: map[string]any{},
			note: "first call: 401 with the UIA flows; then with m.login.dummy: 200",
			check: func(e *ccEnv, r ccResp) {
				e.capture("regSession", r, "session")
				if len(e.list(r, "flows")) == 0 {
					e.t.Errorf("no registration flows: %s", r.Raw)
				}
			}},
		{who: ccElement, method: "GET", path: "/_matrix/client/v3/register/available?username=erin", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if !e.boolean(r, "available") {
					e.t.Errorf("a free username is not available: %s", r.Raw)
				}
			}},
		{who: ccBoth, method: "POST", path: "/_matrix/client/v3/register", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"username": "erin", "password": "erin-secret-pw", "initial_device_display_name": "app.element.io: Firefox on Linux",
					"auth": map[string]any{"type": "m.login.dummy", "session": e.vars["regSession"]}}
			},
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "user_id") != "@erin:"+e.vars["serverName"] {
					e.t.Errorf("registered as %s", r.Raw)
				}
				e.str(r, "access_token")
				e.str(r, "device_id")
			}},
		{who: ccFloor, method: "GET", path: "/_synapse/admin/v1/register", want: 200, note: "shared-secret registration (tools, mxbench)",
			check: func(e *ccEnv, r ccResp) { e.capture("nonce", r, "nonce") }},
		{who: ccFloor, method: "POST", path: "/_synapse/admin/v1/register", want: 200, body: ccAdminRegister,
			check: func(e *ccEnv, r ccResp) { e.str(r, "access_token") }},
		{who: ccAll, method: "POST", path: "/_matrix/client/v3/login", want: 200, note: "m.login.password with an m.id.user identifier",
			body: func(e *ccEnv) any {
				return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
					"password": e.pw["alice"], "initial_device_display_name": "app.element.io: Chrome on Linux"}
			},
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "user_id") != e.users["alice"].UserID {
					e.t.Errorf("logged in as %s", r.Raw)
				}
				// From here on alice is this Element session.
				e.vars["aliceToken"] = e.str(r, "access_token")
				e.vars["aliceElementDevice"] = e.str(r, "device_id")
				u := e.users["alice"]
				e.vars["aliceFirstDevice"] = u.DeviceID
				u.AccessToken, u.DeviceID = e.vars["aliceToken"], e.vars["aliceElementDevice"]
				e.users["alice"] = u
			}},

		// Element start-up (MatrixClient.startClient, SyncApi.sync, crypto init).
		{who: ccElement + ", " + ccX, as: "alice", method: "GET", path: "/_matrix/client/v3/account/whoami", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "user_id") != e.users["alice"].UserID || e.str(r, "device_id") != e.vars["aliceElementDevice"] {
					e.t.Errorf("whoami: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "GET", path: "/_matrix/client/v3/capabilities", want: 200, note: "m.room_versions.default is available",
			check: func(e *ccEnv, r ccResp) {
				def := e.str(r, "capabilities", "m.room_versions", "default")
				if e.obj(r, "capabilities", "m.room_versions", "available")[def] == nil {
					e.t.Errorf("default room version %q is not available: %s", def, r.Raw)
				}
				e.boolean(r, "capabilities", "m.change_password", "enabled")
			}},
		{who: ccBoth, as: "alice", method: "GET", path: "/_matrix/client/v3/pushrules/", want: 200, note: "global.override has .m.rule.master",
			check: func(e *ccEnv, r ccResp) {
				master := ccFind(e.list(r, "global", "override"), "rule_id", ".m.rule.master")
				if master == nil || master["default"] != true || master["enabled"] != false {
					e.t.Errorf(".m.rule.master missing or wrong: %v", master)
				}
				if ccFind(e.list(r, "global", "underride"), "rule_id", ".m.rule.message") == nil {
					e.t.Errorf("no .m.rule.message underride")
				}
				for _, kind := range []string{"content", "room", "sender"} {
					e.list(r, "global", kind)
				}
			}},
		{who: ccBoth, as: "alice", method: "POST", path: "/_matrix/client/v3/user/{userId}/filter", want: 200, body: ccElementFilter,
			check: func(e *ccEnv, r ccResp) { e.capture("filterId", r, "filter_id") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/user/{userId}/filter/{filterId}", want: 200,
			note: "getOrCreateFilter checks a stored filter",
			check: func(e *ccEnv, r ccResp) {
				if e.num(r, "room", "timeline", "limit") != 20 || e.boolean(r, "room", "state", "lazy_load_members") != true {
					e.t.Errorf("filter not as stored: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "GET", path: "/_matrix/client/v3/sync?filter={filterId}&timeout=0&_cacheBuster=1700000000000", want: 200,
			note: "initial sync with the stored filter",
			check: func(e *ccEnv, r ccResp) {
				e.capture("since", r, "next_batch")
				e.obj(r, "account_data")
				e.obj(r, "rooms")
			}},
		{who: ccBoth, as: "alice", method: "GET", path: "/_matrix/client/v3/sync?filter={filterId}&since={since}&timeout=1000&set_presence=online", want: 200,
			note:  "incremental long poll honours timeout and set_presence",
			check: func(e *ccEnv, r ccResp) { e.capture("since", r, "next_batch") }},
		{who: ccFloor, as: "alice", method: "GET", path: `/_matrix/client/v3/sync?filter={"room":{"timeline":{"limit":5}}}&timeout=0&set_presence=offline`, want: 200,
			note:  "inline JSON filter (mautrix, Cinny)",
			check: func(e *ccEnv, r ccResp) { e.str(r, "next_batch") }},
		{who: ccBoth, as: "alice", method: "GET", path: "/_matrix/client/v3/voip/turnServer", want: 200, note: "TURN REST credentials when TURN is configured, {} otherwise",
			check: func(e *ccEnv, r ccResp) {
				if !strings.HasSuffix(e.str(r, "username"), ":"+e.users["alice"].UserID) || e.str(r, "password") == "" ||
					len(e.list(r, "uris")) != 2 || e.num(r, "ttl") <= 0 {
					e.t.Errorf("TURN credentials: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/thirdparty/protocols", want: 200, note: "{}: no bridges",
			check: ccEmptyObject},
		{who: ccBoth, as: "alice", method: "GET", path: "/_matrix/client/v3/profile/{userId}", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if _, ok := r.Body["displayname"]; !ok {
					e.t.Errorf("no displayname: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "GET", path: "/_matrix/client/v3/room_keys/version", want: 404, errcode: "M_NOT_FOUND",
			note: "404 M_NOT_FOUND until a backup exists"},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", want: 404, errcode: "M_NOT_FOUND",
			note: "dehydrated devices (MSC3814): 404 M_NOT_FOUND until one is uploaded (M_UNRECOGNIZED would tell Rust crypto the server lacks them)"},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/keys/upload", want: 200, body: ccKeysUpload,
			note: "device keys, one-time and fallback keys",
			check: func(e *ccEnv, r ccResp) {
				if e.num(r, "one_time_key_counts", "signed_curve25519") != 1 {
					e.t.Errorf("one-time key count: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", want: 200, body: ccDehydratedDevice,
			note: "the Rust crypto machine's dehydrated device: device_data, signed device keys, one-time and fallback keys",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "device_id") != "DEHYDRATEDCC" {
					e.t.Errorf("dehydrated device_id: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", want: 200,
			note: "rehydration looks it up",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "device_id") != "DEHYDRATEDCC" || e.str(r, "device_data", "algorithm") != "org.matrix.msc3814.v1.olm" {
					e.t.Errorf("dehydrated device: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/DEHYDRATEDCC/events", body: map[string]any{}, want: 200,
			tmpl: "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events",
			note: "its to-device messages, paged by next_batch (the last page is empty)",
			check: func(e *ccEnv, r ccResp) {
				if _, ok := r.Body["events"].([]any); !ok || e.str(r, "next_batch") == "" {
					e.t.Errorf("dehydrated events: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "DELETE", path: "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "device_id") != "DEHYDRATEDCC" {
					e.t.Errorf("deleted dehydrated device: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/keys/query", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"device_keys": map[string]any{e.users["alice"].UserID: []string{}}, "timeout": 10000}
			},
			check: func(e *ccEnv, r ccResp) {
				e.obj(r, "device_keys", e.users["alice"].UserID, e.vars["aliceElementDevice"], "keys")
				e.obj(r, "failures")
			}},
		{who: ccElement + ", " + ccX, as: "alice", method: "GET", path: "/_matrix/client/v3/user/{userId}/account_data/m.secret_storage.default_key",
			want: 404, errcode: "M_NOT_FOUND", note: "404 M_NOT_FOUND until set; likewise m.cross_signing.*, m.megolm_backup.v1"},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/user/{userId}/account_data/m.cross_signing.master",
			want: 404, errcode: "M_NOT_FOUND"},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/user/{userId}/account_data/m.org.matrix.custom.backup_disabled",
			want: 404, errcode: "M_NOT_FOUND"},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/user/{userId}/account_data/im.vector.analytics", want: 200,
			body: map[string]any{"pseudonymousAnalyticsOptIn": false}, check: ccEmptyObject, note: "Element's im.vector.* settings"},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/user/{userId}/account_data/im.vector.analytics", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.boolean(r, "pseudonymousAnalyticsOptIn") {
					e.t.Errorf("account data not as stored: %s", r.Raw)
				}
			}},
		{who: ccBoth, as: "alice", method: "GET", path: "/_matrix/client/v3/devices", want: 200,
			check: func(e *ccEnv, r ccResp) {
				devs := e.list(r, "devices")
				for _, d := range []string{e.vars["aliceElementDevice"], e.vars["aliceFirstDevice"]} {
					if ccFind(devs, "device_id", d) == nil {
						e.t.Errorf("device %s not listed: %s", d, r.Raw)
					}
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/media/config", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.num(r, "m.upload.size") <= 0 {
					e.t.Errorf("m.upload.size: %s", r.Raw)
				}
			}},
		{who: ccFloor, as: "alice", method: "GET", path: "/_matrix/media/v3/config", want: 200, note: "legacy path (Cinny)",
			check: func(e *ccEnv, r ccResp) { e.num(r, "m.upload.size") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/account/3pid", want: 200, note: "threepids: [] (3PIDs are not supported)",
			check: func(e *ccEnv, r ccResp) { e.list(r, "threepids") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/pushers", want: 200,
			check: func(e *ccEnv, r ccResp) { e.list(r, "pushers") }},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/presence/{userId}/status", want: 200,
			body: map[string]any{"presence": "online", "status_msg": "at my desk"}, check: ccEmptyObject},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/presence/{userId}/status", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if p := e.str(r, "presence"); p != "online" && p != "offline" {
					e.t.Errorf("presence: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_synapse/admin/v1/users/{userId}/admin", want: 403, errcode: "M_FORBIDDEN",
			note: "Element asks whether the user is a server admin; 403 means no"},

		// Profile and media (avatar upload).
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/profile/{userId}/displayname", want: 200,
			body: map[string]any{"displayname": "Alice Liddell"}, check: ccEmptyObject},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/media/v3/upload?filename=avatar.png", want: 200,
			body: ccPNG(), ctype: "image/png",
			check: func(e *ccEnv, r ccResp) {
				uri := e.str(r, "content_uri")
				rest, ok := strings.CutPrefix(uri, "mxc://"+e.vars["serverName"]+"/")
				if !ok || rest == "" {
					e.t.Fatalf("content_uri %q", uri)
				}
				e.vars["avatar"], e.vars["mediaId"] = uri, rest
			}},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/profile/{userId}/avatar_url", want: 200,
			body: func(e *ccEnv) any { return map[string]any{"avatar_url": e.vars["avatar"]} }, check: ccEmptyObject},
		{who: ccBoth, as: "alice", method: "GET", path: "/_matrix/client/v3/profile/{userId}", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "displayname") != "Alice Liddell" || e.str(r, "avatar_url") != e.vars["avatar"] {
					e.t.Errorf("profile: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/user/{userId}/openid/request_token", want: 200, body: map[string]any{},
			note: "widgets and Element Call prove the user's identity",
			check: func(e *ccEnv, r ccResp) {
				e.str(r, "access_token")
				if e.str(r, "token_type") != "Bearer" || e.str(r, "matrix_server_name") != e.vars["serverName"] || e.num(r, "expires_in") <= 0 {
					e.t.Errorf("OpenID token: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/media/download/{serverName}/{mediaId}", want: 200, binary: true,
			check: func(e *ccEnv, r ccResp) {
				if !bytes.Equal(r.Raw, ccPNG()) || r.Header.Get("Content-Type") != "image/png" {
					e.t.Errorf("download: %d bytes of %s", len(r.Raw), r.Header.Get("Content-Type"))
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}?width=32&height=32&method=crop", want: 200, binary: true,
			check: func(e *ccEnv, r ccResp) {
				if _, _, err := image.Decode(bytes.NewReader(r.Raw)); err != nil || !strings.HasPrefix(r.Header.Get("Content-Type"), "image/") {
					e.t.Errorf("thumbnail is not an image (%s): %v", r.Header.Get("Content-Type"), err)
				}
			}},
		ccUnrecognized(ccElement, "GET", "/_matrix/client/v1/media/preview_url?url=https://matrix.org/",
			"URL previews off by default (`media.url_preview.enabled`; Element then shows no preview)"),

		// A direct chat, created the way Element creates one.
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/createRoom", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"preset": "trusted_private_chat", "visibility": "private", "is_direct": true,
					"invite": []string{e.users["bob"].UserID},
					"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "",
						"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}
			},
			check: func(e *ccEnv, r ccResp) { e.capture("roomId", r, "room_id") }},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/user/{userId}/account_data/m.direct", want: 200,
			body: func(e *ccEnv) any { return map[string]any{e.users["bob"].UserID: []string{e.vars["roomId"]}} }, check: ccEmptyObject},
		{who: ccAll, as: "bob", method: "POST", path: "/_matrix/client/v3/join/{roomId}", want: 200, body: map[string]any{},
			tmpl: "/_matrix/client/v3/join/{roomIdOrAlias}",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "room_id") != e.vars["roomId"] {
					e.t.Errorf("joined %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/state/m.room.encryption/",
			tmpl: "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", want: 200, note: "empty state key: trailing slash",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "algorithm") != "m.megolm.v1.aes-sha2" {
					e.t.Errorf("encryption state: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/state/m.room.topic/",
			tmpl: "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", want: 200,
			body: map[string]any{"topic": "plans"}, check: func(e *ccEnv, r ccResp) { e.str(r, "event_id") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/state", want: 200,
			check: func(e *ccEnv, r ccResp) {
				var state []any
				if err := json.Unmarshal(r.Raw, &state); err != nil || len(state) < 5 {
					e.t.Errorf("room state: %s", ccShort(r.Raw))
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/joined_members", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if len(e.obj(r, "joined")) != 2 {
					e.t.Errorf("joined members: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/profile/{bob}", want: 200, tmpl: "/_matrix/client/v3/profile/{userId}",
			check: func(e *ccEnv, r ccResp) {
				if _, ok := r.Body["displayname"]; !ok {
					e.t.Errorf("no displayname: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/aliases", want: 200, note: "room settings",
			check: func(e *ccEnv, r ccResp) { e.list(r, "aliases") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/directory/list/room/{roomId}", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "visibility") != "private" {
					e.t.Errorf("visibility: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/typing/{userId}", want: 200,
			body: map[string]any{"typing": true, "timeout": 30000}, check: ccEmptyObject},
		{who: ccBoth, as: "alice", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/m.room.message/alice-msg-1",
			tmpl: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", want: 200,
			body:  map[string]any{"msgtype": "m.text", "body": "hello bob, lunch at noon?", "m.mentions": map[string]any{}},
			check: func(e *ccEnv, r ccResp) { e.capture("eventId", r, "event_id") }},
		{who: ccBoth, as: "alice", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/m.room.message/alice-msg-1",
			tmpl: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", want: 200, note: "a retried transaction gives the same event",
			body: map[string]any{"msgtype": "m.text", "body": "hello bob, lunch at noon?", "m.mentions": map[string]any{}},
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "event_id") != e.vars["eventId"] {
					e.t.Errorf("retry gave another event: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/m.room.encrypted/{txnId}",
			tmpl: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnB" + ccRandKey(),
					"device_id": e.vars["aliceElementDevice"], "sender_key": ccRandKey(), "session_id": ccRandKey()}
			},
			check: func(e *ccEnv, r ccResp) { e.capture("encryptedId", r, "event_id") }},
		{who: ccAll, as: "bob", method: "GET", path: "/_matrix/client/v3/sync?timeout=0", want: 200, note: "bob sees the room, the messages and an unread count",
			check: func(e *ccEnv, r ccResp) {
				room := e.vars["roomId"]
				seen := map[string]bool{}
				count := 0.0
				last := e.follow("bob", "", r, func(r ccResp) bool {
					tl, _ := r.dig("rooms", "join", room, "timeline", "events")
					evs, _ := tl.([]any)
					if pb, ok := r.dig("rooms", "join", room, "timeline", "prev_batch"); ok && e.vars["prevBatch"] == "" {
						// Where Element's back-pagination starts, and what it already shows.
						e.vars["prevBatch"], _ = pb.(string)
						for _, ev := range evs {
							id, _ := ev.(map[string]any)["event_id"].(string)
							e.vars["shown"] += id + " "
						}
					}
					for _, ev := range evs {
						if id, ok := ev.(map[string]any)["event_id"].(string); ok {
							seen[id] = true
						}
					}
					if n, ok := r.dig("rooms", "join", room, "unread_notifications", "notification_count"); ok {
						count, _ = n.(float64)
					}
					return seen[e.vars["eventId"]] && seen[e.vars["encryptedId"]] && count >= 2
				})
				if !seen[e.vars["eventId"]] || !seen[e.vars["encryptedId"]] || count < 2 {
					e.t.Errorf("bob's syncs: message seen %v, encrypted seen %v, notification_count %v; last %s",
						seen[e.vars["eventId"]], seen[e.vars["encryptedId"]], count, ccShort(last.Raw))
				}
				e.vars["bobSince"] = e.str(last, "next_batch")
			}},
		{who: ccAll, as: "bob", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/members?not_membership=leave&at={bobSince}", want: 200,
			note: "lazy-loaded members, at the client's latest sync token",
			check: func(e *ccEnv, r ccResp) {
				chunk := e.list(r, "chunk")
				for _, u := range []string{"alice", "bob"} {
					if m := ccFind(chunk, "state_key", e.users[u].UserID); m == nil || m["type"] != "m.room.member" {
						e.t.Errorf("member %s missing: %s", u, ccShort(r.Raw))
					}
				}
			}},
		{who: ccFloor, as: "bob", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/event/{eventId}", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "event_id") != e.vars["eventId"] || e.str(r, "content", "body") != "hello bob, lunch at noon?" {
					e.t.Errorf("event: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "bob", method: "GET", path: `/_matrix/client/v3/rooms/{roomId}/messages?dir=b&limit=20&filter={"lazy_load_members":true}`, want: 200,
			check: func(e *ccEnv, r ccResp) {
				ccHasEvent(e, "messages", e.list(r, "chunk"), e.vars["eventId"])
				e.str(r, "start")
			}},
		{who: ccElement + ", " + ccX, as: "bob", method: "GET", path: `/_matrix/client/v3/rooms/{roomId}/messages?from={prevBatch}&dir=b&limit=20&filter={"lazy_load_members":true}`, want: 200,
			note: "back-pagination from the sync timeline's prev_batch",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "start") != e.vars["prevBatch"] {
					e.t.Errorf("start %v is not the from token %s", r.Body["start"], e.vars["prevBatch"])
				}
				for _, ev := range e.list(r, "chunk") {
					if id, _ := ev.(map[string]any)["event_id"].(string); strings.Contains(e.vars["shown"], id+" ") {
						e.t.Errorf("back-pagination repeats %s, already in the sync timeline", id)
					}
				}
			}},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/context/{eventId}?limit=10", want: 200,
			note: "permalinks and search results",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "event", "event_id") != e.vars["eventId"] {
					e.t.Errorf("context: %s", ccShort(r.Raw))
				}
			}},
		{who: ccAll, as: "bob", method: "POST", path: "/_matrix/client/v3/rooms/{roomId}/receipt/m.read/{eventId}", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}", body: map[string]any{"thread_id": "main"}, check: ccEmptyObject},
		{who: ccElement, as: "bob", method: "POST", path: "/_matrix/client/v3/rooms/{roomId}/receipt/m.read.private/{eventId}", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}", body: map[string]any{}, check: ccEmptyObject,
			note: "m.read, m.read.private"},
		{who: ccElement, as: "bob", method: "POST", path: "/_matrix/client/v3/rooms/{roomId}/read_markers", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"m.fully_read": e.vars["eventId"], "m.read": e.vars["eventId"]}
			}, check: ccEmptyObject},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/notifications?limit=20", want: 200,
			check: func(e *ccEnv, r ccResp) {
				n := e.list(r, "notifications")
				for _, x := range n {
					if ev, _ := x.(map[string]any)["event"].(map[string]any); ev["event_id"] == e.vars["eventId"] {
						return
					}
				}
				e.t.Errorf("alice's message in a DM is not among bob's notifications: %s", ccShort(r.Raw))
			}},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/joined_rooms", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if !slices.Contains(e.list(r, "joined_rooms"), any(e.vars["roomId"])) {
					e.t.Errorf("joined_rooms: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "bob", method: "PUT", path: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/m.favourite", want: 200,
			tmpl: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}", body: map[string]any{"order": 0.25}, check: ccEmptyObject,
			note: "favourites and low priority"},
		{who: ccElement, as: "bob", method: "PUT", path: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/u.lunch", want: 200,
			tmpl: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}", body: map[string]any{}, check: ccEmptyObject},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.num(r, "tags", "m.favourite", "order") != 0.25 || len(e.obj(r, "tags", "u.lunch")) != 0 {
					e.t.Errorf("tags: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "bob", method: "DELETE", path: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/m.favourite", want: 200,
			tmpl: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}", check: ccEmptyObject},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if tags := e.obj(r, "tags"); len(tags) != 1 || tags["u.lunch"] == nil {
					e.t.Errorf("tags after delete: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "bob", method: "PUT", path: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/m.marked_unread", want: 200,
			tmpl: "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}", body: map[string]any{"unread": true}, check: ccEmptyObject},
		{who: ccElement, as: "bob", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/m.reaction/{txnId}", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",
			body: func(e *ccEnv) any {
				return map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": e.vars["eventId"], "key": "👍"}}
			},
			check: func(e *ccEnv, r ccResp) { e.capture("reactionId", r, "event_id") }},
		{who: ccElement, as: "bob", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", note: "a thread reply",
			body: func(e *ccEnv) any {
				return map[string]any{"msgtype": "m.text", "body": "noon works",
					"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": e.vars["eventId"], "is_falling_back": true,
						"m.in_reply_to": map[string]any{"event_id": e.vars["eventId"]}}}
			},
			check: func(e *ccEnv, r ccResp) { e.capture("threadReplyId", r, "event_id") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}?limit=50", want: 200,
			check: func(e *ccEnv, r ccResp) { ccHasEvent(e, "relations", e.list(r, "chunk"), e.vars["reactionId"]) }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/rooms/{roomId}/threads?limit=20&include=all", want: 200,
			check: func(e *ccEnv, r ccResp) { ccHasEvent(e, "threads", e.list(r, "chunk"), e.vars["eventId"]) }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/m.thread?dir=b&limit=50", want: 200,
			tmpl: "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}", note: "opening a thread",
			check: func(e *ccEnv, r ccResp) { ccHasEvent(e, "thread", e.list(r, "chunk"), e.vars["threadReplyId"]) }},
		{who: ccX, as: "alice", method: "PUT", path: "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{eventId}/subscription", want: 200,
			tmpl: "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", body: map[string]any{},
			note: "thread subscription (MSC4306): following a thread", check: ccEmptyObject},
		{who: ccX, as: "alice", method: "GET", path: "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{eventId}/subscription", want: 200,
			tmpl: "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription",
			check: func(e *ccEnv, r ccResp) {
				if r.Body["automatic"] != false {
					e.t.Errorf("subscription: %s", ccShort(r.Raw))
				}
			}},
		{who: ccX, as: "alice", method: "GET", path: "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=10", want: 200,
			note: "thread subscription changes (MSC4308), paging back from a sliding sync prev_batch",
			check: func(e *ccEnv, r ccResp) {
				subs, _ := r.Body["subscribed"].(map[string]any)
				room, _ := subs[e.vars["roomId"]].(map[string]any)
				if _, ok := room[e.vars["eventId"]].(map[string]any); !ok {
					e.t.Errorf("thread_subscriptions: %s", ccShort(r.Raw))
				}
			}},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", note: "an edit",
			body: func(e *ccEnv) any {
				return map[string]any{"msgtype": "m.text", "body": " * hello bob, lunch at one?",
					"m.new_content": map[string]any{"msgtype": "m.text", "body": "hello bob, lunch at one?"},
					"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": e.vars["eventId"]}}
			},
			check: func(e *ccEnv, r ccResp) { e.capture("editId", r, "event_id") }},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/rooms/{roomId}/event/{eventId}", want: 200,
			note: "with the bundled edit and thread summary",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "unsigned", "m.relations", "m.replace", "event_id") != e.vars["editId"] {
					e.t.Errorf("edit not bundled: %s", ccShort(r.Raw))
				}
				if e.num(r, "unsigned", "m.relations", "m.thread", "count") != 1 {
					e.t.Errorf("thread summary: %s", ccShort(r.Raw))
				}
			}},
		{who: ccElement, as: "bob", method: "PUT", path: "/_matrix/client/v3/rooms/{roomId}/redact/{reactionId}/{txnId}", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}", body: map[string]any{"reason": "changed my mind"},
			check: func(e *ccEnv, r ccResp) { e.str(r, "event_id") }},
		{who: ccElement, as: "bob", method: "POST", path: "/_matrix/client/v3/rooms/{roomId}/report/{eventId}", want: 200,
			body: map[string]any{"reason": "testing the report button", "score": -100}, check: ccEmptyObject},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/search", want: 200,
			body: map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "lunch",
				"filter": map[string]any{"limit": 10}, "order_by": "recent",
				"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true}}}},
			check: func(e *ccEnv, r ccResp) {
				for _, x := range e.list(r, "search_categories", "room_events", "results") {
					if res, _ := x.(map[string]any)["result"].(map[string]any); res["event_id"] == e.vars["eventId"] {
						return
					}
				}
				e.t.Errorf("search misses the message: %s", ccShort(r.Raw))
			}},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/user_directory/search", want: 200,
			body: map[string]any{"search_term": "bob", "limit": 10},
			check: func(e *ccEnv, r ccResp) {
				if ccFind(e.list(r, "results"), "user_id", e.users["bob"].UserID) == nil {
					e.t.Errorf("bob not found: %s", r.Raw)
				}
				e.boolean(r, "limited")
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/rooms/{roomId}/hierarchy?max_depth=1&limit=20", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if ccFind(e.list(r, "rooms"), "room_id", e.vars["roomId"]) == nil {
					e.t.Errorf("hierarchy: %s", ccShort(r.Raw))
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=4102444800000&dir=b", want: 200,
			note: "jump to date (MSC3030, spec v1.6)", check: func(e *ccEnv, r ccResp) {
				if id, _ := r.Body["event_id"].(string); id == "" {
					e.t.Errorf("timestamp_to_event: %s", ccShort(r.Raw))
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/unstable/org.matrix.msc4140/delayed_events", want: 200,
			note: "delayed events (MSC4140), Element Call", check: func(e *ccEnv, r ccResp) {
				if _, ok := r.Body["delayed_events"].([]any); !ok {
					e.t.Errorf("delayed_events: %s", ccShort(r.Raw))
				}
			}},
		{who: ccFloor, as: "alice", method: "GET", path: "/_matrix/client/unstable/im.nheko.summary/rooms/{roomId}/summary", want: 200,
			note: "room summary (MSC3266), Cinny", check: func(e *ccEnv, r ccResp) { ccSummary(e, r) }},
		{who: ccFloor, as: "alice", method: "GET", path: "/_matrix/client/unstable/im.nheko.summary/summary/{roomId}", want: 200,
			check: func(e *ccEnv, r ccResp) { ccSummary(e, r) }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v1/room_summary/{roomId}", want: 200,
			check: func(e *ccEnv, r ccResp) { ccSummary(e, r) }},
		ccUnrecognized(ccFloor+", "+ccElement, "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
			"MatrixRTC transports (MSC4143): not offered"),
		ccUnrecognized(ccElement, "GET", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id={bob}",
			"mutual rooms (MSC2666, labs): not offered"),

		// A public room found through the directory, joined by alias, left and forgotten.
		{who: ccElement, as: "carol", method: "POST", path: "/_matrix/client/v3/createRoom", want: 200,
			body: map[string]any{"preset": "public_chat", "visibility": "public", "room_alias_name": "lobby", "name": "Lobby"},
			check: func(e *ccEnv, r ccResp) {
				e.capture("lobbyId", r, "room_id")
				e.vars["lobbyAlias"] = "#lobby:" + e.vars["serverName"]
			}},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/publicRooms?server={serverName}", want: 200,
			body: map[string]any{"limit": 20, "filter": map[string]any{"generic_search_term": "lob"}},
			check: func(e *ccEnv, r ccResp) {
				if ccFind(e.list(r, "chunk"), "room_id", e.vars["lobbyId"]) == nil {
					e.t.Errorf("public room not listed: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/publicRooms?limit=20", want: 200,
			check: func(e *ccEnv, r ccResp) { e.list(r, "chunk") }},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/directory/room/{lobbyAlias}", want: 200,
			tmpl: "/_matrix/client/v3/directory/room/{roomAlias}",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "room_id") != e.vars["lobbyId"] || len(e.list(r, "servers")) == 0 {
					e.t.Errorf("alias: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/join/{lobbyAlias}?server_name={serverName}", want: 200,
			tmpl: "/_matrix/client/v3/join/{roomIdOrAlias}", body: map[string]any{}, note: "by room ID or alias",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "room_id") != e.vars["lobbyId"] {
					e.t.Errorf("joined %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/rooms/{lobbyId}/invite", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/invite", body: func(e *ccEnv) any { return map[string]any{"user_id": e.users["bob"].UserID} },
			check: ccEmptyObject},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/rooms/{lobbyId}/leave", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/leave", body: map[string]any{}, check: ccEmptyObject},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/rooms/{lobbyId}/forget", want: 200,
			tmpl: "/_matrix/client/v3/rooms/{roomId}/forget", body: map[string]any{}, check: ccEmptyObject},

		// End-to-end encryption between alice and bob: claims, to-device, cross-signing, backup.
		{who: ccAll, as: "bob", method: "POST", path: "/_matrix/client/v3/keys/claim", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"one_time_keys": map[string]any{e.users["alice"].UserID: map[string]any{e.vars["aliceElementDevice"]: "signed_curve25519"}}, "timeout": 10000}
			},
			check: func(e *ccEnv, r ccResp) {
				if len(e.obj(r, "one_time_keys", e.users["alice"].UserID, e.vars["aliceElementDevice"])) != 1 {
					e.t.Errorf("claim: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "bob", method: "PUT", path: "/_matrix/client/v3/sendToDevice/m.room.encrypted/{txnId}", want: 200,
			tmpl: "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
			body: func(e *ccEnv) any {
				return map[string]any{"messages": map[string]any{e.users["alice"].UserID: map[string]any{e.vars["aliceElementDevice"]: map[string]any{
					"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": ccRandKey(),
					"ciphertext": map[string]any{ccRandKey(): map[string]any{"type": 0, "body": "Awog" + ccRandKey()}}}}}}
			},
			check: ccEmptyObject},
		{who: ccAll, as: "alice", method: "GET", path: "/_matrix/client/v3/sync?filter={filterId}&since={since}&timeout=0", want: 200,
			note: "to-device messages, one-time key counts",
			check: func(e *ccEnv, r ccResp) {
				e.obj(r, "device_one_time_keys_count")
				last := e.follow("alice", "&filter="+url.QueryEscape(e.vars["filterId"]), r, func(r ccResp) bool {
					td, _ := r.dig("to_device", "events")
					l, _ := td.([]any)
					return ccFind(l, "type", "m.room.encrypted") != nil
				})
				td, _ := last.dig("to_device", "events")
				if l, _ := td.([]any); ccFind(l, "type", "m.room.encrypted") == nil {
					e.t.Errorf("bob's to-device message not delivered: %s", ccShort(last.Raw))
				}
				e.capture("since", last, "next_batch")
			}},
		{who: ccElement, as: "bob", method: "GET", path: "/_matrix/client/v3/keys/changes?from={bobSince}&to={since}", want: 200,
			check: func(e *ccEnv, r ccResp) { e.list(r, "changed") }},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/keys/device_signing/upload", want: 200,
			body: func(e *ccEnv) any { return ccCrossSigning(e) }, note: "first keys need no UIA; replacing them does (401, then m.login.password)",
			check: ccEmptyObject},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/keys/device_signing/upload", want: 401,
			body: func(e *ccEnv) any { return ccCrossSigning(e) }, check: ccUIAChallenge},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/keys/device_signing/upload", want: 200,
			body: func(e *ccEnv) any {
				b := ccCrossSigning(e)
				b["auth"] = e.passwordAuth("alice")
				return b
			},
			check: ccEmptyObject},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/keys/signatures/upload", want: 200, note: "device signed by the self-signing key",
			body: func(e *ccEnv) any {
				u := e.users["alice"]
				dev := e.vars["aliceElementDevice"]
				q := raw(e.t, "POST", e.url+"/_matrix/client/v3/keys/query", u.AccessToken, map[string]any{"device_keys": map[string]any{u.UserID: []string{dev}}})
				keys, _ := q.Body["device_keys"].(map[string]any)[u.UserID].(map[string]any)[dev].(map[string]any)
				if keys == nil {
					e.t.Fatalf("own device keys: %s", q.Raw)
				}
				delete(keys, "unsigned")
				signed := e2eeSign(keys, u.UserID, "ed25519:"+e.vars["selfSigningPub"], e.priv["selfSigning"])
				return map[string]any{u.UserID: map[string]any{dev: signed}}
			},
			check: func(e *ccEnv, r ccResp) {
				if len(e.obj(r, "failures")) != 0 {
					e.t.Errorf("signature failures: %s", r.Raw)
				}
			}},
		{who: ccAll, as: "bob", method: "POST", path: "/_matrix/client/v3/keys/query", want: 200, note: "another user's cross-signing keys",
			body: func(e *ccEnv) any {
				return map[string]any{"device_keys": map[string]any{e.users["alice"].UserID: []string{}}}
			},
			check: func(e *ccEnv, r ccResp) {
				uid := e.users["alice"].UserID
				if e.str(r, "master_keys", uid, "keys", "ed25519:"+e.vars["masterPub"]) != e.vars["masterPub"] {
					e.t.Errorf("master key: %s", ccShort(r.Raw))
				}
				e.obj(r, "self_signing_keys", uid)
				// The device carries the self-signing key's signature.
				e.str(r, "device_keys", uid, e.vars["aliceElementDevice"], "signatures", uid, "ed25519:"+e.vars["selfSigningPub"])
			}},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/user/{userId}/account_data/m.secret_storage.default_key", want: 200,
			body: map[string]any{"key": "recoverykey1"}, check: ccEmptyObject, note: "secret storage set-up (also m.secret_storage.key.*)"},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/room_keys/version", want: 200,
			body:  map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": ccRandKey()}},
			check: func(e *ccEnv, r ccResp) { e.capture("version", r, "version") }},
		{who: ccAll, as: "alice", method: "GET", path: "/_matrix/client/v3/room_keys/version", want: 200, note: "the current backup",
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "version") != e.vars["version"] || e.str(r, "algorithm") != "m.megolm_backup.v1.curve25519-aes-sha2" {
					e.t.Errorf("backup: %s", r.Raw)
				}
				e.obj(r, "auth_data")
				e.num(r, "count")
				e.str(r, "etag")
			}},
		{who: ccFloor, as: "alice", method: "GET", path: "/_matrix/client/v3/room_keys/version/{version}", want: 200,
			check: func(e *ccEnv, r ccResp) { e.str(r, "version") }},
		{who: ccAll, as: "alice", method: "PUT", path: "/_matrix/client/v3/room_keys/keys?version={version}", want: 200,
			body: func(e *ccEnv) any {
				e.vars["sessionId"] = ccRandKey()
				return map[string]any{"rooms": map[string]any{e.vars["roomId"]: map[string]any{"sessions": map[string]any{e.vars["sessionId"]: map[string]any{
					"first_message_index": 0, "forwarded_count": 0, "is_verified": true,
					"session_data": map[string]any{"ephemeral": ccRandKey(), "ciphertext": ccRandKey(), "mac": "QzKV/fgAs4U"}}}}}}
			},
			check: func(e *ccEnv, r ccResp) {
				if e.num(r, "count") != 1 {
					e.t.Errorf("backup count: %s", r.Raw)
				}
				e.str(r, "etag")
			}},
		{who: ccAll, as: "alice", method: "GET", path: "/_matrix/client/v3/room_keys/keys?version={version}", want: 200,
			check: func(e *ccEnv, r ccResp) {
				e.obj(r, "rooms", e.vars["roomId"], "sessions", e.vars["sessionId"], "session_data")
			}},

		// Settings: notifications, sessions, logout.
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", want: 200,
			tmpl: "/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled", body: map[string]any{"enabled": false}, check: ccEmptyObject},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/pushrules/global/content/enclave-keyword", want: 200,
			tmpl: "/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}", check: ccEmptyObject, note: "a keyword rule",
			body: map[string]any{"pattern": "deadline", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}}},
		{who: ccElement, as: "alice", method: "GET", path: "/_matrix/client/v3/devices/{deviceId}", want: 200,
			check: func(e *ccEnv, r ccResp) {
				if e.str(r, "device_id") != e.vars["aliceElementDevice"] {
					e.t.Errorf("device: %s", r.Raw)
				}
			}},
		{who: ccElement, as: "alice", method: "PUT", path: "/_matrix/client/v3/devices/{deviceId}", want: 200,
			body: map[string]any{"display_name": "Element on my laptop"}, check: ccEmptyObject},
		{who: ccAll, method: "POST", path: "/_matrix/client/v3/login", want: 200, note: "a second device",
			body: func(e *ccEnv) any {
				return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"},
					"password": e.pw["alice"], "initial_device_display_name": "Element X: iPhone"}
			},
			check: func(e *ccEnv, r ccResp) { e.capture("aliceSecondDevice", r, "device_id") }},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/delete_devices", want: 401,
			body: func(e *ccEnv) any { return map[string]any{"devices": []string{e.vars["aliceSecondDevice"]}} },
			note: "Element's session manager signs sessions out here: UIA 401, then m.login.password 200", check: ccUIAChallenge},
		{who: ccElement, as: "alice", method: "POST", path: "/_matrix/client/v3/delete_devices", want: 200,
			body: func(e *ccEnv) any {
				return map[string]any{"devices": []string{e.vars["aliceSecondDevice"]}, "auth": e.passwordAuth("alice")}
			},
			check: ccEmptyObject},
		{who: ccBoth, as: "alice", method: "DELETE", path: "/_matrix/client/v3/devices/{aliceFirstDevice}", want: 401,
			tmpl: "/_matrix/client/v3/devices/{deviceId}", note: "UIA: 401, then m.login.password: 200", check: ccUIAChallenge},
		{who: ccBoth, as: "alice", method: "DELETE", path: "/_matrix/client/v3/devices/{aliceFirstDevice}", want: 200,
			tmpl: "/_matrix/client/v3/devices/{deviceId}", body: func(e *ccEnv) any { return map[string]any{"auth": e.passwordAuth("alice")} },
			check: ccEmptyObject},
		{who: ccX, as: "alice", method: "POST", path: "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", want: 200,
			body: map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 10}}, "timeline_limit": 1}}},
			note: "Simplified Sliding Sync (MSC4186): lists, subscriptions, extensions (see README)"},
		{who: ccAll, as: "alice", method: "POST", path: "/_matrix/client/v3/logout", want: 200, body: map[string]any{}, check: ccEmptyObject},
		{who: ccElement + ", " + ccX, as: "alice", method: "GET", path: "/_matrix/client/v3/account/whoami", want: 401, errcode: "M_UNKNOWN_TOKEN",
			note: "after logout the token is dead", check: func(e *ccEnv, r ccResp) {
				if sl, ok := r.Body["soft_logout"]; ok && sl != false {
					e.t.Errorf("logout is not a soft logout: %s", r.Raw)
				}
			}},
	}
}

// Room tags (clientapi/tags.go): only one's own, order must be a number,
// and /sync delivers them as the room's m.tag account data.
func TestClientRoomTags(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := Register(t, srv.URL, "alice", "alice-secret-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-secret-pw", false)
		room := mustOK(t, "createRoom", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
		tags := func(user string) string {
			return cs(srv.URL) + "/user/" + url.PathEscape(user) + "/rooms/" + url.PathEscape(room) + "/tags"
		}
		since := mustOK(t, "sync", raw(t, "GET", cs(srv.URL)+"/sync?timeout=0", alice.AccessToken, nil)).Body["next_batch"].(string)
		raw(t, "PUT", tags(alice.UserID)+"/m.favourite", bob.AccessToken, map[string]any{"order": 0.5}).wantErr(t, "another user's tag", 403, "M_FORBIDDEN")
		raw(t, "GET", tags(alice.UserID), bob.AccessToken, nil).wantErr(t, "another user's tags", 403, "M_FORBIDDEN")
		raw(t, "PUT", tags(alice.UserID)+"/m.favourite", alice.AccessToken, map[string]any{"order": "first"}).wantErr(t, "non-numeric order", 400, "M_BAD_JSON")
		raw(t, "PUT", tags(alice.UserID)+"/m.favourite", alice.AccessToken, "[1]").wantErr(t, "array body", 400, "M_BAD_JSON")
		if r := raw(t, "GET", tags(alice.UserID), alice.AccessToken, nil); r.Status != 200 || string(r.Raw) != `{"tags":{}}` {
			t.Fatalf("refused writes changed the tags: %d %s", r.Status, r.Raw)
		}
		mustOK(t, "put tag", raw(t, "PUT", tags(alice.UserID)+"/m.lowpriority", alice.AccessToken, map[string]any{"order": 0.9}))
		s := mustOK(t, "incremental sync", raw(t, "GET", cs(srv.URL)+"/sync?timeout=1500&since="+url.QueryEscape(since), alice.AccessToken, nil))
		var out struct {
			Rooms struct {
				Join map[string]struct {
					AccountData struct {
						Events []struct {
							Type    string `json:"type"`
							Content struct {
								Tags map[string]map[string]any `json:"tags"`
							} `json:"content"`
						} `json:"events"`
					} `json:"account_data"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(s.Raw, &out); err != nil {
			t.Fatal(err)
		}
		evs := out.Rooms.Join[room].AccountData.Events
		if len(evs) != 1 || evs[0].Type != "m.tag" || evs[0].Content.Tags["m.lowpriority"]["order"] != 0.9 {
			t.Fatalf("sync does not deliver the tag: %s", s.Raw)
		}
	})
}

// ccSummary checks a room summary (MSC3266) of the DM.
func ccSummary(e *ccEnv, r ccResp) {
	if e.str(r, "room_id") != e.vars["roomId"] || e.num(r, "num_joined_members") != 2 {
		e.t.Errorf("summary: %s", r.Raw)
	}
	e.boolean(r, "guest_can_join")
	e.boolean(r, "world_readable")
}

// --- the md table ----------------------------------------------------------

func (s *ccSeen) add(c ccCall, store string, r ccResp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := c.method + " " + c.template()
	if s.rows[k] == nil {
		s.rows[k] = map[string][]string{}
	}
	st := fmt.Sprint(r.Status)
	if ec, _ := r.Body["errcode"].(string); r.Status >= 400 && ec != "" {
		st += " " + ec
	}
	if l := s.rows[k][store]; len(l) == 0 || l[len(l)-1] != st {
		s.rows[k][store] = append(l, st)
	}
}

// markdown lists each (method, path) once, in table order, with the
// answers it gave in turn (repeats folded), per store where they differ.
func (s *ccSeen) markdown(calls []ccCall) string {
	var b strings.Builder
	b.WriteString("| method | path | called by | status | notes |\n|---|---|---|---|---|\n")
	done := map[string]bool{}
	for _, c := range calls {
		k := c.method + " " + c.template()
		if done[k] {
			continue
		}
		done[k] = true
		var who, notes []string
		for _, o := range calls {
			if o.method+" "+o.template() != k {
				continue
			}
			for _, w := range strings.Split(o.who, ", ") {
				if !slices.Contains(who, w) {
					who = append(who, w)
				}
			}
			if o.note != "" && !slices.Contains(notes, o.note) {
				notes = append(notes, o.note)
			}
		}
		stores := make([]string, 0, len(s.rows[k]))
		for st := range s.rows[k] {
			stores = append(stores, st)
		}
		sort.Strings(stores)
		status := ""
		for i, st := range stores {
			got := strings.Join(s.rows[k][st], " → ")
			if i == 0 {
				status = got
			} else if got != status {
				status += " (" + st + ": " + got + ")"
			}
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s |\n", c.method, c.template(), strings.Join(who, ", "), status, strings.Join(notes, "; "))
	}
	return b.String()
}
