package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestFederationUnknownEndpoints: an unknown path under a Matrix prefix is
// 404 M_UNRECOGNIZED and a known path with the wrong method 405
// M_UNRECOGNIZED, on the client listener and on the federation listener.
func TestFederationUnknownEndpoints(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite)
	c.StartAll()
	a := c.Nodes[0]
	hc := c.HTTPClient()
	cases := []struct {
		method, path string
		status       int
	}{
		{"GET", "/_matrix/unknown", 404},
		{"GET", "/_matrix/federation/unknown", 404},
		{"GET", "/_matrix/federation/v1/unknown", 404},
		{"PUT", "/_matrix/federation/v1/version", 405},
		{"GET", "/_matrix/key/unknown", 404},
		{"GET", "/_matrix/key/v2/unknown", 404},
		{"PUT", "/_matrix/key/v2/query", 405},
		{"GET", "/_matrix/media/unknown", 404},
		{"GET", "/_matrix/media/v3/unknown", 404},
		{"PATCH", "/_matrix/media/v3/upload", 405},
		{"GET", "/_matrix/client/unknown", 404},
		{"GET", "/_matrix/client/v1/unknown", 404},
		{"PUT", "/_matrix/client/v3/login", 405},
	}
	for _, base := range []struct {
		name, url string
		cl        *http.Client
	}{{"client", a.URL, http.DefaultClient}, {"federation", "https://" + a.ServerName, hc}} {
		for _, tc := range cases {
			if base.name == "federation" && !strings.HasPrefix(tc.path, "/_matrix/federation/") && !strings.HasPrefix(tc.path, "/_matrix/key/") {
				continue // the federation listener serves only these
			}
			req, _ := http.NewRequest(tc.method, base.url+tc.path, nil)
			resp, err := base.cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || fedErrCode(b) != "M_UNRECOGNIZED" {
				t.Errorf("%s listener: %s %s = %d %s, want %d M_UNRECOGNIZED", base.name, tc.method, tc.path, resp.StatusCode, b, tc.status)
			}
		}
	}
}

// TestFederationSendMembershipEndpoints: v1 and v2 send_join and
// send_leave accept only their own membership, as the sender's own
// state_key: a message, a membership event without a state_key, any other
// membership and a mismatched state_key are 400 and change nothing. The v1
// forms work and answer [200, body].
func TestFederationSendMembershipEndpoints(t *testing.T) {
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
			charlie := peer.UserID("charlie")
			r := peer.Join(t, aName, room, charlie)
			stateBefore := fedStateIDs(t, alice, created.RoomID)

			member := func(sender, stateKey, membership string) gomatrixserverlib.PDU {
				c, _ := json.Marshal(map[string]string{"membership": membership})
				return r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: sender, Type: "m.room.member", StateKey: &stateKey, Content: c})
			}
			for _, ep := range []struct{ path, membership string }{
				{"/_matrix/federation/v1/send_join", "join"},
				{"/_matrix/federation/v2/send_join", "join"},
				{"/_matrix/federation/v1/send_leave", "leave"},
				{"/_matrix/federation/v2/send_leave", "leave"},
			} {
				bad := map[string]gomatrixserverlib.PDU{
					"regular event": r.Message(t, charlie, "bzz"),
					"non-state membership event": r.Build(t, gomatrixserverlib.ProtoEvent{
						SenderID: charlie, Type: "m.room.member", Content: spec.RawJSON(`{"body":"bzz"}`)}),
					"mismatched state key": member(charlie, peer.UserID("doris"), ep.membership),
				}
				for _, m := range []string{"join", "leave", "knock", "invite"} {
					if m != ep.membership {
						bad[m+" event"] = member(charlie, charlie, m)
					}
				}
				for what, ev := range bad {
					code, b, err := peer.Do(aName, "PUT", ep.path+"/"+url.PathEscape(room)+"/"+url.PathEscape(ev.EventID()), json.RawMessage(ev.JSON()))
					if err != nil {
						t.Fatal(err)
					}
					if code != http.StatusBadRequest {
						t.Errorf("%s with a %s: %d %s, want 400", ep.path, what, code, b)
					}
				}
			}
			if diff := fedStateDiff(stateBefore, fedStateIDs(t, alice, created.RoomID)); len(diff) != 0 {
				t.Fatalf("refused membership events changed the state: %v", diff)
			}

			// The v1 forms do their job: quinn joins, charlie leaves.
			quinn := peer.UserID("quinn")
			join, _ := peer.MakeMembership(t, aName, "join", room, quinn)
			b := peer.MustDo(t, http.StatusOK, aName, "PUT", "/_matrix/federation/v1/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(join.EventID()), json.RawMessage(join.JSON()))
			var v1 []json.RawMessage
			if err := json.Unmarshal(b, &v1); err != nil || len(v1) != 2 || string(v1[0]) != "200" {
				t.Fatalf("v1 send_join answer is not [200, {...}]: %s", b)
			}
			var body struct {
				State     []json.RawMessage `json:"state"`
				AuthChain []json.RawMessage `json:"auth_chain"`
			}
			if err := json.Unmarshal(v1[1], &body); err != nil || len(body.State) == 0 || len(body.AuthChain) == 0 {
				t.Fatalf("v1 send_join body has no state or auth chain: %s", v1[1])
			}
			leave, _ := peer.MakeMembership(t, aName, "leave", room, charlie)
			b = peer.MustDo(t, http.StatusOK, aName, "PUT", "/_matrix/federation/v1/send_leave/"+url.PathEscape(room)+"/"+url.PathEscape(leave.EventID()), json.RawMessage(leave.JSON()))
			if string(bytes.Join(bytes.Fields(b), nil)) != "[200,{}]" {
				t.Fatalf("v1 send_leave answer %s, want [200, {}]", b)
			}
			if m := fedMembership(t, alice, created.RoomID, quinn); m != "join" {
				t.Fatalf("quinn is %q after v1 send_join", m)
			}
			if m := fedMembership(t, alice, created.RoomID, charlie); m != "leave" {
				t.Fatalf("charlie is %q after v1 send_leave", m)
			}
		})
	}
}

// TestFederationQueryProfile: /query/profile answers a local user's
// profile, 404 for an unknown user and 400 for a user ID that is not one
// (a non-numeric port in its server name).
func TestFederationQueryProfile(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			aName := spec.ServerName(a.ServerName)
			alice := fedUser(t, a, "alice")
			if err := alice.SetDisplayName(ctxT(t), "Alice Cooper"); err != nil {
				t.Fatal(err)
			}
			q := func(userID, field string) (int, []byte) {
				path := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(userID)
				if field != "" {
					path += "&field=" + field
				}
				code, b, err := peer.Do(aName, "GET", path, nil)
				if err != nil {
					t.Fatal(err)
				}
				return code, b
			}
			if code, b := q("@user1:localhost:http", "displayname"); code != 400 {
				t.Errorf("non-numeric port: %d %s, want 400", code, b)
			}
			for _, bad := range []string{"user1", "@:" + a.ServerName, "@user1", "@user1:"} {
				if code, b := q(bad, ""); code != 400 {
					t.Errorf("user_id %q: %d %s, want 400", bad, code, b)
				}
			}
			if code, b := q("@nobody:"+a.ServerName, ""); code != 404 {
				t.Errorf("unknown user: %d %s, want 404", code, b)
			}
			code, b := q(alice.UserID.String(), "displayname")
			if code != 200 || !strings.Contains(string(b), `"displayname":"Alice Cooper"`) {
				t.Errorf("alice's displayname: %d %s", code, b)
			}
		})
	}
}
