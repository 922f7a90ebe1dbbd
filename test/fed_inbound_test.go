package test

import (
	"encoding/json"
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

// fedWantNoEvent asserts cli's server does not have eventID in room.
func fedWantNoEvent(t *testing.T, cli *mautrix.Client, room, eventID, what string) {
	t.Helper()
	r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(eventID), cli.AccessToken, nil)
	if r.Status != 404 {
		t.Fatalf("%s: %s's server has %s (%d %s), want 404", what, cli.UserID, eventID, r.Status, r.Raw)
	}
}

// TestFederationServerACLInbound: once a room's m.room.server_acl denies
// the peer's server, /send refuses the peer's PDUs for that room on the
// room's host (A, SQLite) and on a server that joined after the ACL (C,
// PostgreSQL), also when an allowed server relays them, and A ignores its
// typing EDU for the room; the peer's events and typing in another room
// still arrive.
func TestFederationServerACLInbound(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	peer := c.AddPeer()
	c.StartAll()
	a, cc := c.Nodes[0], c.Nodes[1]
	aName, cName := spec.ServerName(a.ServerName), spec.ServerName(cc.ServerName)
	alice := fedUser(t, a, "alice")
	charlie := fedUser(t, cc, "charlie")
	mk := func() string {
		created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		return created.RoomID.String()
	}
	room, sentinel := mk(), mk()
	pat := peer.UserID("pat")
	r := peer.Join(t, aName, room, pat)
	rs := peer.Join(t, aName, sentinel, pat)
	fedJoin(t, charlie, id.RoomID(sentinel), a)

	host, _, _ := strings.Cut(string(peer.ServerName), ":")
	acl, err := alice.SendStateEvent(ctxT(t), id.RoomID(room), event.StateServerACL, "", map[string]any{
		"allow": []string{"*"}, "deny": []string{host}, "allow_ip_literals": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	peer.WaitPDU(t, 20*time.Second, "with the ACL", func(e gomatrixserverlib.PDU) bool { return e.EventID() == acl.EventID.String() })
	fedJoin(t, charlie, id.RoomID(room), a)
	peer.WaitPDU(t, 20*time.Second, "with charlie's join", func(e gomatrixserverlib.PDU) bool {
		return e.Type() == "m.room.member" && e.StateKey() != nil && *e.StateKey() == charlie.UserID.String()
	})

	blocked := r.Message(t, pat, "I should be blocked")
	for _, dest := range []spec.ServerName{aName, cName} {
		res := peer.SendPDUs(t, dest, blocked)
		if e := res[blocked.EventID()]; !strings.Contains(e, "server ACL") {
			t.Fatalf("%s answered %q for the ACL-denied server's event, want an ACL refusal", dest, e)
		}
	}
	// Relayed by C, an allowed server: still refused by A.
	code, res := fedSend(t, c, nodeSigner(cc), a, blocked.JSON())
	if code != 200 || !strings.Contains(res[blocked.EventID()], "server ACL") {
		t.Fatalf("A answered %d %v for the denied server's event relayed by C", code, res)
	}
	visible := rs.Message(t, pat, "I should be visible")
	for _, dest := range []spec.ServerName{aName, cName} {
		if res := peer.SendPDUs(t, dest, visible); res[visible.EventID()] != "" {
			t.Fatalf("%s refused the peer's event in a room without an ACL: %q", dest, res[visible.EventID()])
		}
	}
	fedWaitTimeline(t, alice, id.RoomID(sentinel), "I should be visible", 1, 20*time.Second)
	fedWaitTimeline(t, charlie, id.RoomID(sentinel), "I should be visible", 1, 20*time.Second)
	fedWantNoEvent(t, alice, room, blocked.EventID(), "ACL-denied event")
	fedWantNoEvent(t, charlie, room, blocked.EventID(), "ACL-denied event")

	// EDUs too: pat typing in both rooms shows only in the room without
	// an ACL.
	typing := func(roomID string) gomatrixserverlib.EDU {
		b, _ := json.Marshal(map[string]any{"room_id": roomID, "user_id": pat, "typing": true})
		return gomatrixserverlib.EDU{Type: "m.typing", Content: b}
	}
	peer.SendRaw(t, aName, nil, []gomatrixserverlib.EDU{typing(room), typing(sentinel)})
	typingIn := func(resp *mautrix.RespSync, roomID string) bool {
		for _, e := range resp.Rooms.Join[id.RoomID(roomID)].Ephemeral.Events {
			if e.Type.Type == "m.typing" && strings.Contains(string(e.Content.VeryRaw), pat) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := alice.SyncRequest(ctxT(t), 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if typingIn(resp, room) {
			t.Fatal("A shows the ACL-denied server's user typing")
		}
		if typingIn(resp, sentinel) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A never showed pat typing in the room without an ACL")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, cli := range []*mautrix.Client{alice, charlie} {
		var got map[string]any
		if err := cli.StateEvent(ctxT(t), id.RoomID(room), event.StateServerACL, "", &got); err != nil || got["deny"] == nil {
			t.Fatalf("%s's server ACL state: %v %v", cli.UserID, got, err)
		}
	}
}

// TestFederationRejectsEventsWithRejectedAuthEvents: the peer sends A a
// power-levels event its user may not send (R, rejected), then events
// whose auth events lead to R through an event A must fetch (O, a join
// citing R): O is rejected, and so are X (citing O beside the genuine
// membership: two auth events for one slot) and Y (citing O alone). A
// sentinel event is accepted, and none of R, O, X, Y is stored.
func TestFederationRejectsEventsWithRejectedAuthEvents(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			aName := spec.ServerName(a.ServerName)
			alice := fedUser(t, a, "alice")
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID.String()
			pat := peer.UserID("pat")
			r := peer.Join(t, aName, room, pat)
			create, joinRules, pl, patMember := r.State("m.room.create", ""), r.State("m.room.join_rules", ""), r.State("m.room.power_levels", ""), r.State("m.room.member", pat)

			rej := r.StateEvent(t, pat, "m.room.power_levels", "", map[string]any{"users": map[string]any{}})
			if e := peer.SendPDUs(t, aName, rej)[rej.EventID()]; e == "" {
				t.Fatal("A accepted a power-levels event from a user without power")
			}
			r.Keep(rej)
			stateKey := pat
			outlier := r.Build(t, gomatrixserverlib.ProtoEvent{
				SenderID: pat, Type: "m.room.member", StateKey: &stateKey, Content: spec.RawJSON(`{"membership":"join","test":1}`),
				AuthEvents: []string{create.EventID(), joinRules.EventID(), rej.EventID(), patMember.EventID()},
			})
			r.Keep(outlier)
			msg := func(body string, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
				ids := []string{}
				for _, e := range auth {
					ids = append(ids, e.EventID())
				}
				return r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: pat, Type: "m.room.message",
					Content: spec.RawJSON(`{"msgtype":"m.text","body":"` + body + `"}`), AuthEvents: ids})
			}
			x := msg("sent event 1", create, pl, patMember, outlier)
			y := msg("sent event 2", create, pl, outlier)
			res := peer.SendPDUs(t, aName, x, y)
			for what, ev := range map[string]gomatrixserverlib.PDU{"X": x, "Y": y} {
				if e := res[ev.EventID()]; !strings.Contains(e, "rejected") {
					t.Errorf("%s (auth events leading to a rejected event): A answered %q, want a rejection", what, e)
				}
			}
			if !strings.Contains(res[y.EventID()], outlier.EventID()) {
				t.Errorf("Y's rejection %q does not name the rejected auth event %s", res[y.EventID()], outlier.EventID())
			}
			sentinel := r.Message(t, pat, "sentinel")
			if e := peer.SendPDUs(t, aName, sentinel)[sentinel.EventID()]; e != "" {
				t.Fatalf("A refused the sentinel: %q", e)
			}
			fedWaitTimeline(t, alice, created.RoomID, "sentinel", 1, 20*time.Second)
			for what, ev := range map[string]gomatrixserverlib.PDU{"R": rej, "O": outlier, "X": x, "Y": y} {
				fedWantNoEvent(t, alice, room, ev.EventID(), what)
			}
			if m := fedMembership(t, alice, created.RoomID, pat); m != "join" {
				t.Fatalf("pat's membership %q", m)
			}
		})
	}
}

