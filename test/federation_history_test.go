package test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
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
			waitFor(t, "the peer told of alice's device", 20*time.Second, func() bool { return updates() == 1 })
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
	since := e2eeSync(t, a.URL, alice.AccessToken, "", 0).NextBatch
	fedJoin(t, alice, room.RoomID, b)
	// Joining, alice hears bob's devices changed (she must fetch them).
	sawChanged := false
	waitFor(t, "bob in alice's device_lists.changed", 20*time.Second, func() bool {
		s := e2eeSync(t, a.URL, alice.AccessToken, since, 1000)
		since = s.NextBatch
		sawChanged = sawChanged || e2eeContains(s.changed(), bob.UserID.String())
		return sawChanged
	})
	if devs := devicesOfBob(a, alice.AccessToken); devs[bobReg.DeviceID] == nil {
		t.Fatalf("alice does not see bob's device while they share a room: %v", devs)
	}
	if _, err := alice.LeaveRoom(ctxT(t), room.RoomID); err != nil {
		t.Fatal(err)
	}
	sawLeft := false
	waitFor(t, "bob in alice's device_lists.left", 20*time.Second, func() bool {
		s := e2eeSync(t, a.URL, alice.AccessToken, since, 1000)
		since = s.NextBatch
		sawLeft = sawLeft || e2eeContains(s.left(), bob.UserID.String())
		return sawLeft
	})
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
	// Sharing no room, alice is not told of bob's new device.
	if s := e2eeSync(t, a.URL, alice.AccessToken, since, 0); e2eeContains(s.changed(), bob.UserID.String()) {
		t.Fatalf("alice told of bob's device change though they share no room: %v", s.changed())
	}
}

// TestFederationBackfillAfterRejoin (the suite's TestMessagesOverFederation,
// re-join case): bob leaves, 20 messages are sent, bob joins again; his
// server missed them, and /messages pages back through them, in order,
// into the history it kept from before. Both ways: a room on A (SQLite)
// rejoined from B (PostgreSQL) and a room on B rejoined from A.
func TestFederationBackfillAfterRejoin(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	for _, pair := range [][2]*FedNode{{c.Nodes[0], c.Nodes[1]}, {c.Nodes[1], c.Nodes[0]}} {
		host, guest := pair[0], pair[1]
		t.Run(string(host.Dialect)+"_host", func(t *testing.T) {
			owner := fedUser(t, host, "owner"+string(host.Dialect))
			visitor := fedUser(t, guest, "visitor"+string(host.Dialect))
			room, err := owner.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			before := fedSeq("before ", 5)
			fedSendSeq(t, owner, room.RoomID, before)
			fedJoin(t, visitor, room.RoomID, host)
			fedWantExactly(t, "first join", fedPagedBodies(t, visitor, room.RoomID, 10, "before "), before)
			if _, err := visitor.LeaveRoom(ctxT(t), room.RoomID); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the host sees the visitor leave", 20*time.Second, func() bool {
				return fedMembership(t, owner, room.RoomID, visitor.UserID.String()) == "leave"
			})
			meanwhile := fedSeq("meanwhile ", 20)
			fedSendSeq(t, owner, room.RoomID, meanwhile)
			fedJoin(t, visitor, room.RoomID, host)

			// The rejoin's sync marks the hole: only the join, limited.
			resp, err := visitor.SyncRequest(ctxT(t), 0, "", timelineFilter(t, visitor, 20), false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			tl := resp.Rooms.Join[room.RoomID].Timeline
			if !tl.Limited || len(fedBodies(tl.Events, "")) != 0 {
				t.Fatalf("rejoin sync: limited %v, messages %v; want limited and none from before the hole", tl.Limited, fedBodies(tl.Events, ""))
			}
			// Both page sizes reach every message, in order; from the
			// sync's prev_batch too.
			all := append(append([]string(nil), before...), meanwhile...)
			fromSync := fedBodies(reversed(pageAll(t, visitor, room.RoomID, tl.PrevBatch, "", mautrix.DirectionBackward, 10)), "")
			fedWantExactly(t, "visitor from prev_batch", fedFilter(fromSync, "before ", "meanwhile "), all)
			fedWantExactly(t, "visitor, limit 10", fedFilter(fedPagedBodies(t, visitor, room.RoomID, 10, ""), "before ", "meanwhile "), all)
			fedWantExactly(t, "visitor, limit 200", fedFilter(fedPagedBodies(t, visitor, room.RoomID, 200, ""), "before ", "meanwhile "), all)
			fedWantExactly(t, "owner", fedFilter(fedPagedBodies(t, owner, room.RoomID, 200, ""), "before ", "meanwhile "), all)
			// The guest's store now holds them in order too.
			var stored []string
			evs, err := storage.RoomEventsRange(ctxT(t), guest.DB, room.RoomID.String(), math.MinInt64, math.MaxInt64, 1000, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				var ct struct {
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				}
				if e.Type == "m.room.message" && json.Unmarshal(e.JSON, &ct) == nil {
					stored = append(stored, ct.Content.Body)
				}
			}
			fedWantExactly(t, "guest's stored timeline", stored, all)
		})
	}
}

