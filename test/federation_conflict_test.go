package test

import (
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// fedPartition makes n's federation policy refuse other (ReloadPolicy, as
// on SIGHUP) or, with heal, restores the cluster policy.
func fedPartition(t *testing.T, n, other *FedNode, heal bool) {
	t.Helper()
	cfg := n.Config()
	if !heal {
		cfg.Federation.DeniedServers = []string{other.IP}
	}
	if err := n.Fed().ReloadPolicy(cfg); err != nil {
		t.Fatal(err)
	}
}

// fedPowerLevels reads the room's power levels content as cli sees it.
func fedPowerLevels(t *testing.T, cli *mautrix.Client, room id.RoomID) map[string]any {
	t.Helper()
	r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/state/m.room.power_levels/", cli.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("power levels: %d %s", r.Status, r.Raw)
	}
	return r.Body
}

// fedSetUserLevel has cli change one user's power level and returns the event ID.
func fedSetUserLevel(t *testing.T, cli *mautrix.Client, room id.RoomID, user id.UserID, level int) id.EventID {
	t.Helper()
	pl := fedPowerLevels(t, cli, room)
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[user.String()] = level
	pl["users"] = users
	resp, err := cli.SendStateEvent(ctxT(t), room, event.StatePowerLevels, "", pl)
	if err != nil {
		t.Fatalf("%s setting %s to %d: %v", cli.UserID, user, level, err)
	}
	return resp.EventID
}

func fedBan(t *testing.T, cli *mautrix.Client, room id.RoomID, user id.UserID) id.EventID {
	t.Helper()
	if _, err := cli.BanUser(ctxT(t), room, &mautrix.ReqBanUser{UserID: user, Reason: "partition"}); err != nil {
		t.Fatalf("%s banning %s: %v", cli.UserID, user, err)
	}
	return id.EventID(fedStateIDs(t, cli, room)["m.room.member|"+user.String()])
}

// fedUserLevel is user's level in the power levels content.
func fedUserLevel(pl map[string]any, user id.UserID) float64 {
	users, _ := pl["users"].(map[string]any)
	v, _ := users[user.String()].(float64)
	return v
}

