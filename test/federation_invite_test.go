package test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/storage"
)

// Invites, rejections and knocks across servers: each test asserts what
// both servers store, not only what a client is told.

// fedWaitMembership polls n's room server until user's membership in room
// is want.
func fedWaitMembership(t *testing.T, n *FedNode, room id.RoomID, user id.UserID, want string, timeout time.Duration) {
	t.Helper()
	var got string
	deadline := time.Now().Add(timeout)
	for {
		m, err := n.Rooms.Membership(ctxT(t), room.String(), user.String())
		if err == nil {
			got = m
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s's membership in %s is %q, want %q (last error %v)", n.ServerName, user, room, got, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fedMemberEvent is user's current m.room.member event on n: its ID,
// membership and the servers that signed it.
func fedMemberEvent(t *testing.T, n *FedNode, room id.RoomID, user id.UserID) (string, string, map[string]bool) {
	t.Helper()
	st, err := n.Rooms.CurrentState(ctxT(t), room.String())
	if err != nil {
		t.Fatalf("%s: state of %s: %v", n.ServerName, room, err)
	}
	ev := st.Get("m.room.member", user.String())
	if ev == nil {
		t.Fatalf("%s holds no member event of %s in %s", n.ServerName, user, room)
	}
	m, _ := ev.Membership()
	return ev.EventID(), m, fedSigners(t, ev.JSON())
}

// fedSigners is the set of servers that signed an event's JSON.
func fedSigners(t *testing.T, raw []byte) map[string]bool {
	t.Helper()
	var e struct {
		Signatures map[string]json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for s := range e.Signatures {
		out[s] = true
	}
	return out
}

// fedWaitInvited syncs cli until room is in its invite section and returns
// the stripped state it was shown.
func fedWaitInvited(t *testing.T, cli *mautrix.Client, room id.RoomID, timeout time.Duration) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := cli.SyncRequest(ctxT(t), 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if ir, ok := resp.Rooms.Invite[room]; ok {
			return ir.State.Events
		}
	}
	t.Fatalf("%s never saw the invite to %s", cli.UserID, room)
	return nil
}

// fedSyncToken is cli's current sync token.
func fedSyncToken(t *testing.T, cli *mautrix.Client) string {
	t.Helper()
	resp, err := cli.SyncRequest(ctxT(t), 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	return resp.NextBatch
}

// fedWaitLeftSync syncs cli from since until room is in its leave section
// with cli's own leave in the timeline.
func fedWaitLeftSync(t *testing.T, cli *mautrix.Client, since string, room id.RoomID, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := cli.SyncRequest(ctxT(t), 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if lr, ok := resp.Rooms.Leave[room]; ok {
			for _, e := range lr.Timeline.Events {
				if e.Type == event.StateMember && e.GetStateKey() == cli.UserID.String() && e.Content.Raw["membership"] == "leave" {
					return
				}
			}
			t.Fatalf("%s's leave section for %s lacks its leave: %+v", cli.UserID, room, lr.Timeline.Events)
		}
	}
	t.Fatalf("%s never saw %s in its leave section", cli.UserID, room)
}

// TestFederationInviteJoin: a user on A invites a user on B into an
// invite-only room; the invite A stores carries B's signature (B
// countersigned it through /invite), so when B's user accepts, B accepts
// the invite it finds in A's send_join state and the join succeeds on both
// sides. Rejections go back to A through make_leave/send_leave while B
// takes no part in the room, several times over, also once the inviter
// has left; once B is in the room, invites and rejections of its other
// users travel as ordinary room events.
func TestFederationInviteJoin(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	bob2 := fedUser(t, b, "bob2")
	bob3 := fedUser(t, b, "bob3")

	t.Run("accept", func(t *testing.T) {
		name := "Invites room"
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: name, Invite: []id.UserID{bob.UserID}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		inviteID, m, signers := fedMemberEvent(t, a, room, bob.UserID)
		if m != "invite" || !signers[a.ServerName] || !signers[b.ServerName] {
			t.Fatalf("A stores bob's invite as %q signed by %v, want invite signed by both servers", m, signers)
		}
		fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
		stripped := fedWaitInvited(t, bob, room, 10*time.Second)
		sawName := false
		for _, e := range stripped {
			if e.Type == event.StateRoomName && e.Content.Raw["name"] == name {
				sawName = true
			}
		}
		if !sawName {
			t.Fatalf("bob's invite shows no room name: %v", stripped)
		}

		// No via: B goes through the inviting server.
		if _, err := bob.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{}); err != nil {
			t.Fatalf("bob accepting the invite: %v", err)
		}
		fedWaitMembership(t, a, room, bob.UserID, "join", 10*time.Second)
		fedWaitMembership(t, b, room, bob.UserID, "join", 10*time.Second)
		// bob's join, as B shows it, says what it replaced: the direct
		// invite alice sent.
		var join *event.Event
		for _, e := range fedTimeline(t, bob, room) {
			if e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String() && e.Content.Raw["membership"] == "join" {
				join = e
			}
		}
		if join == nil || join.Unsigned.PrevContent == nil || join.Unsigned.PrevContent.Raw["membership"] != "invite" ||
			join.Unsigned.PrevContent.Raw["is_direct"] != true || join.Unsigned.PrevSender != alice.UserID {
			t.Fatalf("bob's join on B lacks the invite as prev_content: %+v", join)
		}
		evs, err := b.Rooms.Events(ctxT(t), []string{inviteID})
		if err != nil || len(evs) != 1 {
			t.Fatalf("B does not hold the invite %s: %v", inviteID, err)
		}
		if s := fedSigners(t, evs[0].JSON()); !s[a.ServerName] || !s[b.ServerName] {
			t.Fatalf("B's copy of the invite is signed by %v", s)
		}
		if _, err := alice.SendText(ctxT(t), room, "welcome bob"); err != nil {
			t.Fatal(err)
		}
		waitForBody(t, bob, room, "welcome bob", 20*time.Second)
		if _, err := bob.SendText(ctxT(t), room, "thanks alice"); err != nil {
			t.Fatal(err)
		}
		waitForBody(t, alice, room, "thanks alice", 20*time.Second)

		// B takes part now: bob2's invite arrives in the room too, and
		// bob2 joins on B alone; bob3 rejects on B alone.
		for _, u := range []id.UserID{bob2.UserID, bob3.UserID} {
			if _, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: u}); err != nil {
				t.Fatalf("inviting %s: %v", u, err)
			}
			fedWaitMembership(t, b, room, u, "invite", 10*time.Second)
		}
		if _, err := bob2.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{}); err != nil {
			t.Fatalf("bob2 joining: %v", err)
		}
		if _, err := bob3.LeaveRoom(ctxT(t), room); err != nil {
			t.Fatalf("bob3 rejecting: %v", err)
		}
		for _, n := range []*FedNode{a, b} {
			fedWaitMembership(t, n, room, bob2.UserID, "join", 10*time.Second)
			fedWaitMembership(t, n, room, bob3.UserID, "leave", 10*time.Second)
		}
		// Both servers invite each other's users at the same moment: each
		// holds its room while the other countersigns, without waiting on
		// each other.
		alice2 := fedUser(t, a, "alice2")
		bob4 := fedUser(t, b, "bob4")
		start := time.Now()
		errs := make(chan error, 2)
		go func() {
			_, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: bob4.UserID})
			errs <- err
		}()
		go func() {
			_, err := bob.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: alice2.UserID})
			errs <- err
		}()
		for i := 0; i < 2; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("concurrent invites: %v", err)
			}
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("concurrent invites took %v", d)
		}
		for _, n := range []*FedNode{a, b} {
			fedWaitMembership(t, n, room, bob4.UserID, "invite", 10*time.Second)
			fedWaitMembership(t, n, room, alice2.UserID, "invite", 10*time.Second)
		}
		if d := fedStateDiff(fedStateIDs(t, alice, room), fedStateIDs(t, bob, room)); len(d) != 0 {
			t.Fatalf("A and B disagree on the room state: %v", d)
		}
	})

	t.Run("room versions 11 and 12", func(t *testing.T) {
		// v12 room IDs name no server: the join and the rejection go
		// through the inviting server.
		for _, v := range []id.RoomVersion{"11", "12"} {
			resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: v, Invite: []id.UserID{bob.UserID}})
			if err != nil {
				t.Fatal(err)
			}
			fedWaitMembership(t, b, resp.RoomID, bob.UserID, "invite", 10*time.Second)
			if _, err := bob.JoinRoom(ctxT(t), resp.RoomID.String(), &mautrix.ReqJoinRoom{}); err != nil {
				t.Fatalf("v%s: joining: %v", v, err)
			}
			fedWaitMembership(t, a, resp.RoomID, bob.UserID, "join", 10*time.Second)
			fedWaitMembership(t, b, resp.RoomID, bob.UserID, "join", 10*time.Second)

			resp, err = alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: v, Invite: []id.UserID{bob.UserID}})
			if err != nil {
				t.Fatal(err)
			}
			fedWaitMembership(t, b, resp.RoomID, bob.UserID, "invite", 10*time.Second)
			if _, err := bob.LeaveRoom(ctxT(t), resp.RoomID); err != nil {
				t.Fatalf("v%s: rejecting: %v", v, err)
			}
			fedWaitMembership(t, a, resp.RoomID, bob.UserID, "leave", 10*time.Second)
			fedWaitMembership(t, b, resp.RoomID, bob.UserID, "leave", 10*time.Second)
		}
	})

	t.Run("revoked invite", func(t *testing.T) {
		// B takes no part in the room: A's kick of the invitee reaches B,
		// which keeps it beside the room as it kept the invite.
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
		if _, err := alice.KickUser(ctxT(t), room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "sent by mistake"}); err != nil {
			t.Fatal(err)
		}
		fedWaitMembership(t, a, room, bob.UserID, "leave", 10*time.Second)
		fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
	})

	t.Run("reject several times", func(t *testing.T) {
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		for i := 0; i < 3; i++ {
			if _, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatalf("invite %d: %v", i, err)
			}
			fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
			since := fedSyncToken(t, bob)
			if _, err := bob.LeaveRoom(ctxT(t), room); err != nil {
				t.Fatalf("rejecting invite %d: %v", i, err)
			}
			fedWaitLeftSync(t, bob, since, room, 10*time.Second)
			fedWaitMembership(t, a, room, bob.UserID, "leave", 10*time.Second)
			fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
			if _, m, _ := fedMemberEvent(t, a, room, bob.UserID); m != "leave" {
				t.Fatalf("A's state has bob %q", m)
			}
		}
	})

	t.Run("reject in an empty room", func(t *testing.T) {
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
		if _, err := alice.LeaveRoom(ctxT(t), room); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.LeaveRoom(ctxT(t), room); err != nil {
			t.Fatalf("rejecting the invite to a room nobody is in: %v", err)
		}
		fedWaitMembership(t, a, room, bob.UserID, "leave", 10*time.Second)
		fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
	})

	t.Run("reject while the inviting server is down", func(t *testing.T) {
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
		a.Stop()
		defer a.Start()
		// No server takes the leave: B rejects the invite on its own.
		if _, err := bob.LeaveRoom(ctxT(t), room); err != nil {
			t.Fatalf("rejecting with A down: %v", err)
		}
		fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
		if _, _, signers := fedMemberEventBeside(t, b, room, bob.UserID); !signers[b.ServerName] {
			t.Fatalf("B's leave is signed by %v", signers)
		}
	})
}

