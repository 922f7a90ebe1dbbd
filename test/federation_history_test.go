package test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// Backfill over federation (issue 12; what the conformance suite's
// TestMessagesOverFederation checks): a late joiner pages back through
// every earlier message, in order, whatever /messages limit it uses, and
// the history is fetched page by page as it is read, not at join.

// fedHeldTimeline counts the room's timeline events n stores.
func fedHeldTimeline(t *testing.T, n *FedNode, room id.RoomID) int {
	t.Helper()
	evs, err := storage.RoomEventsRange(ctxT(t), n.DB, room.String(), math.MinInt64, math.MaxInt64, 100000, true)
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// fedPagedBodies pages cli's /messages back from the newest event with the
// given limit and returns the bodies with prefix, oldest first.
func fedPagedBodies(t *testing.T, cli *mautrix.Client, room id.RoomID, limit int, prefix string) []string {
	t.Helper()
	return fedBodies(reversed(pageAll(t, cli, room, "", "", mautrix.DirectionBackward, limit)), prefix)
}

func TestFederationBackfillReachesAll(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.Postgres)
	c.StartAll()
	a, b, cn := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, cn, "carol")
	// A room on A (SQLite) joined from B and C (PostgreSQL), then a room
	// on C joined from A.
	room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	want := fedSeq("filler ", 300)
	fedSendSeq(t, alice, room.RoomID, want)

	fedJoin(t, bob, room.RoomID, a)
	// The join does not pull the history: it comes as it is read.
	if n := fedHeldTimeline(t, b, room.RoomID); n > 50 {
		t.Fatalf("B holds %d timeline events right after joining; history must come on demand", n)
	}
	// A limit above what one /backfill answers (100) still reaches all.
	fedWantExactly(t, "bob's history, limit 200", fedPagedBodies(t, bob, room.RoomID, 200, "filler "), want)
	fedWantExactly(t, "alice's history", fedPagedBodies(t, alice, room.RoomID, 200, "filler "), want)
	if n := fedHeldTimeline(t, b, room.RoomID); n < 300 {
		t.Fatalf("B stores %d timeline events after paging, want all 300 messages", n)
	}

	// The default page size (10) too, on a PostgreSQL-backed joiner of a
	// room whose host is the SQLite one.
	fedJoin(t, carol, room.RoomID, a)
	fedWantExactly(t, "carol's history, limit 10", fedPagedBodies(t, carol, room.RoomID, 10, "filler "), want)

	// And the other way round: a room on C (PostgreSQL) joined from A.
	room2, err := carol.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	want2 := fedSeq("c ", 150)
	fedSendSeq(t, carol, room2.RoomID, want2)
	fedJoin(t, alice, room2.RoomID, cn)
	fedWantExactly(t, "alice's history of C's room", fedPagedBodies(t, alice, room2.RoomID, 120, "c "), want2)
	fedWantExactly(t, "carol's own history", fedPagedBodies(t, carol, room2.RoomID, 120, "c "), want2)
}

