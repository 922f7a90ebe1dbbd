package test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
	"enclave/federationapi"
	"enclave/internal/server"
	"enclave/storage"
)

// Federation transport tests: two (or three) real servers on loopback
// addresses, talking TLS 1.3 through the test PKI, one on SQLite and one
// on PostgreSQL.

func fedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fedSignedRequest signs a federation request as origin with key and
// sends it over TLS to dest.
func fedSignedRequest(t *testing.T, c *FedCluster, origin spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey, dest spec.ServerName, method, path string, content any) (int, []byte) {
	t.Helper()
	fr := fclient.NewFederationRequest(method, origin, dest, path)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(origin, keyID, key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme = "https"
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func fedErrCode(b []byte) string {
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	return e.ErrCode
}

func TestFederationKeys(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	ctx := fedCtx(t)
	bName := spec.ServerName(b.ServerName)
	bPub := b.Key.Public().(ed25519.PublicKey)

	// Direct fetch: B's self-signed keys, checked as the spec requires.
	keys, err := a.Fed().Client().GetServerKeys(ctx, bName)
	if err != nil {
		t.Fatalf("fetching B's keys: %v", err)
	}
	if checks, _ := gomatrixserverlib.CheckKeys(bName, time.Now(), keys); !checks.AllChecksOK {
		t.Fatalf("B's key response fails checks: %+v", checks)
	}
	if got := keys.VerifyKeys[gomatrixserverlib.KeyID(b.KeyID)].Key; !bytes.Equal(got, bPub) {
		t.Fatalf("B published %x, want %x", got, bPub)
	}
	if until := keys.ValidUntilTS.Time(); until.Before(time.Now().Add(20*time.Hour)) || until.After(time.Now().Add(25*time.Hour)) {
		t.Fatalf("valid_until_ts %v is not about a day away", until)
	}

	// A's key ring verifies JSON signed by B (fetching B's key) and by A
	// itself (locally).
	verify := func(n *FedNode, signer *FedNode, msg string) error {
		signed, err := gomatrixserverlib.SignJSON(signer.ServerName, gomatrixserverlib.KeyID(signer.KeyID), signer.Key, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		res, err := n.Fed().Verifier().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
			ServerName: spec.ServerName(signer.ServerName), Message: signed, AtTS: spec.AsTimestamp(time.Now()),
			ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
		}})
		if err != nil {
			return err
		}
		return res[0].Error
	}
	if err := verify(a, b, `{"hello":"from b"}`); err != nil {
		t.Fatalf("A verifying B: %v", err)
	}
	if err := verify(b, a, `{"hello":"from a"}`); err != nil {
		t.Fatalf("B verifying A: %v", err)
	}
	if err := verify(a, a, `{"hello":"self"}`); err != nil {
		t.Fatalf("A verifying itself: %v", err)
	}

	// A as a notary: B's response, signed by B and co-signed by A.
	for _, q := range []struct{ method, path, body string }{
		{"POST", "/_matrix/key/v2/query", fmt.Sprintf(`{"server_keys":{%q:{%q:{"minimum_valid_until_ts":%d}}}}`, b.ServerName, b.KeyID, time.Now().UnixMilli())},
		{"GET", "/_matrix/key/v2/query/" + b.ServerName, ""},
	} {
		req, _ := http.NewRequest(q.method, a.FedURL(q.path), strings.NewReader(q.body))
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			ServerKeys []gomatrixserverlib.ServerKeys `json:"server_keys"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(out.ServerKeys) != 1 {
			t.Fatalf("%s %s: %d %v %+v", q.method, q.path, resp.StatusCode, err, out)
		}
		k := out.ServerKeys[0]
		if checks, _ := gomatrixserverlib.CheckKeys(bName, time.Now(), k); !checks.AllChecksOK {
			t.Fatalf("notary answer no longer verifies as B's: %+v", checks)
		}
		aPub := a.Key.Public().(ed25519.PublicKey)
		if err := gomatrixserverlib.VerifyJSON(a.ServerName, gomatrixserverlib.KeyID(a.KeyID), aPub, k.Raw); err != nil {
			t.Fatalf("notary answer not co-signed by A: %v", err)
		}
	}

	// Rotation: after generate-keys --force, B publishes the new key and
	// keeps the old one under old_verify_keys.
	oldID := b.KeyID
	b.Stop()
	newID, _, err := config.GenerateSigningKey(b.Config().SigningKey, true)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	keys, err = a.Fed().Client().GetServerKeys(ctx, bName)
	if err != nil {
		t.Fatal(err)
	}
	if checks, _ := gomatrixserverlib.CheckKeys(bName, time.Now(), keys); !checks.AllChecksOK {
		t.Fatalf("rotated key response fails checks: %+v", checks)
	}
	if _, ok := keys.VerifyKeys[gomatrixserverlib.KeyID(newID)]; !ok || len(keys.VerifyKeys) != 1 {
		t.Fatalf("verify_keys after rotation: %+v, want only %s", keys.VerifyKeys, newID)
	}
	old, ok := keys.OldVerifyKeys[gomatrixserverlib.KeyID(oldID)]
	if !ok || !bytes.Equal(old.Key, bPub) || old.ExpiredTS == 0 || old.ExpiredTS.Time().After(time.Now()) {
		t.Fatalf("old_verify_keys after rotation: %+v", keys.OldVerifyKeys)
	}
}

func TestFederationForgedSignature(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	aName, bName := spec.ServerName(a.ServerName), spec.ServerName(b.ServerName)
	body := map[string]any{"origin": a.ServerName, "origin_server_ts": 1, "pdus": []any{}}

	_, forgedKey, _ := ed25519.GenerateKey(rand.Reader)
	code, resp := fedSignedRequest(t, c, aName, gomatrixserverlib.KeyID(a.KeyID), forgedKey, bName, "PUT", "/_matrix/federation/v1/send/forged1", body)
	if code != http.StatusUnauthorized || fedErrCode(resp) != "M_UNAUTHORIZED" {
		t.Fatalf("forged signature: %d %s", code, resp)
	}
	// An unknown key ID of a real server fails the same way.
	code, resp = fedSignedRequest(t, c, aName, "ed25519:nosuch", forgedKey, bName, "PUT", "/_matrix/federation/v1/send/forged2", body)
	if code != http.StatusUnauthorized || fedErrCode(resp) != "M_UNAUTHORIZED" {
		t.Fatalf("unknown key id: %d %s", code, resp)
	}
	// The genuine key passes.
	code, resp = fedSignedRequest(t, c, aName, gomatrixserverlib.KeyID(a.KeyID), a.Key, bName, "PUT", "/_matrix/federation/v1/send/genuine", body)
	if code != http.StatusOK {
		t.Fatalf("genuine signature: %d %s", code, resp)
	}
	// Unsigned requests are refused too.
	req, _ := http.NewRequest("PUT", b.FedURL("/_matrix/federation/v1/send/unsigned"), strings.NewReader(`{"pdus":[]}`))
	req.Header.Set("Content-Type", "application/json")
	r, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized || fedErrCode(rb) != "M_UNAUTHORIZED" {
		t.Fatalf("unsigned: %d %s", r.StatusCode, rb)
	}
	// The listener speaks TLS 1.3 only.
	tc := c.HTTPClient().Transport.(*http.Transport).TLSClientConfig.Clone()
	tc.MinVersion, tc.MaxVersion = 0x0303, 0x0303 // TLS 1.2
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	if _, err := old.Get(b.FedURL("/_matrix/federation/v1/version")); err == nil {
		t.Fatal("federation listener accepted TLS 1.2")
	}
}

// fedCountingListener accepts and counts connections on addr.
func fedCountingListener(t *testing.T, addr string) *atomic.Int32 {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			conn.Close()
		}
	}()
	return &n
}

func TestFederationPolicyRefusal(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	outsider := c.AddNode(storage.SQLite)
	outsider.Outsider = true
	a, b := c.Nodes[0], c.Nodes[1]
	a.Start()
	b.Start()
	ctx := fedCtx(t)
	var mu sync.Mutex
	var audited []string
	a.Fed().SetAuditHook(func(action string, server spec.ServerName, detail string) {
		mu.Lock()
		defer mu.Unlock()
		audited = append(audited, action+" "+string(server))
	})
	oName := spec.ServerName(outsider.ServerName)

	// Inbound: a request from a server off the allow-list is refused with
	// 403 before its signature is even looked at.
	_, oKey, _ := ed25519.GenerateKey(rand.Reader)
	code, resp := fedSignedRequest(t, c, oName, "ed25519:o", oKey, spec.ServerName(a.ServerName), "PUT", "/_matrix/federation/v1/send/o1", map[string]any{"pdus": []any{}})
	if code != http.StatusForbidden || fedErrCode(resp) != "M_FORBIDDEN" {
		t.Fatalf("outsider inbound: %d %s", code, resp)
	}

	// Outbound: nothing reaches the outsider's address, whichever way A tries.
	accepts := fedCountingListener(t, outsider.ServerName)
	if _, err := a.Fed().RemoteVersion(ctx, oName); !errors.Is(err, federationapi.ErrRefused) {
		t.Fatalf("version to outsider: %v", err)
	}
	if _, err := a.Fed().Client().GetServerKeys(ctx, oName); !errors.Is(err, federationapi.ErrRefused) {
		t.Fatalf("keys from outsider: %v", err)
	}
	if _, err := a.Fed().Client().SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: "x", Origin: spec.ServerName(a.ServerName), Destination: oName}); !errors.Is(err, federationapi.ErrRefused) {
		t.Fatalf("transaction to outsider: %v", err)
	}
	pdu := fedTestPDU(t, a, "!policy:"+a.ServerName, "to the outsider")
	if err := a.Fed().SendPDU(ctx, []spec.ServerName{oName, spec.ServerName(b.ServerName)}, pdu); err != nil {
		t.Fatal(err)
	}
	if err := a.Fed().SendEDU(ctx, []spec.ServerName{oName}, gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// Verifying a signature "from" the outsider does not fetch its keys either.
	signed, _ := gomatrixserverlib.SignJSON(string(oName), "ed25519:o", oKey, []byte(`{}`))
	res, err := a.Fed().Verifier().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{ServerName: oName, Message: signed, AtTS: spec.AsTimestamp(time.Now()), ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck}})
	if err != nil || res[0].Error == nil {
		t.Fatalf("outsider signature verified: %v %v", err, res)
	}
	p, e, err := storage.QueueDepth(ctx, a.DB, outsider.ServerName)
	if err != nil || p+e != 0 {
		t.Fatalf("outsider queued %d/%d %v", p, e, err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := accepts.Load(); n != 0 {
		t.Fatalf("%d connections reached the refused server", n)
	}
	if got := fedMetric(t, a.Server.Server, "enclave_federation_refused_total", "outbound"); got < 6 {
		t.Fatalf("outbound refusals metric %v, want >= 6", got)
	}
	if got := fedMetric(t, a.Server.Server, "enclave_federation_refused_total", "inbound"); got != 1 {
		t.Fatalf("inbound refusals metric %v, want 1", got)
	}
	mu.Lock()
	defer mu.Unlock()
	var inbound, outbound int
	for _, s := range audited {
		switch s {
		case "federation.inbound_refused " + outsider.ServerName:
			inbound++
		case "federation.outbound_refused " + outsider.ServerName:
			outbound++
		default:
			t.Errorf("unexpected audit record %q", s)
		}
	}
	if inbound != 1 || outbound < 6 {
		t.Fatalf("audited %d inbound and %d outbound refusals: %v", inbound, outbound, audited)
	}
}

// fedMetric reads a counter with one label value from the registry.
func fedMetric(t *testing.T, s *server.Server, name, label string) float64 {
	t.Helper()
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// fedTestPDU builds a message event signed by n's key.
func fedTestPDU(t *testing.T, n *FedNode, roomID, body string) gomatrixserverlib.PDU {
	t.Helper()
	eb := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:" + n.ServerName, RoomID: roomID, Type: "m.room.message",
		PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1,
		Content: spec.RawJSON(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body)),
	})
	ev, err := eb.Build(time.Now(), spec.ServerName(n.ServerName), gomatrixserverlib.KeyID(n.KeyID), n.Key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

const fedCountEDU = "org.enclave.test.count"

// fedCountEDUs has n count the test EDUs it receives, from its first request.
func fedCountEDUs(n *FedNode) *atomic.Int32 {
	var c atomic.Int32
	n.BeforeStart = func(s *server.Server) {
		s.Federation.HandleEDU(fedCountEDU, func(context.Context, spec.ServerName, json.RawMessage) error {
			c.Add(1)
			return nil
		})
	}
	return &c
}

// A PDU and an EDU queued for a server that is down survive the sender's
// restart and are delivered exactly once when the destination comes up.
func TestFederationQueuePersistence(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		other := storage.Postgres
		if d == storage.Postgres {
			other = storage.SQLite
		}
		c := NewFedCluster(t, d, other)
		sender, dest := c.Nodes[0], c.Nodes[1]
		received := fedCountEDUs(dest)
		sender.Start()
		ctx := fedCtx(t)
		destName := spec.ServerName(dest.ServerName)

		pdu := fedTestPDU(t, sender, "!queue:"+sender.ServerName, "queued")
		if err := sender.Fed().SendPDU(ctx, []spec.ServerName{destName}, pdu); err != nil {
			t.Fatal(err)
		}
		if err := sender.Fed().SendEDU(ctx, []spec.ServerName{destName}, gomatrixserverlib.EDU{Type: fedCountEDU, Content: []byte(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // let the worker fail against the closed port
		sender.Stop()
		sender.Start()
		p, e, err := storage.QueueDepth(ctx, sender.DB, dest.ServerName)
		if err != nil || p != 1 || e != 1 {
			t.Fatalf("queue after restart: %d PDUs, %d EDUs, %v", p, e, err)
		}

		dest.Start()
		// The destination talking to the sender cuts the sender's backoff short.
		if err := dest.Fed().SendEDU(ctx, []spec.ServerName{spec.ServerName(sender.ServerName)}, gomatrixserverlib.EDU{Type: "org.enclave.test.hello", Content: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "delivery", 20*time.Second, func() bool { return received.Load() >= 1 })
		waitFor(t, "the sender's queue to drain", 10*time.Second, func() bool {
			p, e, err := storage.QueueDepth(ctx, sender.DB, dest.ServerName)
			return err == nil && p+e == 0
		})
		time.Sleep(500 * time.Millisecond)
		if n := received.Load(); n != 1 {
			t.Fatalf("EDU delivered %d times", n)
		}
		rows, err := dest.DB.QueryContext(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1`, sender.ServerName)
		if err != nil {
			t.Fatal(err)
		}
		var responses []string
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				t.Fatal(err)
			}
			responses = append(responses, r)
		}
		rows.Close()
		// The PDU arrived in exactly one transaction (the EDU may travel in
		// another when the worker wakes between the two enqueues).
		answering := 0
		for _, r := range responses {
			if strings.Contains(r, pdu.EventID()) {
				answering++
			}
		}
		if answering != 1 {
			t.Fatalf("transactions received: %v, want exactly one answering %s", responses, pdu.EventID())
		}
		if got := fedMetric(t, sender.Server.Server, "enclave_federation_transactions_sent_total", "ok"); got < 1 {
			t.Fatalf("transactions_sent_total{result=ok} = %v", got)
		}
	})
}