// fedMemberEventBeside is user's latest m.room.member event n stores
// (also one kept beside a room n takes no part in).
func fedMemberEventBeside(t *testing.T, n *FedNode, room id.RoomID, user id.UserID) (string, string, map[string]bool) {
	t.Helper()
	e, err := storage.LatestMembershipBefore(ctxT(t), n.DB, room.String(), user.String(), 1<<62)
	if err != nil {
		t.Fatalf("%s: %s's membership events in %s: %v", n.ServerName, user, room, err)
	}
	return e.EventID, e.Membership, fedSigners(t, e.JSON)
}

// TestFederationRejectInviteRelayed: A hosts a room C's user has joined;
// A's user invites B's user, and C sees the invite; B's user rejects it
// while B takes no part in the room (make_leave/send_leave to A), and A
// passes the leave on, so all three servers store it.
func TestFederationRejectInviteRelayed(t *testing.T) {
	c := NewFedCluster(t, storage.Postgres, storage.SQLite, storage.SQLite)
	c.StartAll()
	a, b, cc := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	carol := fedUser(t, cc, "carol")
	resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	fedJoin(t, carol, room, a)
	if _, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*FedNode{a, b, cc} {
		fedWaitMembership(t, n, room, bob.UserID, "invite", 10*time.Second)
	}
	if _, err := bob.LeaveRoom(ctxT(t), room); err != nil {
		t.Fatalf("rejecting through A: %v", err)
	}
	for _, n := range []*FedNode{a, b, cc} {
		fedWaitMembership(t, n, room, bob.UserID, "leave", 10*time.Second)
	}
	if d := fedStateDiff(fedStateIDs(t, alice, room), fedStateIDs(t, carol, room)); len(d) != 0 {
		t.Fatalf("A and C disagree on the room state: %v", d)
	}
}

