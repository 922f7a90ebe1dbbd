package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// TestFederationSecurityRejects sends A hand-built /send transactions into
// a room A hosts (alice on A at 100, bob on B at 0 after a demotion from
// 50; C is an allowed server with nobody in the room). Every bad PDU is
// refused with a per-PDU error: forged event signatures, events from C's
// user who is not in the room (or C posing as bob), events failing the
// auth rules against their own auth events, and an
// event citing stale auth events that fails against the state before it.
// An event forked from before the demotion passes those checks but is
// soft-failed against the current state. Throughout, A's room state (and
// the timeline alice sees) does not change, and the room still works.
func TestFederationSecurityRejects(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.SQLite)
	c.StartAll()
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "guarded"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	fedJoin(t, bob, room, a)
	promote := fedSetUserLevel(t, alice, room, bob.UserID, 50)
	fedSetUserLevel(t, alice, room, bob.UserID, 0)
	if _, err := alice.SendText(ctxT(t), room, "before the attacks"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, bob, room, "before the attacks", 1, 20*time.Second)

	tip := fedTip(t, a, room)
	bobID := bob.UserID.String()
	bSigner, cSigner := nodeSigner(b), nodeSigner(cc)
	aliceMember := tip.State["m.room.member|"+alice.UserID.String()]
	bobAuth := tip.authIDs("m.room.create|", "m.room.power_levels|", "m.room.member|"+bobID)
	msg := func(sender, text string, auth []string) gomatrixserverlib.ProtoEvent {
		return gomatrixserverlib.ProtoEvent{
			SenderID: sender, RoomID: room.String(), Type: "m.room.message",
			PrevEvents: tip.Prev, AuthEvents: auth, Depth: tip.Depth,
			Content: spec.RawJSON(`{"msgtype":"m.text","body":"` + text + `"}`),
		}
	}
	state := func(sender, typ, key string, content any, auth []string) gomatrixserverlib.ProtoEvent {
		b, _ := json.Marshal(content)
		return gomatrixserverlib.ProtoEvent{
			SenderID: sender, RoomID: room.String(), Type: typ, StateKey: &key,
			PrevEvents: tip.Prev, AuthEvents: auth, Depth: tip.Depth, Content: b,
		}
	}
	var pl map[string]any
	if err := json.Unmarshal(tip.State["m.room.power_levels|"].Content(), &pl); err != nil {
		t.Fatal(err)
	}
	pl["users"].(map[string]any)[bobID] = 100

	stateBefore := fedStateIDs(t, alice, room)
	var bad []string // event IDs that must never show

	// sendOne sends one PDU from signer's server and returns A's error for it.
	sendOne := func(what string, from fedSigner, ev []byte, eventID string) string {
		t.Helper()
		code, res := fedSend(t, c, from, a, ev)
		if code != http.StatusOK {
			t.Fatalf("%s: /send answered %d", what, code)
		}
		e, ok := res[eventID]
		if !ok {
			t.Fatalf("%s: no result for %s in %v", what, eventID, res)
		}
		return e
	}
	wantRejected := func(what string, from fedSigner, ev gomatrixserverlib.PDU, rawJSON []byte, reason string) {
		t.Helper()
		if rawJSON == nil {
			rawJSON = ev.JSON()
		}
		e := sendOne(what, from, rawJSON, ev.EventID())
		if e == "" || !strings.Contains(strings.ToLower(e), reason) {
			t.Fatalf("%s: A answered %q, want a rejection mentioning %q", what, e, reason)
		}
		bad = append(bad, ev.EventID())
	}

	// 1. Forged signatures: bob's event signed with a key that is not B's,
	// under B's key ID and under an unknown one.
	_, forged, _ := ed25519.GenerateKey(rand.Reader)
	wantRejected("event signed with a forged key", bSigner,
		fedEvent(t, fedSigner{Name: bSigner.Name, KeyID: bSigner.KeyID, Key: forged}, tip.Ver, msg(bobID, "forged", bobAuth)), nil, "signature")
	wantRejected("event signed under an unknown key ID", bSigner,
		fedEvent(t, fedSigner{Name: bSigner.Name, KeyID: "ed25519:fake", Key: forged}, tip.Ver, msg(bobID, "fake key", bobAuth)), nil, "signature")
	// The same forged event in a request whose own signature is forged
	// never reaches the room at all.
	ev := fedEvent(t, fedSigner{Name: bSigner.Name, KeyID: bSigner.KeyID, Key: forged}, tip.Ver, msg(bobID, "forged request", bobAuth))
	if code, _ := fedSend(t, c, fedSigner{Name: bSigner.Name, KeyID: bSigner.KeyID, Key: forged}, a, ev.JSON()); code != http.StatusUnauthorized {
		t.Fatalf("transaction with a forged request signature: %d, want 401", code)
	}
	bad = append(bad, ev.EventID())

	// 2. A wrong content hash is not a refusal: the event is redacted
	// (TestFederationContentHashRedacted).

	// 3. A server that is not in the room: C's user posts, takes power,
	// and C poses as bob.
	charlie := "@charlie:" + cc.ServerName
	cAuth := tip.authIDs("m.room.create|", "m.room.power_levels|")
	wantRejected("message from a server not in the room", cSigner, fedEvent(t, cSigner, tip.Ver, msg(charlie, "intruder", cAuth)), nil, "rejected")
	wantRejected("power levels from a server not in the room", cSigner, fedEvent(t, cSigner, tip.Ver,
		state(charlie, "m.room.power_levels", "", pl, cAuth)), nil, "rejected")
	wantRejected("C signing an event as bob", cSigner, fedEvent(t, cSigner, tip.Ver, msg(bobID, "impostor", bobAuth)), nil, "signature")
	if code, _ := fedSignedRequest(t, c, cSigner.Name, cSigner.KeyID, cSigner.Key, spec.ServerName(a.ServerName), "GET",
		"/_matrix/federation/v1/state_ids/"+url.PathEscape(room.String())+"?event_id="+url.QueryEscape(tip.Prev[0]), nil); code != http.StatusForbidden {
		t.Fatalf("C reading the room state: %d, want 403", code)
	}

	// 4. Auth rules, bob signing genuinely.
	wantRejected("bob raising himself to 100", bSigner, fedEvent(t, bSigner, tip.Ver,
		state(bobID, "m.room.power_levels", "", pl, bobAuth)), nil, "rejected")
	wantRejected("bob banning alice", bSigner, fedEvent(t, bSigner, tip.Ver,
		state(bobID, "m.room.member", alice.UserID.String(), map[string]any{"membership": "ban"},
			append(bobAuth, aliceMember.EventID()))), nil, "rejected")
	// Stale auth events: the power levels from when bob had 50 pass the
	// event's own auth check, not the state before it.
	staleAuth := []string{tip.State["m.room.create|"].EventID(), promote.String(), tip.State["m.room.member|"+bobID].EventID()}
	wantRejected("bob renaming the room citing his old power", bSigner, fedEvent(t, bSigner, tip.Ver,
		state(bobID, "m.room.name", "", map[string]any{"name": "stale"}, staleAuth)), nil, "rejected")

	// 5. Forked from before the demotion: valid at its place in the DAG,
	// soft-failed against the current state (accepted, never applied).
	promoteEv, err := a.Rooms.Events(ctxT(t), []string{promote.String()})
	if err != nil || len(promoteEv) != 1 {
		t.Fatalf("loading the promotion: %v", err)
	}
	fork := state(bobID, "m.room.name", "", map[string]any{"name": "from the past"}, staleAuth)
	fork.PrevEvents, fork.Depth = []string{promote.String()}, promoteEv[0].Depth()+1
	forkEv := fedEvent(t, bSigner, tip.Ver, fork)
	if e := sendOne("event forked before the demotion", bSigner, forkEv.JSON(), forkEv.EventID()); e != "" {
		t.Fatalf("soft-failed event answered %q: soft failure is not a rejection", e)
	}
	softFailed := forkEv.EventID()

	// Nothing changed: same state, none of the events visible.
	if diff := fedStateDiff(stateBefore, fedStateIDs(t, alice, room)); len(diff) != 0 {
		t.Fatalf("A's room state changed:\n%v", diff)
	}
	tl := fedTimeline(t, alice, room)
	seen := map[id.EventID]bool{}
	for _, e := range tl {
		seen[e.ID] = true
	}
	resp, err := alice.SyncRequest(ctxT(t), 0, "", timelineFilter(t, alice, 1000), false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.Rooms.Join[room].Timeline.Events {
		seen[e.ID] = true
	}
	if seen[id.EventID(softFailed)] {
		t.Fatal("the soft-failed event reached alice's /messages or /sync")
	}
	for _, evID := range bad { // never stored at all
		if seen[id.EventID(evID)] {
			t.Fatalf("event %s is in alice's timeline", evID)
		}
		r := raw(t, "GET", a.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/event/"+url.PathEscape(evID), alice.AccessToken, nil)
		if r.Status != http.StatusNotFound {
			t.Fatalf("GET event %s: %d %s, want 404", evID, r.Status, r.Raw)
		}
	}
	for _, e := range tl {
		if e.Type == event.EventMessage && body(e) != "before the attacks" {
			t.Fatalf("unexpected message in alice's timeline: %q", body(e))
		}
	}

	// And the room still works both ways.
	if _, err := alice.SendText(ctxT(t), room, "still here"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, bob, room, "still here", 1, 20*time.Second)
	if _, err := bob.SendText(ctxT(t), room, "me too"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, alice, room, "me too", 1, 20*time.Second)
	fedWaitSameState(t, alice, bob, room, 10*time.Second)
}
