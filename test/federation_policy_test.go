package test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/federationapi"
	"enclave/storage"
)

// fedWantHTTP asserts err is an HTTP error with the given status from the
// remote server (not a local refusal or a network failure).
func fedWantHTTP(t *testing.T, what string, err error, status int) {
	t.Helper()
	var he gomatrix.HTTPError
	if !errors.As(err, &he) || he.Code != status {
		t.Fatalf("%s: want HTTP %d from the remote server, got %v", what, status, err)
	}
}

// TestFederationPolicyOutsider: O is not on A's allow-list; C (a partner
// of A) does federate with O. O can neither join A's room through A, nor
// read A's events from A, nor send A events; when O's user gets into the
// room through C, A still rejects O's events and keeps O out of its view
// of the room. Then, with O's address held by a counting listener, A's
// users invite and ban users of O and C's user (whose latest event points
// at O's join) keeps talking: A makes no connection attempt to O at all
// and queues nothing for it.
func TestFederationPolicyOutsider(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, cc := c.Nodes[0], c.Nodes[1]
	o := c.AddNode(storage.SQLite)
	o.Outsider = true
	cc.Configure = func(cfg *config.Config) {
		cfg.Federation.AllowedServers = append(cfg.Federation.AllowedServers, o.IP, o.ServerName)
	}
	c.StartAll()
	ctx := fedCtx(t)
	aName, oName := spec.ServerName(a.ServerName), spec.ServerName(o.ServerName)

	alice := fedUser(t, a, "alice")
	carol := fedUser(t, cc, "carol")
	oscar := fedUser(t, o, "oscar")
	created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "partners only"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	fedJoin(t, carol, room, a)
	firstMsg, err := alice.SendText(ctxT(t), room, "for partners")
	if err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, carol, room, "for partners", 1, 20*time.Second)

	// O cannot join through A.
	if _, err := oscar.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err == nil {
		t.Fatal("the outsider joined A's room through A")
	}
	if n := fedMetric(t, a.Server.Server, "enclave_federation_refused_total", "inbound"); n < 1 {
		t.Fatalf("A counted %v inbound refusals after O's join attempt", n)
	}
	// Nor read A's events from A, nor send it any.
	_, err = o.Fed().Client().GetEvent(ctx, oName, aName, firstMsg.EventID.String())
	fedWantHTTP(t, "O fetching an event from A", err, http.StatusForbidden)
	_, err = o.Fed().Client().Backfill(ctx, oName, aName, room.String(), 10, []string{firstMsg.EventID.String()})
	fedWantHTTP(t, "O backfilling from A", err, http.StatusForbidden)
	_, err = o.Fed().Client().LookupState(ctx, oName, aName, room.String(), firstMsg.EventID.String(), gomatrixserverlib.RoomVersionV10)
	fedWantHTTP(t, "O asking A for the room state", err, http.StatusForbidden)
	code, _ := fedSend(t, c, nodeSigner(o), a, fedTestPDU(t, o, room.String(), "from outside").JSON())
	if code != http.StatusForbidden {
		t.Fatalf("O's /send to A: %d, want 403", code)
	}

	// O's user joins through C, which federates with O. C passes the join
	// on to A, which rejects it: O's user is not in A's view of the room.
	fedJoin(t, oscar, room, cc)
	waitFor(t, "C to pass O's join on to A", 20*time.Second, func() bool {
		return fedMetric(t, a.Server.Server, "enclave_federation_inbound_pdus_total", "rejected") >= 1
	})
	if m := fedMembership(t, alice, room, oscar.UserID.String()); m == "join" {
		t.Fatal("A accepted the outsider's join relayed by C")
	}
	if members, err := alice.JoinedMembers(ctxT(t), room); err != nil {
		t.Fatal(err)
	} else if _, ok := members.Joined[oscar.UserID]; ok {
		t.Fatalf("A lists the outsider as joined: %v", members.Joined)
	}
	fedQueueEmpty(t, cc, o, 20*time.Second)

	// From here on, anything dialling O's address is counted. C stops
	// federating with O too, so a connection can only come from A.
	o.Stop()
	cfg := cc.Config()
	cfg.Federation.AllowedServers = c.allowList()
	if err := cc.Fed().ReloadPolicy(cfg); err != nil {
		t.Fatal(err)
	}
	accepts := fedCountingListener(t, o.ServerName)
	refusedBefore := fedMetric(t, a.Server.Server, "enclave_federation_refused_total", "outbound")

	// The room now mentions O in every way A could act on.
	// An invite must be countersigned by the invitee's server, which A
	// may not contact: it is refused and not stored.
	olive := "@olive:" + o.ServerName
	_, err = alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: id.UserID(olive)})
	wantMatrixErr(t, "inviting a user of O", err, 403, "M_FORBIDDEN")
	if m := fedMembership(t, alice, room, olive); m != "" {
		t.Fatalf("A stored olive's refused invite as %q", m)
	}
	if _, err := alice.BanUser(ctxT(t), room, &mautrix.ReqBanUser{UserID: oscar.UserID, Reason: "not a partner"}); err != nil {
		t.Fatalf("banning O's user: %v", err)
	}
	// carol's message has O's join as its prev event: A fetches the gap
	// from C and cannot verify O's event without O's keys, which it must
	// not fetch.
	if _, err := carol.SendText(ctxT(t), room, "after the outsider"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, alice, room, "after the outsider", 1, 20*time.Second)
	fedSendSeq(t, alice, room, fedSeq("partners-", 5))
	fedWaitTimeline(t, carol, room, "partners-", 5, 20*time.Second)
	fedQueueEmpty(t, a, cc, 10*time.Second)
	time.Sleep(time.Second) // let any stray delivery or retry happen

	if n := accepts.Load(); n != 0 {
		t.Fatalf("A made %d connections to the outsider", n)
	}
	if p, e, err := fedQueueDepth(a, o); err != nil || p+e != 0 {
		t.Fatalf("A queued %d PDUs and %d EDUs for the outsider (%v)", p, e, err)
	}
	if got := fedMetric(t, a.Server.Server, "enclave_federation_refused_total", "outbound"); got < refusedBefore+2 {
		t.Fatalf("A refused %v outbound requests to O (invite and ban), want >= 2", got-refusedBefore)
	}
	if m := fedMembership(t, alice, room, oscar.UserID.String()); m != "ban" {
		t.Fatalf("O's user is %q in A's room, want ban", m)
	}
}