// TestFederationUnbanViaInvite: B's user joins a room on A, is banned and
// unbanned; B takes no part in the room any more, yet A's re-invite
// reaches B's user, who accepts it through A.
func TestFederationUnbanViaInvite(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	fedJoin(t, bob, room, a)
	if _, err := alice.BanUser(ctxT(t), room, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	fedWaitMembership(t, b, room, bob.UserID, "ban", 10*time.Second)
	if _, err := alice.UnbanUser(ctxT(t), room, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
	if _, err := alice.SendText(ctxT(t), room, "while bob was away"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("re-inviting: %v", err)
	}
	fedWaitMembership(t, a, room, bob.UserID, "invite", 10*time.Second)
	fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
	fedWaitInvited(t, bob, room, 10*time.Second)
	fedJoin(t, bob, room, a)
	fedWaitMembership(t, a, room, bob.UserID, "join", 10*time.Second)
	fedWaitMembership(t, b, room, bob.UserID, "join", 10*time.Second)
	if _, err := alice.SendText(ctxT(t), room, "welcome back"); err != nil {
		t.Fatal(err)
	}
	waitForBody(t, bob, room, "welcome back", 20*time.Second)
	if _, err := bob.SendText(ctxT(t), room, "glad to be back"); err != nil {
		t.Fatal(err)
	}
	waitForBody(t, alice, room, "glad to be back", 20*time.Second)
	if d := fedStateDiff(fedStateIDs(t, alice, room), fedStateIDs(t, bob, room)); len(d) != 0 {
		t.Fatalf("A and B disagree on the room state: %v", d)
	}
}

// fedKnock knocks on room as cli through via and returns the HTTP status.
func fedKnock(t *testing.T, cli *mautrix.Client, room string, via *FedNode, reason string) rawResp {
	t.Helper()
	body := map[string]any{}
	if reason != "" {
		body["reason"] = reason
	}
	return raw(t, "POST", cli.HomeserverURL.String()+"/_matrix/client/v3/knock/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(via.ServerName), cli.AccessToken, body)
}

// fedWaitKnocked syncs cli until room is in its knock section.
func fedWaitKnocked(t *testing.T, cli *mautrix.Client, room id.RoomID, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/sync?timeout=500", cli.AccessToken, nil)
		if rooms, _ := r.Body["rooms"].(map[string]any); rooms != nil {
			if k, _ := rooms["knock"].(map[string]any); k != nil && k[room.String()] != nil {
				return
			}
		}
	}
	t.Fatalf("%s never saw its knock on %s in sync", cli.UserID, room)
}

// TestFederationKnock: users on B knock on an invite-only room on A
// (make_knock/send_knock through server_name), in room version 7 with the
// knock join rule and in version 10 with knock_restricted (MSC3787). Each
// step checks the membership both servers store: a knock on a room that
// does not allow it and a join without an invite are refused, the knock
// (with its reason) reaches A, a member rejects it (kick) and the user
// knocks again, the user retracts it (leave through A), a member accepts
// it (invite) and the user joins, and a banned user's knock is refused.
func TestFederationKnock(t *testing.T) {
	c := NewFedCluster(t, storage.Postgres, storage.SQLite)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	for _, tc := range []struct{ version, rule string }{{"7", "knock"}, {"10", "knock_restricted"}} {
		t.Run("v"+tc.version+" "+tc.rule, func(t *testing.T) {
			bob := fedUser(t, b, "bob"+tc.version)
			eve := fedUser(t, b, "eve"+tc.version)
			resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: id.RoomVersion(tc.version), RoomAliasName: "knock" + tc.version})
			if err != nil {
				t.Fatal(err)
			}
			room := resp.RoomID
			if r := fedKnock(t, bob, room.String(), a, "may I?"); r.Status != 403 {
				t.Fatalf("knock on an invite-only room: %d %s", r.Status, r.Raw)
			}
			content := map[string]any{"join_rule": tc.rule}
			if tc.rule == "knock_restricted" {
				content["allow"] = []any{}
			}
			if _, err := alice.SendStateEvent(ctxT(t), room, event.StateJoinRules, "", content); err != nil {
				t.Fatal(err)
			}
			_, err = bob.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
			wantMatrixErr(t, "joining a knock room uninvited", err, 403, "M_FORBIDDEN")

			knock := func(u *mautrix.Client, reason string) {
				t.Helper()
				if r := fedKnock(t, u, room.String(), a, reason); r.Status != 200 || r.Body["room_id"] != room.String() {
					t.Fatalf("%s knocking: %d %s", u.UserID, r.Status, r.Raw)
				}
				fedWaitMembership(t, a, room, u.UserID, "knock", 10*time.Second)
				fedWaitMembership(t, b, room, u.UserID, "knock", 10*time.Second)
			}
			knock(bob, "let me in")
			var m map[string]any
			if err := alice.StateEvent(ctxT(t), room, event.StateMember, bob.UserID.String(), &m); err != nil || m["reason"] != "let me in" {
				t.Fatalf("A's knock event: %v %v", m, err)
			}
			fedWaitKnocked(t, bob, room, 10*time.Second)
			knock(bob, "again") // knocking twice is allowed

			// Rejected (kicked), then knocks again.
			if _, err := alice.KickUser(ctxT(t), room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "not yet"}); err != nil {
				t.Fatal(err)
			}
			fedWaitMembership(t, a, room, bob.UserID, "leave", 10*time.Second)
			fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
			knock(bob, "")

			// Retracted: the leave goes through A.
			if _, err := bob.LeaveRoom(ctxT(t), room); err != nil {
				t.Fatalf("retracting the knock: %v", err)
			}
			fedWaitMembership(t, a, room, bob.UserID, "leave", 10*time.Second)
			fedWaitMembership(t, b, room, bob.UserID, "leave", 10*time.Second)
			knock(bob, "once more")

			// Accepted: invited, cannot knock any more, joins.
			if _, err := alice.InviteUser(ctxT(t), room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			fedWaitMembership(t, a, room, bob.UserID, "invite", 10*time.Second)
			fedWaitMembership(t, b, room, bob.UserID, "invite", 10*time.Second)
			if r := fedKnock(t, bob, room.String(), a, "and again"); r.Status != 403 {
				t.Fatalf("knock while invited: %d %s", r.Status, r.Raw)
			}
			fedJoin(t, bob, room, a)
			fedWaitMembership(t, a, room, bob.UserID, "join", 10*time.Second)
			fedWaitMembership(t, b, room, bob.UserID, "join", 10*time.Second)

			// A banned user cannot knock (knocking by alias).
			alias := "#knock" + tc.version + ":" + a.ServerName
			if r := fedKnock(t, eve, alias, a, "hello"); r.Status != 200 {
				t.Fatalf("eve knocking by alias: %d %s", r.Status, r.Raw)
			}
			fedWaitMembership(t, a, room, eve.UserID, "knock", 10*time.Second)
			if _, err := alice.BanUser(ctxT(t), room, &mautrix.ReqBanUser{UserID: eve.UserID}); err != nil {
				t.Fatal(err)
			}
			fedWaitMembership(t, a, room, eve.UserID, "ban", 10*time.Second)
			fedWaitMembership(t, b, room, eve.UserID, "ban", 10*time.Second)
			if r := fedKnock(t, eve, room.String(), a, "I didn't mean it"); r.Status != 403 {
				t.Fatalf("banned user's knock: %d %s", r.Status, r.Raw)
			}
			if m := fedMembership(t, alice, room, eve.UserID.String()); m != "ban" {
				t.Fatalf("eve is %q on A after her refused knock", m)
			}
			if d := fedStateDiff(fedStateIDs(t, alice, room), fedStateIDs(t, bob, room)); len(d) != 0 {
				t.Fatalf("A and B disagree on the room state: %v", d)
			}
		})
	}
}

