package test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// fedJoinPeerRoom joins cli to a room the peer hosts, through the peer.
func fedJoinPeerRoom(t *testing.T, cli *mautrix.Client, roomID string, via string) {
	t.Helper()
	if _, err := cli.JoinRoom(ctxT(t), roomID, &mautrix.ReqJoinRoom{Via: []string{via}}); err != nil {
		t.Fatalf("%s joining the peer's room: %v", cli.UserID, err)
	}
}

// fedPeerGotMember reports whether the peer was sent a membership event
// of userID in a /send transaction.
func fedPeerGotMember(pdus []gomatrixserverlib.PDU, userID string) bool {
	for _, e := range pdus {
		if e.Type() == "m.room.member" && e.StateKey() != nil && *e.StateKey() == userID {
			return true
		}
	}
	return false
}

// TestFederationOutboundSendAfterJoin: after joining a room hosted by the
// peer, the first (and only) PDU the peer is sent in /send is alice's
// message: her join already reached the peer through send_join and is not
// sent again.
func TestFederationOutboundSendAfterJoin(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			alice := fedUser(t, a, "alice")
			r := peer.CreateRoom(t, gomatrixserverlib.RoomVersionV10, peer.UserID("charlie"), nil)
			fedJoinPeerRoom(t, alice, r.ID, string(peer.ServerName))
			if r.State("m.room.member", alice.UserID.String()) == nil {
				t.Fatal("the peer has no join of alice after send_join")
			}
			if _, err := alice.SendText(ctxT(t), id.RoomID(r.ID), "over the wire"); err != nil {
				t.Fatal(err)
			}
			peer.WaitPDU(t, 20*time.Second, "with alice's message", func(e gomatrixserverlib.PDU) bool {
				return e.Type() == "m.room.message"
			})
			fedQueueEmpty(t, a, &FedNode{ServerName: string(peer.ServerName)}, 10*time.Second)
			got := peer.Parsed()
			if len(got) == 0 || got[0].Type() != "m.room.message" {
				t.Fatalf("the peer's first PDU is not alice's message: %v", pduTypes(got))
			}
			if fedPeerGotMember(got, alice.UserID.String()) {
				t.Fatalf("A sent alice's join again in /send after send_join: %v", pduTypes(got))
			}
		})
	}
}

// TestFederationRedactWithoutEvent: alice may redact an event her server
// does not have (the room lets anyone redact); the redaction is sent to
// the peer hosting the room and is the first PDU it is sent.
func TestFederationRedactWithoutEvent(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			alice := fedUser(t, a, "alice")
			charlie := peer.UserID("charlie")
			r := peer.CreateRoom(t, gomatrixserverlib.RoomVersionV10, charlie, map[string]any{"redact": 0})
			fedJoinPeerRoom(t, alice, r.ID, string(peer.ServerName))
			// An event A never hears of.
			hidden := r.Message(t, charlie, "666")
			r.Add(hidden)
			resp, err := alice.RedactEvent(ctxT(t), id.RoomID(r.ID), id.EventID(hidden.EventID()), mautrix.ReqRedact{Reason: "reasons..."})
			if err != nil {
				t.Fatalf("redacting an event A does not have: %v", err)
			}
			red := peer.WaitPDU(t, 20*time.Second, "with the redaction", func(e gomatrixserverlib.PDU) bool {
				return e.Type() == "m.room.redaction"
			})
			if red.EventID() != resp.EventID.String() {
				t.Fatalf("the peer got redaction %s, alice sent %s", red.EventID(), resp.EventID)
			}
			if got := peer.Parsed(); got[0].Type() != "m.room.redaction" {
				t.Fatalf("the peer's first PDU is not the redaction: %v", pduTypes(got))
			}
			// An event nobody has is still 404 for a user who may not
			// redact others' events.
			r2 := peer.CreateRoom(t, gomatrixserverlib.RoomVersionV10, charlie, nil)
			fedJoinPeerRoom(t, alice, r2.ID, string(peer.ServerName))
			other := r2.Message(t, charlie, "not yours")
			res := raw(t, "PUT", a.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(r2.ID)+"/redact/"+url.PathEscape(other.EventID())+"/t1", alice.AccessToken, map[string]any{})
			if res.Status != 404 {
				t.Fatalf("redacting an unknown event without the redact level: %d %s, want 404", res.Status, res.Raw)
			}
		})
	}
}

func pduTypes(evs []gomatrixserverlib.PDU) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type())
	}
	return strings.Join(out, ",")
}