// TestFederationPartitionConflict: A and B are cut off from each other by
// their federation policies (reloaded to deny the other). Meanwhile each
// side changes power levels and bans users of the other, and both keep
// talking. After the policies are restored, each server has every message
// of the other side exactly once, and GET /rooms/{id}/state on A and on B
// return the same event for every (type, state_key), the one the room
// version's state resolution picks.
//
// Room 1: alice (A, 100) demotes bob (B, 50) while bob bans carol and
// promotes dave: bob's changes lose (A soft-fails them; B's resolution
// orders alice's higher-power change first and rejects them).
// Room 2: alice and bob both at 100: alice bans dave and sets erin to 0,
// bob bans carol and sets erin to 75; both bans stand and the later power
// levels event wins the tie.
func TestFederationPartitionConflict(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice, carol, erin := fedUser(t, a, "alice"), fedUser(t, a, "carol"), fedUser(t, a, "erin")
	bob, dave := fedUser(t, b, "bob"), fedUser(t, b, "dave")

	mkRoom := func(name string, bobLevel int) id.RoomID {
		created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{
			Preset: "public_chat", Name: name,
			PowerLevelOverride: &event.PowerLevelsEventContent{
				Users:           map[id.UserID]int{alice.UserID: 100, bob.UserID: bobLevel, erin.UserID: 50},
				BanPtr:          ptrInt(50),
				KickPtr:         ptrInt(50),
				RedactPtr:       ptrInt(50),
				InvitePtr:       ptrInt(0),
				StateDefaultPtr: ptrInt(50),
				Events:          map[string]int{"m.room.power_levels": 50},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		r := created.RoomID
		if _, err := carol.JoinRoom(ctxT(t), r.String(), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := erin.JoinRoom(ctxT(t), r.String(), nil); err != nil {
			t.Fatal(err)
		}
		fedJoin(t, bob, r, a)
		fedJoin(t, dave, r, a)
		return r
	}
	room1 := mkRoom("demotion", 50)
	room2 := mkRoom("tie", 100)
	// Both sides agree before the partition.
	for _, r := range []id.RoomID{room1, room2} {
		waitFor(t, "B to see the room as A does", 20*time.Second, func() bool {
			return len(fedStateDiff(fedStateIDs(t, alice, r), fedStateIDs(t, bob, r))) == 0
		})
	}

	fedPartition(t, a, b, false)
	fedPartition(t, b, a, false)

	// Room 1: concurrent power level changes and a ban.
	demote := fedSetUserLevel(t, alice, room1, bob.UserID, 0)
	bobBansCarol := fedBan(t, bob, room1, carol.UserID)
	bobPromotes := fedSetUserLevel(t, bob, room1, dave.UserID, 25)
	// Both sides keep talking: more than one /get_missing_events page each.
	aMsgs, bMsgs := fedSeq("a1-", 30), fedSeq("b1-", 30)
	fedSendSeq(t, alice, room1, aMsgs)
	fedSendSeq(t, bob, room1, bMsgs)

	// Room 2: two admins at the same level.
	aliceBansDave := fedBan(t, alice, room2, dave.UserID)
	aliceErin := fedSetUserLevel(t, alice, room2, erin.UserID, 0)
	time.Sleep(20 * time.Millisecond) // distinct origin_server_ts for the tie-break
	bobBansCarol2 := fedBan(t, bob, room2, carol.UserID)
	bobErin := fedSetUserLevel(t, bob, room2, erin.UserID, 75)
	fedSendSeq(t, alice, room2, fedSeq("a2-", 3))
	fedSendSeq(t, bob, room2, fedSeq("b2-", 3))

	// The partition holds: neither side has the other's changes.
	time.Sleep(500 * time.Millisecond)
	if got := fedStateIDs(t, bob, room1)["m.room.power_levels|"]; got == demote.String() {
		t.Fatal("B received A's power levels during the partition")
	}
	if got := fedStateIDs(t, alice, room2)["m.room.member|"+carol.UserID.String()]; got == bobBansCarol2.String() {
		t.Fatal("A received B's ban during the partition")
	}
	if p, _, _ := fedQueueDepth(a, b); p != 0 {
		t.Fatalf("A queued %d PDUs for the refused B", p)
	}

	healed := time.Now()
	fedPartition(t, a, b, true)
	fedPartition(t, b, a, true)

	for _, r := range []id.RoomID{room1, room2} {
		fedWaitSameState(t, alice, bob, r, 40*time.Second)
	}
	t.Logf("state converged %v after healing", time.Since(healed))

	// Every message of both sides, once, each side's in its order.
	for _, cli := range []*mautrix.Client{alice, bob} {
		fedWaitTimeline(t, cli, room1, "a1-", len(aMsgs), 30*time.Second)
		fedWaitTimeline(t, cli, room1, "b1-", len(bMsgs), 30*time.Second)
		fedWaitTimeline(t, cli, room2, "a2-", 3, 30*time.Second)
		fedWaitTimeline(t, cli, room2, "b2-", 3, 30*time.Second)
	}
	t.Logf("every message on both sides %v after healing", time.Since(healed))
	for _, r := range []id.RoomID{room1, room2} {
		fedWaitSameState(t, alice, bob, r, 10*time.Second)
	}
	for _, cli := range []*mautrix.Client{alice, bob} {
		tl := fedTimeline(t, cli, room1)
		fedWantExactly(t, string(cli.UserID)+"'s a1 messages", fedBodies(tl, "a1-"), aMsgs)
		fedWantExactly(t, string(cli.UserID)+"'s b1 messages", fedBodies(tl, "b1-"), bMsgs)
		tl2 := fedTimeline(t, cli, room2)
		fedWantExactly(t, string(cli.UserID)+"'s a2 messages", fedBodies(tl2, "a2-"), fedSeq("a2-", 3))
		fedWantExactly(t, string(cli.UserID)+"'s b2 messages", fedBodies(tl2, "b2-"), fedSeq("b2-", 3))
	}

	// Room 1: alice's demotion wins; bob's ban and promotion are rejected.
	st1 := fedStateIDs(t, alice, room1)
	if st1["m.room.power_levels|"] != demote.String() {
		t.Fatalf("room 1 power levels %s, want alice's demotion %s (bob's %s must lose)", st1["m.room.power_levels|"], demote, bobPromotes)
	}
	if st1["m.room.member|"+carol.UserID.String()] == bobBansCarol.String() || fedMembership(t, alice, room1, carol.UserID.String()) != "join" {
		t.Fatal("room 1: the demoted bob's ban of carol stands")
	}
	if lvl := fedUserLevel(fedPowerLevels(t, bob, room1), bob.UserID); lvl != 0 {
		t.Fatalf("room 1: B sees bob at %v, want 0", lvl)
	}
	// Room 2: both bans stand; the later power levels event wins the tie.
	st2 := fedStateIDs(t, bob, room2)
	if st2["m.room.member|"+dave.UserID.String()] != aliceBansDave.String() || st2["m.room.member|"+carol.UserID.String()] != bobBansCarol2.String() {
		t.Fatalf("room 2: bans %s / %s, want alice's %s and bob's %s", st2["m.room.member|"+dave.UserID.String()], st2["m.room.member|"+carol.UserID.String()], aliceBansDave, bobBansCarol2)
	}
	if st2["m.room.power_levels|"] != bobErin.String() {
		t.Fatalf("room 2 power levels %s, want bob's later %s over alice's %s", st2["m.room.power_levels|"], bobErin, aliceErin)
	}

	// The room goes on: new events merge both branches and stay agreed.
	if _, err := alice.SendText(ctxT(t), room1, "after the partition"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, bob, room1, "after the partition", 1, 20*time.Second)
	if _, err := bob.SendText(ctxT(t), room1, "ack"); err != nil {
		t.Fatal(err)
	}
	fedWaitTimeline(t, alice, room1, "ack", 1, 20*time.Second)
	if diff := fedStateDiff(fedStateIDs(t, alice, room1), fedStateIDs(t, bob, room1)); len(diff) != 0 {
		t.Fatalf("room 1 diverged after new events: %v", diff)
	}
}

func ptrInt(v int) *int { return &v }

// fedWaitSameState waits until x's and y's servers return the same state
// for the room: the same event ID for every (type, state_key).
func fedWaitSameState(t *testing.T, x, y *mautrix.Client, room id.RoomID, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diff := fedStateDiff(fedStateIDs(t, x, room), fedStateIDs(t, y, room))
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("room %s: %s's and %s's servers disagree on the state:\n%v", room, x.UserID, y.UserID, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