// TestFederationDeviceListOnJoin (the suite's
// TestDeviceListsUpdateOverFederationOnRoomJoin): alice joining a room on
// a server she shared no room with sends it an m.device_list_update for
// her device, so it can encrypt for her at once; a second room on the
// same server is no news and sends none.
func TestFederationDeviceListOnJoin(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			alice := fedUser(t, a, "alice")
			updates := func() int {
				n := 0
				for _, txn := range peer.Transactions() {
					for _, e := range txn.EDUs {
						var u struct {
							UserID   string `json:"user_id"`
							DeviceID string `json:"device_id"`
						}
						if e.Type == "m.device_list_update" && json.Unmarshal(e.Content, &u) == nil &&
							u.UserID == alice.UserID.String() && u.DeviceID == alice.DeviceID.String() {
							n++
						}
					}
				}
				return n
			}
			r := peer.CreateRoom(t, gomatrixserverlib.RoomVersionV10, peer.UserID("bob"), nil)
			fedJoinPeerRoom(t, alice, r.ID, string(peer.ServerName))
			e2eeWait(t, "the peer told of alice's device", 20*time.Second, func() bool { return updates() == 1 })
			// A recorded the update it sent (the next one names it as prev_id).
			if sid, err := storage.DeviceListStreamID(ctxT(t), a.DB, alice.UserID.String()); err != nil || sid == 0 {
				t.Fatalf("A's device-list stream for alice: %d, %v", sid, err)
			}
			r2 := peer.CreateRoom(t, gomatrixserverlib.RoomVersionV10, peer.UserID("bob"), nil)
			fedJoinPeerRoom(t, alice, r2.ID, string(peer.ServerName))
			if _, err := alice.SendText(ctxT(t), id.RoomID(r2.ID), "after"); err != nil {
				t.Fatal(err)
			}
			peer.WaitPDU(t, 20*time.Second, "alice's message", func(e gomatrixserverlib.PDU) bool { return e.Type() == "m.room.message" })
			if n := updates(); n != 1 {
				t.Fatalf("the peer got %d updates of alice's device, want 1 (the second room is no news)", n)
			}
		})
	}
}

// TestFederationKeysNotStaleAfterLeave (the suite's TestDeviceListUpdates,
// leave cases): once alice shares no room with bob, bob's server no
// longer tells hers of his devices, so her /keys/query for bob must ask
// again rather than answer from what it kept while they shared a room.
func TestFederationKeysNotStaleAfterLeave(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bobReg := Register(t, b.URL, "bob", "pw", false)
	bob := sessionClient(t, b.URL, bobReg)
	dev1 := newE2EERaw(bobReg)
	if r := e2eeUpload(t, b.URL, dev1, map[string]any{"device_keys": dev1.deviceKeys()}); r.Status != 200 {
		t.Fatalf("bob's key upload: %d %s", r.Status, r.Raw)
	}
	devicesOfBob := func(n *FedNode, token string) map[string]any {
		t.Helper()
		r := raw(t, "POST", e2eeCS(n.URL)+"/keys/query", token, map[string]any{"device_keys": map[string]any{bob.UserID.String(): []string{}}})
		if r.Status != 200 {
			t.Fatalf("/keys/query on %s: %d %s", n.ServerName, r.Status, r.Raw)
		}
		dk, _ := r.Body["device_keys"].(map[string]any)
		devs, _ := dk[bob.UserID.String()].(map[string]any)
		return devs
	}
	room, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	fedJoin(t, alice, room.RoomID, b)
	if devs := devicesOfBob(a, alice.AccessToken); devs[bobReg.DeviceID] == nil {
		t.Fatalf("alice does not see bob's device while they share a room: %v", devs)
	}
	if _, err := alice.LeaveRoom(ctxT(t), room.RoomID); err != nil {
		t.Fatal(err)
	}
	// bob's new device after they share no room.
	bob2 := loginClient(t, b.URL, "bob", "pw")
	reg2 := RegisterResult{UserID: bob2.UserID.String(), AccessToken: bob2.AccessToken, DeviceID: bob2.DeviceID.String()}
	dev2 := newE2EERaw(reg2)
	if r := e2eeUpload(t, b.URL, dev2, map[string]any{"device_keys": dev2.deviceKeys()}); r.Status != 200 {
		t.Fatalf("bob's second key upload: %d %s", r.Status, r.Raw)
	}
	if devs := devicesOfBob(b, bob.AccessToken); devs[reg2.DeviceID] == nil || devs[bobReg.DeviceID] == nil {
		t.Fatalf("B does not serve both of bob's devices: %v", devs)
	}
	if devs := devicesOfBob(a, alice.AccessToken); devs[reg2.DeviceID] == nil || devs[bobReg.DeviceID] == nil {
		t.Fatalf("A served stale keys for bob after alice left their only room: %v", devs)
	}
}
