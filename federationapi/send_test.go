package federationapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/internal/httpapi"
)

func TestParseTransactionLimits(t *testing.T) {
	pdus := func(n int) string { return "[" + strings.TrimSuffix(strings.Repeat(`{},`, n), ",") + "]" }
	edus := func(n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(`{"edu_type":"x","content":{}},`, n), ",") + "]"
	}
	for body, ok := range map[string]bool{
		`{"pdus":` + pdus(50) + `,"edus":` + edus(100) + `}`: true,
		`{"pdus":` + pdus(51) + `}`:                          false,
		`{"pdus":[],"edus":` + edus(101) + `}`:               false,
		`{"pdus":null}`:                                      true,
		`{"edus":[]}`:                                        true,
		`{"pdus":[1]}`:                                       false,
		`{"pdus":["x"]}`:                                     false,
		`{"pdus":{}}`:                                        false,
		`[]`:                                                 false,
		`not json`:                                           false,
	} {
		_, err := parseTransaction([]byte(body))
		if (err == nil) != ok {
			t.Errorf("parseTransaction(%.60s…) = %v, want ok=%v", body, err, ok)
		}
	}
}

// signedRequest builds an X-Matrix signed request from k to dest.
func signedRequest(t *testing.T, k testKey, dest spec.ServerName, method, path string, content any) *http.Request {
	t.Helper()
	fr := fclient.NewFederationRequest(method, k.name, dest, path)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(k.name, k.id, k.priv); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req to the test server at base.
func do(t *testing.T, base string, req *http.Request) (int, []byte) {
	t.Helper()
	req.URL.Scheme, req.URL.Host = "http", strings.TrimPrefix(base, "http://")
	req.RequestURI = ""
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func errcode(b []byte) string {
	var e httpapi.MatrixError
	_ = json.Unmarshal(b, &e)
	return e.ErrCode
}

func TestSendTransaction(t *testing.T) {
	rooms := &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{"!room:remote.test": gomatrixserverlib.RoomVersionV10}, reject: map[string]error{}}
	var audits atomic.Int32
	f := newTestFederation(t, rooms, func(c *config.Config) {
		c.Federation.AllowedServers = []string{"remote.test", "relay.test", "forger.test"}
	})
	f.SetAuditHook(func(string, spec.ServerName, string) { audits.Add(1) })
	var typing atomic.Int32
	f.HandleEDU("m.typing", func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
		if origin != "remote.test" {
			t.Errorf("EDU origin %s", origin)
		}
		typing.Add(1)
		return nil
	})
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()

	remote := newTestKey(t, "remote.test")
	remote.trust(t, f)
	relay := newTestKey(t, "relay.test")
	relay.trust(t, f)

	good := remote.event(t, "!room:remote.test", "@alice:remote.test", "hello")
	refused := remote.event(t, "!room:remote.test", "@alice:remote.test", "refused by the room server")
	rooms.reject[refused.EventID()] = errors.New("not allowed by auth rules")
	unknownRoom := remote.event(t, "!other:remote.test", "@alice:remote.test", "where")
	// An event claiming a sender on relay.test but signed by remote.test.
	forged := remote.event(t, "!room:remote.test", "@mallory:relay.test", "forged")
	// A server outside the allow-list, relayed through remote.test.
	outsider := newTestKey(t, "outsider.test").event(t, "!room:remote.test", "@eve:outsider.test", "hi")

	txn := map[string]any{
		"origin": "remote.test", "origin_server_ts": 1,
		"pdus": []json.RawMessage{good.JSON(), refused.JSON(), unknownRoom.JSON(), forged.JSON(), outsider.JSON(), good.JSON()},
		"edus": []map[string]any{
			{"edu_type": "m.typing", "content": map[string]any{"room_id": "!room:remote.test", "user_id": "@alice:remote.test", "typing": true}},
			{"edu_type": "org.unknown", "content": map[string]any{}},
		},
	}
	code, body := do(t, srv.URL, signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn1", txn))
	if code != http.StatusOK {
		t.Fatalf("send: %d %s", code, body)
	}
	var resp SendResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if r, ok := resp.PDUs[good.EventID()]; !ok || r.Error != "" {
		t.Errorf("good event: %+v (present %v)", r, ok)
	}
	for id, want := range map[string]string{
		refused.EventID():     "not allowed",
		unknownRoom.EventID(): "unknown room",
		forged.EventID():      "signature",
		outsider.EventID():    "federation policy",
	} {
		if r := resp.PDUs[id]; !strings.Contains(r.Error, want) {
			t.Errorf("event %s: error %q, want it to mention %q", id, r.Error, want)
		}
	}
	if len(resp.PDUs) != 5 {
		t.Errorf("results for %d PDUs, want 5: %s", len(resp.PDUs), body)
	}
	if len(rooms.got) != 2 { // good (once, despite the duplicate) and refused
		t.Errorf("room server got %d events, want 2", len(rooms.got))
	}
	if typing.Load() != 1 {
		t.Errorf("typing EDU delivered %d times", typing.Load())
	}

	// Retrying the transaction returns the same response and processes nothing.
	code, again := do(t, srv.URL, signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn1", txn))
	if code != http.StatusOK || !bytes.Equal(again, body) {
		t.Fatalf("retry: %d %s, want %s", code, again, body)
	}
	if len(rooms.got) != 2 || typing.Load() != 1 {
		t.Fatalf("retry was processed again: %d events, %d EDUs", len(rooms.got), typing.Load())
	}
	// The same ID from another origin is another transaction.
	code, _ = do(t, srv.URL, signedRequest(t, relay, "self.test", "PUT", "/_matrix/federation/v1/send/txn1", map[string]any{"pdus": []any{}}))
	if code != http.StatusOK {
		t.Fatalf("other origin: %d", code)
	}

	// Limits and shape.
	many := make([]json.RawMessage, 51)
	for i := range many {
		many[i] = good.JSON()
	}
	code, body = do(t, srv.URL, signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn2", map[string]any{"pdus": many}))
	if code != http.StatusBadRequest || errcode(body) != "M_BAD_JSON" {
		t.Fatalf("51 PDUs: %d %s", code, body)
	}
	code, body = do(t, srv.URL, signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn3", map[string]any{"origin": "relay.test", "pdus": []any{}}))
	if code != http.StatusForbidden {
		t.Fatalf("body origin mismatch: %d %s", code, body)
	}

	// Authentication.
	forger := testKey{name: "remote.test", id: remote.id, priv: newTestKey(t, "x").priv}
	code, body = do(t, srv.URL, signedRequest(t, forger, "self.test", "PUT", "/_matrix/federation/v1/send/txn4", map[string]any{"pdus": []any{}}))
	if code != http.StatusUnauthorized || errcode(body) != "M_UNAUTHORIZED" {
		t.Fatalf("forged signature: %d %s", code, body)
	}
	req := signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn5", map[string]any{"pdus": []any{}})
	req.Body = io.NopCloser(strings.NewReader(`{"pdus":[],"x":1}`)) // tampered after signing
	req.ContentLength = -1
	if code, body = do(t, srv.URL, req); code != http.StatusUnauthorized {
		t.Fatalf("tampered body: %d %s", code, body)
	}
	req = signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn6", nil)
	req.Header.Del("Authorization")
	if code, body = do(t, srv.URL, req); code != http.StatusUnauthorized || errcode(body) != "M_UNAUTHORIZED" {
		t.Fatalf("unsigned: %d %s", code, body)
	}
	if code, body = do(t, srv.URL, signedRequest(t, remote, "elsewhere.test", "PUT", "/_matrix/federation/v1/send/txn7", map[string]any{"pdus": []any{}})); code != http.StatusUnauthorized || errcode(body) != "M_UNAUTHORIZED" {
		t.Fatalf("wrong destination: %d %s", code, body)
	}

	// Policy: an origin off the allow-list is refused before any key lookup.
	before := audits.Load()
	outsiderKey := newTestKey(t, "outsider.test")
	code, body = do(t, srv.URL, signedRequest(t, outsiderKey, "self.test", "PUT", "/_matrix/federation/v1/send/txn8", map[string]any{"pdus": []any{}}))
	if code != http.StatusForbidden || errcode(body) != "M_FORBIDDEN" {
		t.Fatalf("outsider: %d %s", code, body)
	}
	if audits.Load() != before+1 {
		t.Fatalf("inbound refusal not audited")
	}

	// Oversized body.
	huge := map[string]any{"pdus": []any{}, "pad": strings.Repeat("x", maxSignedBody)}
	if code, body = do(t, srv.URL, signedRequest(t, remote, "self.test", "PUT", "/_matrix/federation/v1/send/txn9", huge)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("huge body: %d %.100s", code, body)
	}
}

func TestSendTransactionRateLimit(t *testing.T) {
	f := newTestFederation(t, &fakeRooms{}, func(c *config.Config) {
		c.Federation.RequestsPerSecond, c.Federation.RequestBurst = 0.01, 2
	})
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	remote := newTestKey(t, "remote.test")
	remote.trust(t, f)
	var codes []int
	for i := range 3 {
		code, _ := do(t, srv.URL, signedRequest(t, remote, "self.test", "PUT", fmt.Sprintf("/_matrix/federation/v1/send/r%d", i), map[string]any{"pdus": []any{}}))
		codes = append(codes, code)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != http.StatusTooManyRequests {
		t.Fatalf("codes %v, want 200 200 429", codes)
	}
}