// TestFederationAllowListServerNames: allow-list entries written as the
// full server name (host:port, as in user IDs) admit exactly that server;
// the same host on another port is refused both ways; and an entry that
// can never match stops the server at start with an error naming it.
func TestFederationAllowListServerNames(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.SQLite)
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	a.Configure = func(cfg *config.Config) {
		cfg.Federation.AllowedServers = []string{b.ServerName, cc.IP + ":1"}
	}
	b.Configure = func(cfg *config.Config) { cfg.Federation.AllowedServers = []string{a.ServerName} }

	// The config file takes full server names; an entry that can never
	// match is an error naming it.
	for _, tc := range []struct{ entry, wantErr string }{
		{b.ServerName, ""},
		{b.IP + ":", `"` + b.IP + `:" can never match a server name: empty port`},
		{"matrix.bravo.gov:https", `"matrix.bravo.gov:https" can never match a server name`},
	} {
		dir := t.TempDir()
		yaml := "federation:\n  enabled: true\n  allowed_servers: [\"" + tc.entry + "\"]\n"
		if err := os.WriteFile(filepath.Join(dir, "enclave.yaml"), []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(filepath.Join(dir, "enclave.yaml"), dir)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Fatalf("allowed_servers [%q]: %v", tc.entry, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), "federation.allowed_servers") || !strings.Contains(err.Error(), tc.wantErr)):
			t.Fatalf("allowed_servers [%q]: %v, want an error naming it (%s)", tc.entry, err, tc.wantErr)
		}
	}

	c.StartAll()
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, cc, "carol")
	created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	fedJoin(t, bob, room, a)
	if _, err := alice.SendText(ctxT(t), room, "to bravo"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, bob, room, "to bravo", 1, 20*time.Second)
	if _, err := bob.SendText(ctxT(t), room, "to alpha"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, alice, room, "to alpha", 1, 20*time.Second)

	// C is allowed only on another port: refused inbound and outbound.
	if _, err := carol.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err == nil {
		t.Fatal("C joined through A although A allows C's host only on another port")
	}
	if m := fedMembership(t, alice, room, carol.UserID.String()); m != "" {
		t.Fatalf("A has carol as %q", m)
	}
	_, err = a.Fed().Client().GetServerKeys(fedCtx(t), spec.ServerName(cc.ServerName))
	if !errors.Is(err, federationapi.ErrRefused) {
		t.Fatalf("A calling C: %v, want a policy refusal", err)
	}
}
