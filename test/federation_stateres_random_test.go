package test

import (
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// fedIsolate makes n refuse every other node of c, or with heal restores
// the cluster policy.
func fedIsolate(t *testing.T, c *FedCluster, n *FedNode, heal bool) {
	t.Helper()
	cfg := n.Config()
	if !heal {
		cfg.Federation.DeniedServers = nil
		for _, o := range c.Nodes {
			if o != n {
				cfg.Federation.DeniedServers = append(cfg.Federation.DeniedServers, o.IP)
			}
		}
	}
	if err := n.Fed().ReloadPolicy(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestFederationStateResRandomPartition: three servers (SQLite, PostgreSQL,
// SQLite) share one room per room version 10, 11 and 12. Each server has an
// actor (with power) and a victim. The servers are cut off from each other
// and each actor makes random conflicting state changes: power levels
// (promoting and demoting the others, including other actors), bans of
// victims, join rules and the topic. After healing and one message from
// each server, all three servers return the same current state for every
// room: the same event for every (type, state_key). The seed is logged
// (ENCLAVE_STATERES_SEED replays one).
func TestFederationStateResRandomPartition(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("ENCLAVE_STATERES_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))

	c := NewFedCluster(t, storage.SQLite, storage.Postgres, storage.SQLite)
	c.StartAll()
	names := []string{"a", "b", "c"}
	actors := make([]*mautrix.Client, 3)
	victims := make([]*mautrix.Client, 3)
	for i, n := range c.Nodes {
		actors[i] = fedUser(t, n, "actor"+names[i])
		victims[i] = fedUser(t, n, "victim"+names[i])
	}
	owner := actors[0] // the creator: infinite power in v12 rooms
	var targets []id.UserID
	for i := range actors {
		if i > 0 {
			targets = append(targets, actors[i].UserID)
		}
		targets = append(targets, victims[i].UserID)
	}

	rooms := map[string]id.RoomID{}
	for _, ver := range []string{"10", "11", "12"} {
		users := map[id.UserID]int{actors[1].UserID: 100, actors[2].UserID: 75, victims[0].UserID: 10}
		if ver != "12" {
			users[owner.UserID] = 100 // v12 creators are not in power levels
		}
		created, err := owner.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{
			Preset: "public_chat", Name: "random v" + ver, RoomVersion: id.RoomVersion(ver),
			PowerLevelOverride: &event.PowerLevelsEventContent{
				Users: users, BanPtr: ptrInt(50), KickPtr: ptrInt(50), InvitePtr: ptrInt(0),
				StateDefaultPtr: ptrInt(50), Events: map[string]int{"m.room.power_levels": 50, "m.room.topic": 25},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		r := created.RoomID
		// One server at a time, and A must have a server's joins before the
		// next joins through it: a server sends its events only to the
		// servers in the room at the time.
		for i := range c.Nodes {
			for _, cli := range []*mautrix.Client{actors[i], victims[i]} {
				if cli != owner {
					fedJoin(t, cli, r, c.Nodes[0])
				}
			}
			waitFor(t, "A to see server "+names[i]+"'s joins", 20*time.Second, func() bool {
				return fedMembership(t, owner, r, victims[i].UserID.String()) == "join"
			})
		}
		for i := 1; i < 3; i++ {
			fedWaitSameState(t, owner, actors[i], r, 20*time.Second)
		}
		rooms[ver] = r
	}

	for _, n := range c.Nodes {
		fedIsolate(t, c, n, false)
	}
	time.Sleep(200 * time.Millisecond)

	// Each actor makes its changes on its own side of the partition,
	// interleaved across servers; refusals (403 after a demotion) are part
	// of the game.
	applied, refused := 0, 0
	for step := 0; step < 8; step++ {
		for i, cli := range actors {
			for _, ver := range []string{"10", "11", "12"} {
				r := rooms[ver]
				var err error
				switch rng.Intn(4) {
				case 0:
					target := targets[rng.Intn(len(targets))]
					if target == cli.UserID {
						target = victims[i].UserID
					}
					pl := fedPowerLevels(t, cli, r)
					users, _ := pl["users"].(map[string]any)
					if users == nil {
						users = map[string]any{}
					}
					users[target.String()] = []int{0, 25, 50, 75, 100}[rng.Intn(5)]
					pl["users"] = users
					_, err = cli.SendStateEvent(ctxT(t), r, event.StatePowerLevels, "", pl)
				case 1:
					victim := victims[rng.Intn(3)].UserID
					_, err = cli.BanUser(ctxT(t), r, &mautrix.ReqBanUser{UserID: victim, Reason: "partition"})
				case 2:
					rule := []event.JoinRule{event.JoinRulePublic, event.JoinRuleInvite, event.JoinRuleKnock}[rng.Intn(3)]
					_, err = cli.SendStateEvent(ctxT(t), r, event.StateJoinRules, "", map[string]any{"join_rule": rule})
				case 3:
					_, err = cli.SendStateEvent(ctxT(t), r, event.StateTopic, "", map[string]any{"topic": names[i] + strconv.Itoa(step)})
				}
				if err != nil {
					refused++
				} else {
					applied++
				}
			}
		}
	}
	t.Logf("%d state changes applied during the partition, %d refused", applied, refused)
	diverged := 0
	for _, r := range rooms {
		for i := 1; i < 3; i++ {
			if len(fedStateDiff(fedStateIDs(t, owner, r), fedStateIDs(t, actors[i], r))) > 0 {
				diverged++
			}
		}
	}
	if diverged == 0 {
		t.Fatal("no server's state differs from A's during the partition; nothing to resolve")
	}

	healed := time.Now()
	for _, n := range c.Nodes {
		fedIsolate(t, c, n, true)
	}
	for _, ver := range []string{"10", "11", "12"} {
		for i, cli := range actors {
			if _, err := cli.SendText(ctxT(t), rooms[ver], "healed "+names[i]); err != nil {
				t.Fatalf("%s after healing in v%s: %v", cli.UserID, ver, err)
			}
		}
	}
	for _, ver := range []string{"10", "11", "12"} {
		r := rooms[ver]
		for _, cli := range actors {
			deadline := time.Now().Add(40 * time.Second)
			for {
				got := fedBodies(fedTimeline(t, cli, r), "healed ")
				if len(got) == 3 {
					break
				}
				if time.Now().After(deadline) {
					for i := 1; i < 3; i++ {
						t.Logf("v%s: diff A vs %s: %v", ver, names[i], fedStateDiff(fedStateIDs(t, owner, r), fedStateIDs(t, actors[i], r)))
					}
					for _, o := range actors {
						t.Logf("%s sees actor c %q, levels %v, join rule %v", o.UserID, fedMembership(t, o, r, actors[2].UserID.String()), fedPowerLevels(t, o, r)["users"], fedStateIDs(t, o, r)["m.room.join_rules|"])
					}
					t.Fatalf("v%s: %s sees only %v after 40s", ver, cli.UserID, got)
				}
				time.Sleep(250 * time.Millisecond)
			}
		}
		for i := 1; i < 3; i++ {
			fedWaitSameState(t, owner, actors[i], r, 40*time.Second)
		}
		st := fedStateIDs(t, owner, r)
		t.Logf("v%s: all three servers agree on %d state slots (%v after healing)", ver, len(st), time.Since(healed))
	}
	// Settled: one more round trip leaves them agreeing.
	time.Sleep(time.Second)
	for _, ver := range []string{"10", "11", "12"} {
		for i := 1; i < 3; i++ {
			if diff := fedStateDiff(fedStateIDs(t, owner, rooms[ver]), fedStateIDs(t, actors[i], rooms[ver])); len(diff) != 0 {
				t.Fatalf("v%s: server %s diverged again: %v", ver, names[i], diff)
			}
		}
	}
}
