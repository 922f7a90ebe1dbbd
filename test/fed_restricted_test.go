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

// Restricted rooms joined over federation (join_authorised_via_users_server).

// fedMemberContent is user's member event content in room as cli's server
// stores it (nil when it has none).
func fedMemberContent(t *testing.T, cli *mautrix.Client, room id.RoomID, user string) map[string]any {
	t.Helper()
	r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/state/m.room.member/"+url.PathEscape(user), cli.AccessToken, nil)
	if r.Status != 200 {
		return nil
	}
	return r.Body
}

// fedWaitJoinedVia waits until every client's server holds user's join
// in room authorised by via.
func fedWaitJoinedVia(t *testing.T, room id.RoomID, user, via string, clis ...*mautrix.Client) {
	t.Helper()
	for _, cli := range clis {
		waitFor(t, user+"'s join authorised by "+via+" on "+cli.HomeserverURL.Host, 15*time.Second, func() bool {
			c := fedMemberContent(t, cli, room, user)
			return c != nil && c["membership"] == "join" && c["join_authorised_via_users_server"] == via
		})
	}
}

func restrictedState(rule string, allow any) []*event.Event {
	return []*event.Event{{Type: event.StateJoinRules, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"join_rule": rule, "allow": allow}}}}
}

func allowRoom(room id.RoomID, via string) []map[string]any {
	return []map[string]any{{"type": "m.room_membership", "room_id": room.String(), "via": []string{via}}}
}

// TestFederationRestrictedJoin: three servers. A holds a restricted room
// (only alice may invite) and the room it allows; B is in both through
// bob, who may not invite. charlie on C, in the allowed room, cannot join
// through B alone (B has no one to authorise: 400 M_UNABLE_TO_GRANT_JOIN
// on make_join), and through [B, A] the join fails over to A, which names
// alice and signs it: the stored join on A, B and C carries
// join_authorised_via_users_server = alice. When B no longer is in the
// allowed room it cannot vouch (M_UNABLE_TO_AUTHORISE_JOIN) and the
// failover works again. erin on B, whose server is in the room but cannot
// authorise, is joined through A (a remote join for a local user), and
// bob's invite in that room is 403. Mangled join rules (allow not a list,
// or of invalid entries) let no one in.
func TestFederationRestrictedJoin(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d, d, d)
			c.StartAll()
			a, b, cn := c.Nodes[0], c.Nodes[1], c.Nodes[2]
			alice, bob, charlie := fedUser(t, a, "alice"), fedUser(t, b, "bob"), fedUser(t, cn, "charlie")
			allowed, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10",
				InitialState: restrictedState("restricted", allowRoom(allowed.RoomID, a.ServerName))})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			if _, err := alice.SendStateEvent(ctxT(t), room, event.StatePowerLevels, "", map[string]any{
				"invite": 100, "users": map[string]any{alice.UserID.String(): 100}}); err != nil {
				t.Fatal(err)
			}

			// Not in the allowed room: refused.
			if _, err := bob.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err == nil {
				t.Fatal("bob joined the restricted room without being in the allowed room")
			}
			fedJoin(t, bob, allowed.RoomID, a)
			fedJoin(t, bob, room, a)
			fedWaitJoinedVia(t, room, bob.UserID.String(), alice.UserID.String(), alice, bob)
			fedJoin(t, charlie, allowed.RoomID, a)

			// B has no one who may invite.
			if _, err := charlie.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName}}); err == nil {
				t.Fatal("charlie joined through B, which has no user who may invite")
			} else if he, ok := err.(mautrix.HTTPError); !ok || he.RespError == nil || he.RespError.ErrCode != "M_UNABLE_TO_GRANT_JOIN" {
				t.Fatalf("join through B: %v, want B's M_UNABLE_TO_GRANT_JOIN", err)
			}
			if m := fedMembership(t, bob, room, charlie.UserID.String()); m != "" {
				t.Fatalf("B stores charlie as %q after the refused join", m)
			}
			if _, err := charlie.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName, a.ServerName}}); err != nil {
				t.Fatalf("join through [B, A]: %v", err)
			}
			fedWaitJoinedVia(t, room, charlie.UserID.String(), alice.UserID.String(), alice, bob, charlie)

			// B leaves the allowed room: it cannot vouch for charlie any more.
			if _, err := charlie.LeaveRoom(ctxT(t), room); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.LeaveRoom(ctxT(t), allowed.RoomID); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "A and B to see charlie leave", 15*time.Second, func() bool {
				return fedMembership(t, alice, room, charlie.UserID.String()) == "leave" && fedMembership(t, bob, room, charlie.UserID.String()) == "leave" &&
					fedMembership(t, alice, allowed.RoomID, bob.UserID.String()) == "leave"
			})
			if _, err := charlie.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName}}); err == nil {
				t.Fatal("charlie joined through B, which is not in the allowed room")
			} else if he, ok := err.(mautrix.HTTPError); !ok || he.RespError == nil || he.RespError.ErrCode != "M_UNABLE_TO_AUTHORISE_JOIN" {
				t.Fatalf("join through B: %v, want B's M_UNABLE_TO_AUTHORISE_JOIN", err)
			}
			if _, err := charlie.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName, a.ServerName}}); err != nil {
				t.Fatalf("second join through [B, A]: %v", err)
			}
			fedWaitJoinedVia(t, room, charlie.UserID.String(), alice.UserID.String(), alice, bob, charlie)

			// A local user of B, which is in the room but may not authorise:
			// B joins erin through A.
			erin := fedUser(t, b, "erin")
			r := raw(t, "POST", b.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/invite", bob.AccessToken, map[string]string{"user_id": erin.UserID.String()})
			if r.Status != 403 {
				t.Fatalf("bob's invite without invite power: %d %s, want 403", r.Status, r.Raw)
			}
			if _, err := erin.JoinRoom(ctxT(t), room.String(), nil); err == nil {
				t.Fatal("erin joined without being in the allowed room")
			}
			fedJoin(t, erin, allowed.RoomID, a)
			if _, err := erin.JoinRoom(ctxT(t), room.String(), nil); err != nil {
				t.Fatalf("erin's join through B's fellow resident A: %v", err)
			}
			fedWaitJoinedVia(t, room, erin.UserID.String(), alice.UserID.String(), alice, bob, charlie)

			// Mangled join rules let no one in without an invite.
			frank := fedUser(t, cn, "frank")
			fedJoin(t, frank, allowed.RoomID, a)
			for _, allow := range []any{[]string{"invalid"}, "invalid"} {
				if _, err := alice.SendStateEvent(ctxT(t), room, event.StateJoinRules, "", map[string]any{"join_rule": "restricted", "allow": allow}); err != nil {
					t.Fatal(err)
				}
				if _, err := frank.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err == nil {
					t.Fatalf("frank joined with allow = %v", allow)
				}
				if m := fedMembership(t, alice, room, frank.UserID.String()); m != "" {
					t.Fatalf("A stores frank as %q with allow = %v", m, allow)
				}
			}
		})
	}
}