// TestFederationRemoteAlias: GET /directory/room with another server's
// alias answers from that server (/query/directory), Unicode aliases
// included; an alias the other server does not have is 404; the room
// found that way can be joined and knocked on by alias.
func TestFederationRemoteAlias(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "joint"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	unicode := "#老虎Â£я🤨👉ඞ:" + a.ServerName
	if _, err := alice.CreateAlias(ctxT(t), id.RoomAlias(unicode), room); err != nil {
		t.Fatalf("creating %s: %v", unicode, err)
	}
	for _, alias := range []string{"#joint:" + a.ServerName, unicode} {
		r := raw(t, "GET", b.URL+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), bob.AccessToken, nil)
		if r.Status != 200 || r.Body["room_id"] != room.String() {
			t.Fatalf("B resolving %s: %d %s", alias, r.Status, r.Raw)
		}
		servers, _ := r.Body["servers"].([]any)
		if len(servers) == 0 || servers[0] != a.ServerName {
			t.Fatalf("B resolving %s: servers %v", alias, servers)
		}
	}
	raw(t, "GET", b.URL+"/_matrix/client/v3/directory/room/"+url.PathEscape("#nowhere:"+a.ServerName), bob.AccessToken, nil).
		wantErr(t, "unknown remote alias", 404, "M_NOT_FOUND")
	if _, err := bob.JoinRoom(ctxT(t), unicode, nil); err != nil {
		t.Fatalf("joining by the Unicode alias: %v", err)
	}
	fedWaitMembership(t, a, room, bob.UserID, "join", 10*time.Second)
	fedWaitMembership(t, b, room, bob.UserID, "join", 10*time.Second)
}

