package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
)

// e2eeFixture is a federation "self.test" with one local user and device
// (keys and two one-time keys uploaded), open to remote.test.
func e2eeFixture(t *testing.T) (*Federation, *httptest.Server, testKey) {
	t.Helper()
	f := newTestFederation(t, &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{}}, func(c *config.Config) {
		c.Federation.AllowedServers = []string{"remote.test"}
	})
	ctx := context.Background()
	if _, err := storage.CreateAccount(ctx, f.db, &storage.Account{UserID: "@alice:self.test", Localpart: "alice", PasswordHash: "h", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.CreateDevice(ctx, f.db, &storage.Device{UserID: "@alice:self.test", DeviceID: "DEV1", DisplayName: "phone", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	keys := `{"algorithms":["m.olm.v1.curve25519-aes-sha2"],"device_id":"DEV1","keys":{"ed25519:DEV1":"AAAA"},"user_id":"@alice:self.test"}`
	if _, err := storage.SetDeviceKeys(ctx, f.db, "@alice:self.test", "DEV1", []byte(keys), "AAAA", 1); err != nil {
		t.Fatal(err)
	}
	otks := []storage.OneTimeKey{{KeyID: "signed_curve25519:k1", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"K1"}`)},
		{KeyID: "signed_curve25519:k2", Algorithm: "signed_curve25519", JSON: json.RawMessage(`{"key":"K2"}`)}}
	if err := storage.AddOneTimeKeys(ctx, f.db, "@alice:self.test", "DEV1", otks); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.Handler())
	t.Cleanup(srv.Close)
	remote := newTestKey(t, "remote.test")
	remote.trust(t, f)
	return f, srv, remote
}

func TestUserKeysQueryAndClaim(t *testing.T) {
	f, srv, remote := e2eeFixture(t)
	code, body := do(t, srv.URL, signedRequest(t, remote, f.serverName, "POST", "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": map[string][]string{"@alice:self.test": {}, "@bob:remote.test": {}, "@nobody:self.test": {}}}))
	var q struct {
		DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
	}
	if code != 200 || json.Unmarshal(body, &q) != nil {
		t.Fatalf("keys/query: %d %s", code, body)
	}
	if _, ok := q.DeviceKeys["@bob:remote.test"]; ok {
		t.Fatalf("answered for another server's user: %s", body)
	}
	dev := q.DeviceKeys["@alice:self.test"]["DEV1"]
	if dev == nil || dev["device_id"] != "DEV1" || len(q.DeviceKeys["@nobody:self.test"]) != 0 {
		t.Fatalf("keys/query answer: %s", body)
	}
	if code, body := do(t, srv.URL, signedRequest(t, remote, f.serverName, "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{})); code != 400 {
		t.Fatalf("keys/query without device_keys: %d %s", code, body)
	}
	// Unsigned requests never get there.
	req, _ := http.NewRequest("POST", srv.URL+"/_matrix/federation/v1/user/keys/query", strings.NewReader(`{"device_keys":{}}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("unsigned keys/query: %v %v", resp, err)
	}

	claim := func() map[string]map[string]map[string]json.RawMessage {
		t.Helper()
		code, body := do(t, srv.URL, signedRequest(t, remote, f.serverName, "POST", "/_matrix/federation/v1/user/keys/claim",
			map[string]any{"one_time_keys": map[string]any{"@alice:self.test": map[string]string{"DEV1": "signed_curve25519"}, "@bob:remote.test": map[string]string{"X": "signed_curve25519"}}}))
		var c struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		if code != 200 || json.Unmarshal(body, &c) != nil {
			t.Fatalf("keys/claim: %d %s", code, body)
		}
		return c.OneTimeKeys
	}
	first, second, third := claim(), claim(), claim()
	if len(first["@alice:self.test"]["DEV1"]) != 1 || len(second["@alice:self.test"]["DEV1"]) != 1 || first["@bob:remote.test"] != nil {
		t.Fatalf("claims: %v %v", first, second)
	}
	for k := range first["@alice:self.test"]["DEV1"] {
		if _, again := second["@alice:self.test"]["DEV1"][k]; again {
			t.Fatal("a one-time key was handed out twice")
		}
	}
	if len(third["@alice:self.test"]) != 0 {
		t.Fatalf("keys left after two claims: %v", third)
	}

	code, body = do(t, srv.URL, signedRequest(t, remote, f.serverName, "GET", "/_matrix/federation/v1/user/devices/@alice:self.test", nil))
	var d struct {
		UserID  string `json:"user_id"`
		Devices []struct {
			DeviceID    string         `json:"device_id"`
			DisplayName string         `json:"device_display_name"`
			Keys        map[string]any `json:"keys"`
		} `json:"devices"`
	}
	if code != 200 || json.Unmarshal(body, &d) != nil || len(d.Devices) != 1 || d.Devices[0].DisplayName != "phone" || d.Devices[0].Keys["device_id"] != "DEV1" {
		t.Fatalf("user/devices: %d %s", code, body)
	}
	if code, _ := do(t, srv.URL, signedRequest(t, remote, f.serverName, "GET", "/_matrix/federation/v1/user/devices/@bob:remote.test", nil)); code != 404 {
		t.Fatalf("user/devices of a remote user: %d", code)
	}
}

func TestDirectToDeviceEDU(t *testing.T) {
	f, _, _ := e2eeFixture(t)
	ctx := context.Background()
	var mu sync.Mutex
	var woken []string
	f.StartLocal(Local{NotifyUsers: func(u ...string) { mu.Lock(); woken = append(woken, u...); mu.Unlock() }, StreamPos: f.db.Stream.Current})
	t.Cleanup(f.StopLocal)
	edu := func(sender, msgID string, messages map[string]any) error {
		b, _ := json.Marshal(map[string]any{"sender": sender, "type": "m.room.encrypted", "message_id": msgID, "messages": messages})
		return f.inEDUs.onDirectToDevice(ctx, "remote.test", b)
	}
	pending := func() int {
		n, err := storage.PendingToDevice(ctx, f.db, "@alice:self.test", "DEV1")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	to := map[string]any{"@alice:self.test": map[string]any{"*": map[string]any{"ciphertext": "x"}, "GONE": map[string]any{"c": 1}}}
	if err := edu("@mallory:other.test", "m1", to); !errors.Is(err, errForeignUser) || pending() != 0 {
		t.Fatalf("foreign sender: %v, %d queued", err, pending())
	}
	if err := edu("@bob:remote.test", "m1", to); err != nil || pending() != 1 {
		t.Fatalf("delivery: %v, %d queued", err, pending())
	}
	if err := edu("@bob:remote.test", "m1", to); err != nil || pending() != 1 {
		t.Fatalf("a repeated message ID was delivered again: %v, %d queued", err, pending())
	}
	if err := edu("@bob:remote.test", "m2", map[string]any{"@alice:self.test": map[string]any{"DEV1": "not an object"}}); err != nil || pending() != 1 {
		t.Fatalf("non-object content: %v, %d queued", err, pending())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		w := append([]string(nil), woken...)
		mu.Unlock()
		if len(w) > 0 && w[0] == "@alice:self.test" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("woken: %v", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memberRooms is a room server knowing memberships only.
type memberRooms struct {
	RoomServer
	members map[string]string // room|user → membership
}

func (m memberRooms) Membership(_ context.Context, roomID, userID string) (string, error) {
	return m.members[roomID+"|"+userID], nil
}

func (m memberRooms) RoomVersion(context.Context, string) (gomatrixserverlib.RoomVersion, error) {
	return "", roomserver.ErrRoomNotFound
}

func (m memberRooms) InputRemoteEvents(context.Context, spec.ServerName, []gomatrixserverlib.PDU) map[string]error {
	return nil
}

func TestTypingEDUChecks(t *testing.T) {
	rooms := memberRooms{members: map[string]string{"!r:self.test|@bob:remote.test": "join", "!r:self.test|@carol:remote.test": "leave"}}
	f := newTestFederation(t, rooms, nil)
	type set struct {
		room, user string
		typing     bool
		timeout    time.Duration
	}
	var got []set
	f.StartLocal(Local{SetTyping: func(r, u string, typing bool, d time.Duration) { got = append(got, set{r, u, typing, d}) }, StreamPos: f.db.Stream.Current})
	t.Cleanup(f.StopLocal)
	typing := func(origin spec.ServerName, user string) error {
		b, _ := json.Marshal(map[string]any{"room_id": "!r:self.test", "user_id": user, "typing": true})
		return f.inEDUs.onTyping(context.Background(), origin, b)
	}
	if err := typing("remote.test", "@bob:remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := typing("other.test", "@bob:remote.test"); !errors.Is(err, errForeignUser) {
		t.Fatalf("typing for another server's user: %v", err)
	}
	if err := typing("remote.test", "@carol:remote.test"); err == nil {
		t.Fatal("typing of a user who left was accepted")
	}
	if len(got) != 1 || got[0] != (set{"!r:self.test", "@bob:remote.test", true, remoteTypingTimeout}) {
		t.Fatalf("typing recorded: %+v", got)
	}
}

func TestKeyCacheInvalidation(t *testing.T) {
	k := newKeyCache()
	entry := &cachedKeys{devices: map[string]json.RawMessage{"D": json.RawMessage(`{}`)}, fetched: time.Now()}
	tok := k.token("@u:x")
	k.invalidate("@u:x") // an update arrived while the query was in flight
	k.put("@u:x", entry, tok)
	if k.get("@u:x") != nil {
		t.Fatal("a stale answer was cached")
	}
	k.put("@u:x", entry, k.token("@u:x"))
	if k.get("@u:x") != entry {
		t.Fatal("a fresh answer was not cached")
	}
	k.invalidate("@u:x")
	if k.get("@u:x") != nil {
		t.Fatal("invalidation kept the entry")
	}
	old := &cachedKeys{fetched: time.Now().Add(-2 * keyCacheTTL)}
	k.put("@v:x", old, k.token("@v:x"))
	if k.get("@v:x") != nil {
		t.Fatal("an expired entry was served")
	}
	res := &storage.KeysQueryResult{DeviceKeys: map[string]map[string]json.RawMessage{}}
	(&cachedKeys{devices: map[string]json.RawMessage{"A": nil, "B": nil}, master: json.RawMessage(`{}`)}).fill(res, "@u:x", []string{"B"})
	if len(res.DeviceKeys["@u:x"]) != 1 || res.MasterKeys["@u:x"] == nil {
		t.Fatalf("fill: %+v", res)
	}
	if id := toDeviceMessageID("@a:x", "DEV/txn", 0); len(id) != 32 || id != toDeviceMessageID("@a:x", "DEV/txn", 0) || id == toDeviceMessageID("@a:x", "DEV/txn", 1) {
		t.Fatalf("message IDs: %q", id)
	}
}

// mediaFunc is a LocalMedia made of a function.
type mediaFunc func(w http.ResponseWriter, r *http.Request, mediaID string, thumb bool)

func (m mediaFunc) ServeFederation(w http.ResponseWriter, r *http.Request, mediaID string, thumb bool) {
	m(w, r, mediaID, thumb)
}

func TestMultipartMediaResponse(t *testing.T) {
	f := newTestFederation(t, &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{}}, func(c *config.Config) {
		c.Federation.AllowedServers = []string{"remote.test"}
	})
	var asked string
	f.StartLocal(Local{StreamPos: f.db.Stream.Current, Media: mediaFunc(func(w http.ResponseWriter, r *http.Request, mediaID string, thumb bool) {
		asked = fmt.Sprintf("%s thumb=%v timeout_ms=%s", mediaID, thumb, r.URL.Query().Get("timeout_ms"))
		if mediaID == "missing" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"media not found"}`))
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Disposition", `inline; filename="a.txt"`)
		w.Header().Set("Content-Length", "5")
		_, _ = w.Write([]byte("hello"))
	})})
	t.Cleanup(f.StopLocal)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	remote := newTestKey(t, "remote.test")
	remote.trust(t, f)

	req := signedRequest(t, remote, f.serverName, "GET", "/_matrix/federation/v1/media/download/abc?timeout_ms=5", nil)
	req.URL.Scheme, req.URL.Host, req.RequestURI = "http", strings.TrimPrefix(srv.URL, "http://"), ""
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if asked != "abc thumb=false timeout_ms=5" {
		t.Fatalf("media handler asked for %s", asked)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || err != nil || mt != "multipart/mixed" {
		t.Fatalf("download: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	p1, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(p1); string(b) != "{}" || p1.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("metadata part %q", b)
	}
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(p2); string(b) != "hello" || p2.Header.Get("Content-Type") != "text/plain" || fileNameOf(p2.Header.Get("Content-Disposition")) != "a.txt" {
		t.Fatalf("media part %q %v", b, p2.Header)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more than two parts: %v", err)
	}
	if code, body := do(t, srv.URL, signedRequest(t, remote, f.serverName, "GET", "/_matrix/federation/v1/media/download/missing", nil)); code != 404 || errcode(body) != "M_NOT_FOUND" {
		t.Fatalf("missing media: %d %s", code, body)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/_matrix/federation/v1/media/download/abc", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("unsigned media request: %v %v", resp, err)
	}
}

func TestDeviceListUpdateEDU(t *testing.T) {
	f := newTestFederation(t, &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{}}, nil)
	ctx := context.Background()
	for _, u := range []string{"@alice:self.test", "@bob:remote.test"} {
		if err := storage.SetCurrentState(ctx, f.db, storage.CurrentStateRow{RoomID: "!r:self.test", Type: "m.room.member", StateKey: u, EventID: "$" + u, Membership: "join", StreamPos: 1}); err != nil {
			t.Fatal(err)
		}
	}
	changes := func() []storage.DeviceListChange {
		t.Helper()
		cs, err := storage.DeviceListChangesRange(ctx, f.db, 0, f.db.Stream.Current(), 100)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	update := func(origin spec.ServerName, user, device string) error {
		b, _ := json.Marshal(map[string]any{"user_id": user, "device_id": device, "stream_id": 5, "prev_id": []int64{4}})
		return f.inEDUs.onDeviceListUpdate(ctx, origin, b)
	}
	f.ext().keys.put("@bob:remote.test", &cachedKeys{fetched: time.Now()}, f.ext().keys.token("@bob:remote.test"))
	if err := update("other.test", "@bob:remote.test", "D1"); !errors.Is(err, errForeignUser) || len(changes()) != 0 || f.ext().keys.get("@bob:remote.test") == nil {
		t.Fatalf("update from another server: %v, changes %v", err, changes())
	}
	if err := update("remote.test", "@bob:remote.test", "D1"); err != nil {
		t.Fatal(err)
	}
	if cs := changes(); len(cs) != 1 || cs[0].UserID != "@bob:remote.test" || cs[0].DeviceID != "D1" {
		t.Fatalf("changes: %+v", cs)
	}
	if f.ext().keys.get("@bob:remote.test") != nil {
		t.Fatal("the cached keys survived the update")
	}
	// Nobody here shares a room with carol: nothing recorded.
	if err := update("remote.test", "@carol:remote.test", "D2"); err != nil || len(changes()) != 1 {
		t.Fatalf("update for a stranger: %v, %d changes", err, len(changes()))
	}
	b, _ := json.Marshal(map[string]any{"user_id": "@bob:remote.test", "master_key": map[string]any{}})
	if err := f.inEDUs.onSigningKeyUpdate(ctx, "remote.test", b); err != nil {
		t.Fatal(err)
	}
	if cs := changes(); len(cs) != 2 || cs[1].DeviceID != "" {
		t.Fatalf("signing key update: %+v", cs)
	}
}