func TestFederationTxnIdempotency(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, b := c.Nodes[0], c.Nodes[1]
	received := fedCountEDUs(b)
	c.StartAll()
	ctx := fedCtx(t)
	aName, bName := spec.ServerName(a.ServerName), spec.ServerName(b.ServerName)

	v, err := a.Fed().RemoteVersion(ctx, bName)
	if err != nil || v.Server.Name != "Enclave" || v.Server.Version == "" {
		t.Fatalf("version: %+v %v", v, err)
	}

	pdu := fedTestPDU(t, a, "!nowhere:"+a.ServerName, "unknown room")
	txn := gomatrixserverlib.Transaction{
		TransactionID: "same-txn", Origin: aName, Destination: bName, OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs: []json.RawMessage{pdu.JSON()},
		EDUs: []gomatrixserverlib.EDU{{Type: fedCountEDU, Content: []byte(`{"n":1}`)}},
	}
	first, err := a.Fed().Client().SendTransaction(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := first.PDUs[pdu.EventID()]; !ok || !strings.Contains(r.Error, "unknown room") {
		t.Fatalf("PDU for an unknown room: %+v", first.PDUs)
	}
	second, err := a.Fed().Client().SendTransaction(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Fatalf("retry answered %+v, first %+v", second, first)
	}
	if n := received.Load(); n != 1 {
		t.Fatalf("EDU processed %d times", n)
	}
	txn.TransactionID = "next-txn"
	if _, err := a.Fed().Client().SendTransaction(ctx, txn); err != nil {
		t.Fatal(err)
	}
	if n := received.Load(); n != 2 {
		t.Fatalf("new transaction: EDU processed %d times in all", n)
	}
}

// With federation.key_notaries set, keys are fetched only through the
// notary: A verifies B's signature while B is down (the notary answers
// from its cache), and cannot fetch a new key of B's while the notary is
// down even though B is up.
func TestFederationKeyNotary(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.SQLite)
	a, b, notary := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	ctx := fedCtx(t)
	notary.Start()
	b.Start()
	pin := fmt.Sprintf("%s %s=%s", notary.ServerName, notary.KeyID, base64.RawStdEncoding.EncodeToString(notary.Key.Public().(ed25519.PublicKey)))
	a.Configure = func(cfg *config.Config) { cfg.Federation.KeyNotaries = []string{pin} }

	// The notary learns B's keys.
	resp, err := c.HTTPClient().Get(notary.FedURL("/_matrix/key/v2/query/" + b.ServerName))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	bKeyID, bKey := gomatrixserverlib.KeyID(b.KeyID), b.Key
	b.Stop()

	a.Start()
	verifyB := func(keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) error {
		signed, err := gomatrixserverlib.SignJSON(b.ServerName, keyID, key, []byte(`{"via":"notary"}`))
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.Fed().Verifier().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
			ServerName: spec.ServerName(b.ServerName), Message: signed, AtTS: spec.AsTimestamp(time.Now()),
			ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
		}})
		if err != nil {
			return err
		}
		return res[0].Error
	}
	if err := verifyB(bKeyID, bKey); err != nil {
		t.Fatalf("verifying B through the notary while B is down: %v", err)
	}

	// B rotates its key and comes back; the notary goes away. A must not
	// fall back to asking B directly.
	newID, newKey, err := config.GenerateSigningKey(b.Config().SigningKey, true)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	notary.Stop()
	if err := verifyB(gomatrixserverlib.KeyID(newID), newKey); err == nil {
		t.Fatal("A fetched B's new key without the notary")
	}
	// B itself is reachable: the failure above was the notary-only rule.
	if _, err := a.Fed().Client().GetServerKeys(ctx, spec.ServerName(b.ServerName)); err != nil {
		t.Fatalf("B's keys are not reachable directly: %v", err)
	}
}