// TestFederationRestrictedLocalJoinPowerLevels: in room versions 11 and
// 12, for restricted and knock_restricted rooms, a server already in the
// room authorises a local join with a local member whose power level
// allows inviting, not only with a creator (in v12 the creator alice is
// on A and not in the power levels; bob on B has invite power): charlie's
// join on B names bob, on both servers.
func TestFederationRestrictedLocalJoinPowerLevels(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d, d)
			c.StartAll()
			a, b := c.Nodes[0], c.Nodes[1]
			alice, bob, charlie := fedUser(t, a, "alice"), fedUser(t, b, "bob"), fedUser(t, b, "charlie")
			for _, ver := range []string{"11", "12"} {
				for _, rule := range []string{"restricted", "knock_restricted"} {
					allowed, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
					if err != nil {
						t.Fatal(err)
					}
					created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(ver),
						InitialState: restrictedState(rule, allowRoom(allowed.RoomID, a.ServerName))})
					if err != nil {
						t.Fatalf("v%s %s: %v", ver, rule, err)
					}
					room := created.RoomID
					fedJoin(t, bob, allowed.RoomID, a)
					fedJoin(t, bob, room, a)
					fedWaitJoinedVia(t, room, bob.UserID.String(), alice.UserID.String(), alice, bob)
					users := map[string]any{bob.UserID.String(): 50}
					if ver != "12" {
						users[alice.UserID.String()] = 100
					}
					if _, err := alice.SendStateEvent(ctxT(t), room, event.StatePowerLevels, "", map[string]any{"invite": 50, "users": users}); err != nil {
						t.Fatal(err)
					}
					waitFor(t, "B to see bob's invite power", 15*time.Second, func() bool {
						r := raw(t, "GET", b.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/state/m.room.power_levels/", bob.AccessToken, nil)
						inv, _ := r.Body["invite"].(float64)
						return r.Status == 200 && inv == 50
					})
					fedJoin(t, charlie, allowed.RoomID, a)
					if _, err := charlie.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{b.ServerName}}); err != nil {
						t.Fatalf("v%s %s: charlie's join on B: %v", ver, rule, err)
					}
					fedWaitJoinedVia(t, room, charlie.UserID.String(), bob.UserID.String(), bob, alice)
				}
			}
		})
	}
}

// TestFederationInviteInRoomNotHeld: a user whose server holds only an
// invite to a room (not its state) cannot invite anyone into it: 403
// M_FORBIDDEN, not a 400 from building an event without prev events, and
// the inviting server stores no invite.
func TestFederationInviteInRoomNotHeld(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d, d)
			c.StartAll()
			a, b := c.Nodes[0], c.Nodes[1]
			alice, bob, dave := fedUser(t, a, "alice"), fedUser(t, b, "bob"), fedUser(t, b, "dave")
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			if _, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "bob's invite on B", 15*time.Second, func() bool {
				resp, err := bob.SyncRequest(ctxT(t), 0, "", "", false, event.PresenceOnline)
				return err == nil && resp.Rooms.Invite[room] != nil
			})
			r := raw(t, "POST", b.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/invite", bob.AccessToken, map[string]string{"user_id": dave.UserID.String()})
			if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Fatalf("invite from a room B only has an invite to: %d %s, want 403 M_FORBIDDEN", r.Status, r.Raw)
			}
			if m := fedMembership(t, alice, room, dave.UserID.String()); m != "" {
				t.Fatalf("A stores dave as %q", m)
			}
		})
	}
}