// fedFilter keeps the bodies with any of the prefixes.
func fedFilter(bodies []string, prefixes ...string) []string {
	var out []string
	for _, b := range bodies {
		for _, p := range prefixes {
			if len(b) >= len(p) && b[:len(p)] == p {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// TestFederationSyncTimelineGap (the suite's TestSyncTimelineGap): the
// peer's charlie sends 50 messages A never gets, then one more that names
// them; /get_missing_events gives A only the newest few. alice's /sync
// shows charlie's messages after the hole as a limited timeline, without
// her own earlier message, and its prev_batch pages back through all 50
// (fetched with /backfill) to hers.
func TestFederationSyncTimelineGap(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			peer.MissingHorizon = 10
			c.StartAll()
			a := c.Nodes[0]
			alice := fedUser(t, a, "alice")
			room, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			charlie := peer.UserID("charlie")
			r := peer.Join(t, spec.ServerName(a.ServerName), room.RoomID.String(), charlie)
			filter := timelineFilter(t, alice, 20)
			first, err := alice.SyncRequest(ctxT(t), 0, "", filter, false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.SendText(ctxT(t), room.RoomID, "Hi from Alice"); err != nil {
				t.Fatal(err)
			}
			peer.WaitPDU(t, 20*time.Second, "alice's message", func(e gomatrixserverlib.PDU) bool { return e.Type() == "m.room.message" })
			want := fedSeq("remote ", 50)
			for _, b := range want {
				r.Add(r.Message(t, charlie, b))
			}
			end := r.Message(t, charlie, "End")
			if res := peer.SendPDUs(t, spec.ServerName(a.ServerName), end); res[end.EventID()] != "" {
				t.Fatalf("A refused the last event: %v", res)
			}

			resp, err := alice.SyncRequest(ctxT(t), 0, first.NextBatch, filter, false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			tl := resp.Rooms.Join[room.RoomID].Timeline
			if len(tl.Events) == 0 || tl.Events[len(tl.Events)-1].ID.String() != end.EventID() {
				t.Fatalf("the sync's timeline does not end with the last event: %d events", len(tl.Events))
			}
			if !tl.Limited {
				t.Fatal("the timeline after the hole is not limited")
			}
			for _, e := range tl.Events {
				if e.Sender == alice.UserID {
					t.Fatalf("alice's own message from before the hole is in the limited timeline: %s", e.ID)
				}
			}
			got := fedBodies(tl.Events, "remote ")
			older := fedBodies(reversed(pageAll(t, alice, room.RoomID, tl.PrevBatch, "", mautrix.DirectionBackward, 10)), "")
			if len(older) == 0 || older[len(older)-1] == "" {
				t.Fatalf("nothing before the hole: %v", older)
			}
			all := append(fedFilter(older, "remote "), got...)
			fedWantExactly(t, "charlie's messages through prev_batch", all, want)
			if hi := fedFilter(older, "Hi from Alice"); len(hi) != 1 || older[len(older)-len(fedFilter(older, "remote "))-1] != "Hi from Alice" {
				t.Fatalf("alice's message is not right before charlie's: %v", older)
			}
			// A's store holds all of them in order, and the peer served
			// the hole by /backfill (it had them all).
			evs, err := storage.RoomEventsRange(ctxT(t), a.DB, room.RoomID.String(), math.MinInt64, math.MaxInt64, 1000, false)
			if err != nil {
				t.Fatal(err)
			}
			var stored []string
			for _, e := range evs {
				var ct struct {
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				}
				if e.Type == "m.room.message" && json.Unmarshal(e.JSON, &ct) == nil {
					stored = append(stored, ct.Content.Body)
				}
			}
			fedWantExactly(t, "A's stored timeline", stored, append(append([]string{"Hi from Alice"}, want...), "End"))
			// A later sync from before the hole is limited the same way
			// only while the hole is open: now it is closed.
			again, err := alice.SyncRequest(ctxT(t), 0, first.NextBatch, filter, false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(again.Rooms.Join[room.RoomID].Timeline.Events); n == 0 {
				t.Fatal("a sync from before the hole shows nothing")
			}
		})
	}
}