// TestFederationContentHashRedacted: an event whose content was changed
// after it was signed (its content hash no longer matches) is not refused
// but redacted, as the spec says: A accepts it and stores it with its
// content stripped (a message keeps no body; a membership keeps only its
// membership).
func TestFederationContentHashRedacted(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			aName := spec.ServerName(a.ServerName)
			alice := fedUser(t, a, "alice")
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID.String()
			pat := peer.UserID("pat")
			r := peer.Join(t, aName, room, pat)

			tamper := func(ev gomatrixserverlib.PDU, key, value string) json.RawMessage {
				var m map[string]any
				if err := json.Unmarshal(ev.JSON(), &m); err != nil {
					t.Fatal(err)
				}
				m["content"].(map[string]any)[key] = value
				b, _ := json.Marshal(m)
				return b
			}
			msg := r.Message(t, pat, "original")
			res := peer.SendRaw(t, aName, []json.RawMessage{tamper(msg, "body", "tampered")}, nil)
			if e, ok := res[msg.EventID()]; !ok || e != "" {
				t.Fatalf("tampered message: A answered %q (present %v), want it accepted redacted", e, ok)
			}
			r.Add(msg)
			member := r.StateEvent(t, pat, "m.room.member", pat, map[string]any{"membership": "join", "displayname": "Pat"})
			res = peer.SendRaw(t, aName, []json.RawMessage{tamper(member, "displayname", "Mallory")}, nil)
			if e, ok := res[member.EventID()]; !ok || e != "" {
				t.Fatalf("tampered membership: A answered %q (present %v), want it accepted redacted", e, ok)
			}
			got := raw(t, "GET", a.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(msg.EventID()), alice.AccessToken, nil)
			if got.Status != 200 || strings.Contains(string(got.Raw), "tampered") || strings.Contains(string(got.Raw), "original") {
				t.Fatalf("A's copy of the tampered message: %d %s, want it stored without its content", got.Status, got.Raw)
			}
			var content map[string]any
			if err := alice.StateEvent(ctxT(t), created.RoomID, event.StateMember, pat, &content); err != nil {
				t.Fatal(err)
			}
			if content["membership"] != "join" || content["displayname"] != nil {
				t.Fatalf("pat's membership after the tampered event: %v, want only membership join", content)
			}
			if ids := fedStateIDs(t, alice, created.RoomID); ids["m.room.member|"+pat] != member.EventID() {
				t.Fatalf("pat's member state is %s, want the redacted %s", ids["m.room.member|"+pat], member.EventID())
			}
		})
	}
}

