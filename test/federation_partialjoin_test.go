package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/roomserver"
	"enclave/storage"
)

// fillMembers joins n members @<prefix>NNN:<a> to room on a, in one batch
// through a's room server.
func fillMembers(t *testing.T, a *FedNode, roomID, prefix string, n int) []string {
	t.Helper()
	var ids []string
	_, err := a.Rooms.ImportEvents(context.Background(), roomID, n, func(i int, _ string) (roomserver.SendRequest, error) {
		uid := fmt.Sprintf("@%s%03d:%s", prefix, i, a.ServerName)
		ids = append(ids, uid)
		return roomserver.SendRequest{Sender: uid, Type: "m.room.member", StateKey: &uid, Content: json.RawMessage(`{"membership":"join"}`)}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// partialSendJoin is a peer's send_join v2 into roomID on a, with the query
// given; it returns the parsed answer and the join event.
type sendJoinAnswer struct {
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room"`
}

// TestPartialStateSendJoinResident: a send_join v2 with omit_members=true
// (MSC3706) is answered with members_omitted, servers_in_room and the state
// without member events (a named room) or with only the heroes' (a nameless
// one); the auth chain holds exactly what authorises that state and the
// join, none of it but the create event repeated from state, and no member event that authorises
// nothing. Without the flag, and on v1, the answer is the full state. The
// resident stores the join either way.
func TestPartialStateSendJoinResident(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		c := NewFedCluster(t, d)
		peer := c.AddPeer()
		c.StartAll()
		a := c.Nodes[0]
		alice := fedUser(t, a, "alice")
		for _, named := range []bool{true, false} {
			req := &mautrix.ReqCreateRoom{Preset: "public_chat"}
			if named {
				req.Name = "partial"
			}
			created, err := alice.CreateRoom(ctxT(t), req)
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID.String()
			members := fillMembers(t, a, room, "m", 20)
			full, err := a.Rooms.CurrentState(context.Background(), room)
			if err != nil {
				t.Fatal(err)
			}
			for i, query := range []string{"?omit_members=true", "", "?omit_members=false"} {
				pat := peer.UserID(fmt.Sprintf("pat%v%d", named, i))
				join, ver := peer.MakeMembership(t, spec.ServerName(a.ServerName), "join", room, pat)
				b := peer.MustDo(t, http.StatusOK, spec.ServerName(a.ServerName), http.MethodPut,
					"/_matrix/federation/v2/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(join.EventID())+query, json.RawMessage(join.JSON()))
				var ans sendJoinAnswer
				if err := json.Unmarshal(b, &ans); err != nil {
					t.Fatal(err)
				}
				if m, _ := a.Rooms.Membership(context.Background(), room, pat); m != "join" {
					t.Fatalf("A holds %s's membership as %q", pat, m)
				}
				// Before the first join only A is in the room; the peer
				// is from its first join on.
				wantServers := map[string]bool{a.ServerName: true}
				if i > 0 {
					wantServers[string(peer.ServerName)] = true
				}
				gotServers := map[string]bool{}
				for _, s := range ans.ServersInRoom {
					gotServers[s] = true
				}
				if len(gotServers) != len(ans.ServersInRoom) || fmt.Sprint(gotServers) != fmt.Sprint(wantServers) {
					t.Fatalf("servers_in_room %v, want %v", ans.ServersInRoom, wantServers)
				}
				state := map[string]gomatrixserverlib.PDU{}
				stateMembers := map[string]bool{}
				for _, raw := range ans.State {
					ev, err := ver.NewEventFromUntrustedJSON(raw)
					if err != nil {
						t.Fatal(err)
					}
					state[ev.EventID()] = ev
					if ev.Type() == "m.room.member" {
						stateMembers[*ev.StateKey()] = true
					}
				}
				if query != "?omit_members=true" {
					// The full state before the join: every member (an
					// earlier pat's join included).
					if ans.MembersOmitted || len(state) != len(full)+i {
						t.Fatalf("%q: members_omitted %v, %d state events, want false and %d", query, ans.MembersOmitted, len(state), len(full)+i)
					}
					continue
				}
				if !ans.MembersOmitted {
					t.Fatal("omit_members=true answered without members_omitted")
				}
				nonMember := 0
				for k := range full {
					if k.Type != "m.room.member" {
						nonMember++
					}
				}
				wantMembers := 0
				if !named {
					wantMembers = 5 // the heroes: alice and the first members by user ID
				}
				if len(stateMembers) != wantMembers || len(state) != nonMember+wantMembers {
					t.Fatalf("named=%v: %d state events with %d members %v, want %d non-member events and %d members", named, len(state), len(stateMembers), stateMembers, nonMember, wantMembers)
				}
				if !named && (!stateMembers[alice.UserID.String()] || !stateMembers[members[0]]) {
					t.Fatalf("heroes %v lack alice or %s", stateMembers, members[0])
				}
				// The auth chain: no event of state again, everything state
				// and the join need, and none of the 20 members' joins.
				have := map[string]bool{}
				for id := range state {
					have[id] = true
				}
				for _, raw := range ans.AuthChain {
					ev, err := ver.NewEventFromUntrustedJSON(raw)
					if err != nil {
						t.Fatal(err)
					}
					if state[ev.EventID()] != nil && ev.Type() != "m.room.create" {
						t.Fatalf("%s is in both state and auth_chain", ev.EventID())
					}
					if ev.Type() == "m.room.member" && *ev.StateKey() != alice.UserID.String() && !stateMembers[*ev.StateKey()] {
						t.Fatalf("auth_chain carries %s's membership, which authorises nothing sent", *ev.StateKey())
					}
					have[ev.EventID()] = true
				}
				for _, raw := range append(append([]json.RawMessage{}, ans.State...), ans.AuthChain...) {
					ev, _ := ver.NewEventFromUntrustedJSON(raw)
					for _, id := range ev.AuthEventIDs() {
						if !have[id] {
							t.Fatalf("%s's auth event %s is in neither state nor auth_chain", ev.EventID(), id)
						}
					}
				}
				for _, id := range join.AuthEventIDs() {
					if !have[id] {
						t.Fatalf("the join's auth event %s is missing", id)
					}
				}
			}
			// v1 knows no omit_members: the full state, as [200, {…}].
			pat := peer.UserID(fmt.Sprintf("v1pat%v", named))
			join, _ := peer.MakeMembership(t, spec.ServerName(a.ServerName), "join", room, pat)
			b := peer.MustDo(t, http.StatusOK, spec.ServerName(a.ServerName), http.MethodPut,
				"/_matrix/federation/v1/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(join.EventID())+"?omit_members=true", json.RawMessage(join.JSON()))
			var v1 []json.RawMessage
			if err := json.Unmarshal(b, &v1); err != nil || len(v1) != 2 {
				t.Fatalf("v1 answer %s: %v", b, err)
			}
			var ans sendJoinAnswer
			if err := json.Unmarshal(v1[1], &ans); err != nil {
				t.Fatal(err)
			}
			if ans.MembersOmitted || len(ans.State) != len(full)+3 {
				t.Fatalf("v1: members_omitted %v, %d state events, want false and %d", ans.MembersOmitted, len(ans.State), len(full)+3)
			}
		}
	})
}

// TestPartialStateJoin: with federation.faster_joins, a user on B joins a 40-member room on A. B asks
// for omit_members (MSC3706) and stores the state before its join without
// the members (read back from B's snapshot of that state); B's user and
// A's members exchange messages (a member B had no event of among them);
// the full state follows in the background: every member in B's current
// state and /joined_members, and B's partial-state mark completed.
func TestPartialStateJoin(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		c := NewFedCluster(t, d, d)
		c.Nodes[1].Configure = func(cfg *config.Config) { cfg.Federation.FasterJoins = true }
		c.StartAll()
		a, b := c.Nodes[0], c.Nodes[1]
		alice := fedUser(t, a, "alice")
		bob := fedUser(t, b, "bob")
		created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "faster"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		members := fillMembers(t, a, room.String(), "m", 40)
		fedJoin(t, bob, room, a)
		ctx := context.Background()
		joinID := ""
		if st, err := b.Rooms.CurrentState(ctx, room.String()); err == nil {
			if e := st.Get("m.room.member", bob.UserID.String()); e != nil {
				joinID = e.EventID()
			}
		}
		if joinID == "" {
			t.Fatal("B has no join for bob")
		}
		before, err := b.Rooms.StateAt(ctx, joinID, false)
		if err != nil {
			t.Fatal(err)
		}
		for k := range before {
			if k.Type == "m.room.member" {
				t.Fatalf("B's state before the join holds %s's member event: the join was not partial", k.StateKey)
			}
		}
		if before.Get("m.room.name", "") == nil || before.Get("m.room.power_levels", "") == nil {
			t.Fatal("B's partial state lacks the room's name or power levels")
		}
		// A member's message reaches B (its membership comes with the
		// event's auth events if the resync has not brought it yet).
		m := members[7]
		body := `{"msgtype":"m.text","body":"from member 7"}`
		if _, err := a.Rooms.ImportEvents(ctx, room.String(), 1, func(int, string) (roomserver.SendRequest, error) {
			return roomserver.SendRequest{Sender: m, Type: "m.room.message", Content: json.RawMessage(body)}, nil
		}, nil); err != nil {
			t.Fatal(err)
		}
		waitForBody(t, bob, room, "from member 7", time.Minute)
		if _, err := bob.SendText(ctxT(t), room, "from bob"); err != nil {
			t.Fatal(err)
		}
		waitForBody(t, alice, room, "from bob", time.Minute)

		deadline := time.Now().Add(time.Minute)
		for {
			rows, err := storage.PartialStateRooms(ctx, b.DB)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Fatalf("B marks %d rooms partial, want 1", len(rows))
			}
			if rows[0].CompleteTS != 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("B's room still partial after a minute: %+v", rows)
			}
			time.Sleep(100 * time.Millisecond)
		}
		joined, err := bob.JoinedMembers(ctxT(t), room)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range append(members, alice.UserID.String(), bob.UserID.String()) {
			if _, ok := joined.Joined[id.UserID(u)]; !ok {
				t.Fatalf("B's /joined_members lacks %s after the resync (%d members)", u, len(joined.Joined))
			}
		}
		if len(joined.Joined) != len(members)+2 {
			t.Fatalf("B lists %d joined members, want %d", len(joined.Joined), len(members)+2)
		}
	})
}
