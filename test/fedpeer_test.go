package test

import (
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestFedPeerJoinAndMessage joins a room on an Enclave from the test
// federation peer (test/fedpeer) and exchanges a message each way: the
// peer's X-Matrix requests, keys and events are accepted, and the
// Enclave's transactions reach the peer and verify there.
func TestFedPeerJoinAndMessage(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			alice := fedUser(t, a, "alice")
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID.String()
			pat := peer.UserID("pat")
			r := peer.Join(t, spec.ServerName(a.ServerName), room, pat)
			if r.State("m.room.create", "") == nil || r.State("m.room.member", alice.UserID.String()) == nil {
				t.Fatal("send_join gave the peer no create event or no alice")
			}
			if m := fedMembership(t, alice, created.RoomID, pat); m != "join" {
				t.Fatalf("A sees the peer's user as %q, want join", m)
			}

			if _, err := alice.SendText(ctxT(t), created.RoomID, "hello peer"); err != nil {
				t.Fatal(err)
			}
			peer.WaitPDU(t, 20*time.Second, "with alice's message", func(e gomatrixserverlib.PDU) bool {
				return e.Type() == "m.room.message" && strings.Contains(string(e.Content()), "hello peer")
			})

			msg := r.Message(t, pat, "hello alice")
			if res := peer.SendPDUs(t, spec.ServerName(a.ServerName), msg); res[msg.EventID()] != "" {
				t.Fatalf("A refused the peer's message: %q", res[msg.EventID()])
			}
			fedWaitTimeline(t, alice, created.RoomID, "hello alice", 1, 20*time.Second)
		})
	}
}