// TestFederationGetMissingEvents: /get_missing_events from the creation to
// the peer's join returns exactly the events in between, oldest first, up
// to limit (the newest ones), and the message sent before the peer joined
// redacted when the room's history is "joined" or "invited" (intact when
// "shared" or "world_readable").
func TestFederationGetMissingEvents(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			aName := spec.ServerName(a.ServerName)
			alice := fedUser(t, a, "alice")
			for _, vis := range []string{"world_readable", "shared", "invited", "joined"} {
				created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
				if err != nil {
					t.Fatal(err)
				}
				room := created.RoomID.String()
				before := fedTimeline(t, alice, created.RoomID) // creation events, oldest first
				if _, err := alice.SendStateEvent(ctxT(t), created.RoomID, event.StateHistoryVisibility, "", map[string]any{"history_visibility": vis}); err != nil {
					t.Fatal(err)
				}
				msg, err := alice.SendText(ctxT(t), created.RoomID, "1")
				if err != nil {
					t.Fatal(err)
				}
				pat := peer.UserID("pat")
				r := peer.Join(t, aName, room, pat)
				create, join := r.State("m.room.create", ""), r.State("m.room.member", pat)
				all := fedTimeline(t, alice, created.RoomID)
				var want []string // between create and the join, oldest first
				for _, e := range all {
					if e.ID.String() != create.EventID() && e.ID.String() != join.EventID() {
						want = append(want, e.ID.String())
					}
				}
				if len(want) != len(before)+1 { // before (without create) + history + message
					t.Logf("timeline: %d events before, %d after", len(before), len(all))
				}
				gme := func(limit int) []gomatrixserverlib.PDU {
					b := peer.MustDo(t, 200, aName, "POST", "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(room), map[string]any{
						"earliest_events": []string{create.EventID()}, "latest_events": []string{join.EventID()}, "limit": limit, "min_depth": 1,
					})
					var resp struct {
						Events []json.RawMessage `json:"events"`
					}
					if err := json.Unmarshal(b, &resp); err != nil {
						t.Fatal(err)
					}
					var out []gomatrixserverlib.PDU
					for _, raw := range resp.Events {
						ev, err := r.Version.NewEventFromUntrustedJSON(raw)
						if err != nil {
							t.Fatalf("%s: returned event does not verify: %v", vis, err)
						}
						out = append(out, ev)
					}
					return out
				}
				got := gme(10)
				var gotIDs []string
				for _, e := range got {
					gotIDs = append(gotIDs, e.EventID())
				}
				if strings.Join(gotIDs, ",") != strings.Join(want, ",") {
					t.Fatalf("%s: get_missing_events returned %v (%s), want %v", vis, gotIDs, pduTypes(got), want)
				}
				for _, e := range got {
					if e.EventID() != msg.EventID.String() {
						continue
					}
					hidden := vis == "joined" || vis == "invited"
					if hasBody := strings.Contains(string(e.Content()), `"body"`); hasBody == hidden {
						t.Fatalf("%s: the message before the peer joined has content %s (redacted wanted: %v)", vis, e.Content(), hidden)
					}
				}
				if got := gme(2); len(got) != 2 || got[0].EventID() != want[len(want)-2] || got[1].EventID() != want[len(want)-1] {
					t.Fatalf("%s: limit 2 returned %s, want the two newest events before the join", vis, pduTypes(got))
				}
			}
		})
	}
}