// TestFederationFailedJoinUndone: a room created on C, which A federates
// with and B does not. A's user joins through C; B's user then joins
// through A, which accepts the join (send_join), but B cannot verify the
// room's events (they are C's, and B may not fetch C's keys), so the join
// fails on B. B then leaves through A, so the two servers agree the user
// is not in the room, and B does not list the room.
func TestFederationFailedJoinUndone(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	a, b := c.Nodes[0], c.Nodes[1]
	o := c.AddNode(storage.SQLite)
	o.Outsider = true
	a.Configure = func(cfg *config.Config) {
		cfg.Federation.AllowedServers = append(cfg.Federation.AllowedServers, o.IP, o.ServerName)
	}
	o.Configure = func(cfg *config.Config) {
		cfg.Federation.AllowedServers = append(cfg.Federation.AllowedServers, a.IP, a.ServerName)
	}
	c.StartAll()
	olga := fedUser(t, o, "olga")
	amy := fedUser(t, a, "amy")
	bob := fedUser(t, b, "bob")
	resp, err := olga.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	fedJoin(t, amy, room, o)
	if _, err := bob.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err == nil {
		t.Fatal("B joined a room whose events it cannot verify")
	}
	fedWaitMembership(t, a, room, bob.UserID, "leave", 10*time.Second)
	if m, err := b.Rooms.Membership(ctxT(t), room.String(), bob.UserID.String()); err == nil && m == "join" {
		t.Fatalf("B stores bob as %q", m)
	}
	joined, err := bob.JoinedRooms(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range joined.JoinedRooms {
		if r == room {
			t.Fatal("B lists the room as joined")
		}
	}
	if members, err := amy.JoinedMembers(ctxT(t), room); err != nil {
		t.Fatal(err)
	} else if _, ok := members.Joined[bob.UserID]; ok {
		t.Fatalf("A lists bob as joined: %v", members.Joined)
	}
}

// fedDeviceListChanged syncs cli from since until device_lists.changed
// holds every user in want, returning the next token.
func fedDeviceListChanged(t *testing.T, cli *mautrix.Client, since string, want []id.UserID, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []any
	for time.Now().Before(deadline) {
		r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(since), cli.AccessToken, nil)
		if r.Status != 200 {
			t.Fatalf("sync: %d %s", r.Status, r.Raw)
		}
		since, _ = r.Body["next_batch"].(string)
		dl, _ := r.Body["device_lists"].(map[string]any)
		got, _ = dl["changed"].([]any)
		seen := map[string]bool{}
		for _, u := range got {
			s, _ := u.(string)
			seen[s] = true
		}
		all := true
		for _, u := range want {
			all = all && seen[u.String()]
		}
		if all {
			return since
		}
	}
	t.Fatalf("%s never saw device-list changes of %v (last %v)", cli.UserID, want, got)
	return ""
}

// TestFederationInviteStateShowsInvite: a remote user's invite_state on
// their own server carries the invite's event_id and origin_server_ts and
// the inviter's m.room.member, which the inviting server now sends in the
// invite's stripped state.
func TestFederationInviteStateShowsInvite(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	if err := alice.SetDisplayName(ctxT(t), "Alice A"); err != nil {
		t.Fatal(err)
	}
	resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "remote cards", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	inviteID, _, _ := fedMemberEvent(t, a, resp.RoomID, bob.UserID)
	fedWaitMembership(t, b, resp.RoomID, bob.UserID, "invite", 10*time.Second)
	r := syncQuery(t, b.URL, bob.AccessToken, nil).Body
	checkInviteState(t, "remote invite", digList(r, "rooms", "invite", resp.RoomID.String(), "invite_state", "events"), alice.UserID.String(), bob.UserID.String(), inviteID, "Alice A")
}
