package test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// syncRaw runs one /sync (since "" = initial, no wait) and returns it.
func syncRaw(t testing.TB, base, token, since string) rawResp {
	t.Helper()
	u := base + "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	return mustOK(t, "sync", raw(t, "GET", u, token, nil))
}

// accountDataIn finds an account data event of typ in a sync response:
// global when roomID is "", else in rooms.join[roomID].
func accountDataIn(r rawResp, roomID, typ string) (map[string]any, bool) {
	holder := r.Body
	if roomID != "" {
		rooms, _ := r.Body["rooms"].(map[string]any)
		join, _ := rooms["join"].(map[string]any)
		holder, _ = join[roomID].(map[string]any)
	}
	ad, _ := holder["account_data"].(map[string]any)
	evs, _ := ad["events"].([]any)
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		if ev["type"] == typ {
			c, _ := ev["content"].(map[string]any)
			return c, true
		}
	}
	return nil, false
}

// TestRemovingAccountData (MSC3391): DELETE on the unstable path, or a PUT
// of {}, deletes global and room account data: GET answers 404, an
// incremental /sync carries the type with empty content, an initial /sync
// leaves it out. Deleting a device deletes its MSC3890 notification
// settings the same way.
func TestRemovingAccountData(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		reg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, reg)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(room.RoomID)
		const typ = "org.example.test"
		c3 := srv.URL + "/_matrix/client/v3/user/" + reg.UserID
		un := srv.URL + "/_matrix/client/unstable/org.matrix.msc3391/user/" + reg.UserID
		for _, tc := range []struct {
			name, roomID   string
			viaDelete      bool
			stable, delete string
		}{
			{"global DELETE", "", true, c3 + "/account_data/" + typ, un + "/account_data/" + typ},
			{"global PUT {}", "", false, c3 + "/account_data/" + typ, ""},
			{"room DELETE", roomID, true, c3 + "/rooms/" + roomID + "/account_data/" + typ, un + "/rooms/" + roomID + "/account_data/" + typ},
			{"room PUT {}", roomID, false, c3 + "/rooms/" + roomID + "/account_data/" + typ, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				mustOK(t, "put", raw(t, "PUT", tc.stable, reg.AccessToken, map[string]any{"test_data": 1}))
				since := syncRaw(t, srv.URL, reg.AccessToken, "").Body["next_batch"].(string)
				if got := mustOK(t, "get", raw(t, "GET", tc.stable, reg.AccessToken, nil)); got.Body["test_data"] != float64(1) {
					t.Fatalf("stored: %s", got.Raw)
				}
				if tc.viaDelete {
					mustOK(t, "delete", raw(t, "DELETE", tc.delete, reg.AccessToken, nil))
				} else {
					mustOK(t, "put {}", raw(t, "PUT", tc.stable, reg.AccessToken, map[string]any{}))
				}
				raw(t, "GET", tc.stable, reg.AccessToken, nil).wantErr(t, "get deleted", 404, "M_NOT_FOUND")
				inc := syncRaw(t, srv.URL, reg.AccessToken, since)
				if c, ok := accountDataIn(inc, tc.roomID, typ); !ok || len(c) != 0 {
					t.Fatalf("incremental sync lacks the empty %s: %s", typ, inc.Raw)
				}
				if _, ok := accountDataIn(syncRaw(t, srv.URL, reg.AccessToken, ""), tc.roomID, typ); ok {
					t.Fatal("initial sync still has the deleted type")
				}
			})
		}
		// Deleting what is not there succeeds; another user's data and the
		// server-managed types are refused.
		mustOK(t, "delete absent", raw(t, "DELETE", un+"/account_data/org.example.none", reg.AccessToken, nil))
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		raw(t, "DELETE", un+"/account_data/"+typ, bob.AccessToken, nil).wantErr(t, "other user", 403, "M_FORBIDDEN")
		raw(t, "DELETE", un+"/account_data/m.push_rules", reg.AccessToken, nil).wantErr(t, "push rules", 405, "M_BAD_JSON")

		t.Run("device deletion", func(t *testing.T) {
			second := loginClient(t, srv.URL, "alice", "alice-pw")
			settings := "org.matrix.msc3890.local_notification_settings." + string(second.DeviceID)
			other := "org.matrix.msc3890.local_notification_settings." + reg.DeviceID
			mustOK(t, "put", raw(t, "PUT", c3+"/account_data/"+settings, reg.AccessToken, map[string]any{"is_silenced": true}))
			mustOK(t, "put own", raw(t, "PUT", c3+"/account_data/"+other, reg.AccessToken, map[string]any{"is_silenced": false}))
			since := syncRaw(t, srv.URL, reg.AccessToken, "").Body["next_batch"].(string)
			// Deleting a device needs UIA: the password of its owner.
			del := srv.URL + "/_matrix/client/v3/devices/" + string(second.DeviceID)
			first := raw(t, "DELETE", del, reg.AccessToken, map[string]any{})
			if first.Status != 401 {
				t.Fatalf("UIA step: %d %s", first.Status, first.Raw)
			}
			mustOK(t, "delete device", raw(t, "DELETE", del, reg.AccessToken, map[string]any{"auth": map[string]any{
				"type": "m.login.password", "session": first.Body["session"],
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "alice-pw"}}))
			raw(t, "GET", c3+"/account_data/"+settings, reg.AccessToken, nil).wantErr(t, "deleted device's settings", 404, "M_NOT_FOUND")
			mustOK(t, "own settings stay", raw(t, "GET", c3+"/account_data/"+other, reg.AccessToken, nil))
			inc := syncRaw(t, srv.URL, reg.AccessToken, since)
			if c, ok := accountDataIn(inc, "", settings); !ok || len(c) != 0 {
				t.Fatalf("incremental sync lacks the emptied settings: %s", inc.Raw)
			}
		})
	})
}

// TestFilterMessagesByRelType (MSC3874): the unstable rel_types and
// not_rel_types of a RoomEventFilter select /messages by relation type.
func TestFilterMessagesByRelType(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		reg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, reg)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		from := syncRaw(t, srv.URL, reg.AccessToken, "").Body["next_batch"].(string)
		base := srv.URL + "/_matrix/client/v3/rooms/" + string(room.RoomID)
		send := func(txn string, content map[string]any) string {
			return mustOK(t, "send", raw(t, "PUT", base+"/send/m.room.message/"+txn, reg.AccessToken, content)).Body["event_id"].(string)
		}
		root := send("t1", map[string]any{"msgtype": "m.text", "body": "root"})
		thread := send("t2", map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		ref := send("t3", map[string]any{"msgtype": "m.text", "body": "reference", "m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})
		for _, tc := range []struct {
			filter string
			want   []string
		}{
			{`{"org.matrix.msc3874.rel_types":["m.thread"]}`, []string{thread}},
			{`{"org.matrix.msc3874.rel_types":["m.reference"]}`, []string{ref}},
			{`{"org.matrix.msc3874.rel_types":["m.thread","m.reference"]}`, []string{thread, ref}},
			{`{"org.matrix.msc3874.not_rel_types":["m.thread"]}`, []string{root, ref}},
			{`{"org.matrix.msc3874.not_rel_types":["m.reference"]}`, []string{root, thread}},
			{`{"org.matrix.msc3874.not_rel_types":["m.thread","m.reference"]}`, []string{root}},
		} {
			r := mustOK(t, tc.filter, raw(t, "GET", base+"/messages?dir=f&from="+url.QueryEscape(from)+"&filter="+url.QueryEscape(tc.filter), reg.AccessToken, nil))
			chunk, _ := r.Body["chunk"].([]any)
			var got []string
			for _, e := range chunk {
				got = append(got, e.(map[string]any)["event_id"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("%s: got %v, want %v", tc.filter, got, tc.want)
			}
		}
	})
}

// inviteConfig sets the user's MSC4155 invite permission config.
func inviteConfig(t *testing.T, base string, cli *mautrix.Client, cfg map[string]any) {
	t.Helper()
	mustOK(t, "invite config", raw(t, "PUT", base+"/_matrix/client/v3/user/"+string(cli.UserID)+"/account_data/org.matrix.msc4155.invite_permission_config", cli.AccessToken, cfg))
}

// inviteStatus creates a private room as inviter and invites invitee; it
// returns the room and the raw /invite answer.
func inviteStatus(t *testing.T, base string, inviter *mautrix.Client, invitee id.UserID) (string, rawResp) {
	t.Helper()
	room, err := inviter.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	return string(room.RoomID), raw(t, "POST", base+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/invite", inviter.AccessToken, map[string]any{"user_id": invitee})
}

// invitedTo lists the rooms in an initial /sync's rooms.invite.
func invitedTo(t *testing.T, base string, cli *mautrix.Client) map[string]any {
	rooms, _ := syncRaw(t, base, cli.AccessToken, "").Body["rooms"].(map[string]any)
	inv, _ := rooms["invite"].(map[string]any)
	return inv
}

// TestInviteFiltering (MSC4155): the invitee's invite permission config
// refuses blocked invites with 403 (nothing stored), accepts ignored ones
// without showing them, and lets allowed users through from blocked
// servers; user rules beat server rules; globs match.
func TestInviteFiltering(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		bob := sessionClient(t, srv.URL, Register(t, srv.URL, "bob", "bob-pw", false))
		eve := sessionClient(t, srv.URL, Register(t, srv.URL, "eve", "eve-pw", false))
		caps := mustOK(t, "capabilities", raw(t, "GET", srv.URL+"/_matrix/client/v3/capabilities", bob.AccessToken, nil))
		if c, _ := caps.Body["capabilities"].(map[string]any)["org.matrix.msc4155.invite_permission_config_enforced"].(map[string]any); c["enabled"] != true {
			t.Fatalf("capability missing: %s", caps.Raw)
		}
		n := 0
		fresh := func(cfg map[string]any) *mautrix.Client {
			n++
			a := sessionClient(t, srv.URL, Register(t, srv.URL, "alice"+strconv.Itoa(n), "pw", false))
			inviteConfig(t, srv.URL, a, cfg)
			return a
		}
		blocked := func(what string, inviter, alice *mautrix.Client) {
			t.Helper()
			room, r := inviteStatus(t, srv.URL, inviter, alice.UserID)
			r.wantErr(t, what, 403, "M_FORBIDDEN")
			if m, _ := bob.Members(ctxT(t), id.RoomID(room)); m != nil && len(m.Chunk) > 1 && inviter == bob {
				t.Fatalf("%s: the refused invite was stored: %v", what, m.Chunk)
			}
		}
		allowed := func(what string, inviter, alice *mautrix.Client) {
			t.Helper()
			room, r := inviteStatus(t, srv.URL, inviter, alice.UserID)
			mustOK(t, what, r)
			if _, ok := invitedTo(t, srv.URL, alice)[room]; !ok {
				t.Fatalf("%s: invite not shown", what)
			}
		}
		allowed("no rules", bob, fresh(map[string]any{}))
		allowed("null fields", bob, fresh(map[string]any{"allowed_users": nil, "blocked_users": nil, "blocked_servers": nil}))
		a := fresh(map[string]any{"blocked_users": []string{string(bob.UserID)}})
		blocked("blocked user", bob, a)
		allowed("other user", eve, a)
		a = fresh(map[string]any{"ignored_users": []string{string(bob.UserID)}})
		room, r := inviteStatus(t, srv.URL, bob, a.UserID)
		mustOK(t, "ignored user's invite succeeds", r)
		if _, ok := invitedTo(t, srv.URL, a)[room]; ok {
			t.Fatal("ignored invite shown")
		}
		// Sliding sync hides it too, and still lists an invite it lets through.
		shown, _ := inviteStatus(t, srv.URL, eve, a.UserID)
		ss := mustOK(t, "sliding sync", slidingClient{t, srv.URL, a.AccessToken}.sync("", 0, map[string]any{
			"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 1}},
		}))
		rooms, _ := ss.Body["rooms"].(map[string]any)
		if _, ok := rooms[room]; ok {
			t.Fatalf("sliding sync shows the ignored invite: %s", ss.Raw)
		}
		if _, ok := rooms[shown]; !ok {
			t.Fatalf("sliding sync lacks the allowed invite: %s", ss.Raw)
		}
		a = fresh(map[string]any{"blocked_servers": []string{"*"}, "allowed_users": []string{string(eve.UserID)}})
		blocked("blocked server", bob, a)
		allowed("allowed user on a blocked server", eve, a)
		a = fresh(map[string]any{"blocked_users": []string{"@b?b:*"}, "allowed_servers": []string{"*"}})
		blocked("globbed user on an allowed server", bob, a)
		allowed("other user on the allowed server", eve, a)
		a = fresh(map[string]any{"blocked_users": []string{string(bob.UserID)}})
		_, err := bob.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{a.UserID}})
		if err == nil {
			t.Fatal("createRoom inviting a user who blocks the creator succeeded")
		}
		if len(invitedTo(t, srv.URL, a)) != 0 {
			t.Fatal("blocked createRoom invite shown")
		}
	})
}

// TestInviteFilteringFederation: the invitee's server applies the config
// to invites from other servers, and the inviter gets the 403.
func TestInviteFilteringFederation(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	bob := fedUser(t, b, "bob")
	bob2 := fedUser(t, b, "bob2")
	inviteConfig(t, a.URL, alice, map[string]any{"blocked_servers": []string{b.ServerName}, "allowed_users": []string{string(bob2.UserID)}})
	_, r := inviteStatus(t, b.URL, bob, alice.UserID)
	r.wantErr(t, "invite from a blocked server", 403, "M_FORBIDDEN")
	room, r := inviteStatus(t, b.URL, bob2, alice.UserID)
	mustOK(t, "allowed user on the blocked server", r)
	fedWaitInvited(t, alice, id.RoomID(room), 10*time.Second)
}

// jumpTo asks /timestamp_to_event and returns the event ID ("" on 404).
func jumpTo(t *testing.T, base string, cli *mautrix.Client, room string, ts int64, dir string) string {
	t.Helper()
	r := raw(t, "GET", base+"/_matrix/client/v1/rooms/"+room+"/timestamp_to_event?ts="+strconv.FormatInt(ts, 10)+"&dir="+dir, cli.AccessToken, nil)
	if r.Status == 404 && r.errcode() == "M_NOT_FOUND" {
		return ""
	}
	mustOK(t, "timestamp_to_event", r)
	if _, ok := r.Body["origin_server_ts"].(float64); !ok {
		t.Fatalf("no origin_server_ts: %s", r.Raw)
	}
	return r.Body["event_id"].(string)
}

// TestJumpToDateEndpoint (MSC3030, spec v1.6): /timestamp_to_event finds
// the closest event in either direction (ties by order in the room),
// answers 404 M_NOT_FOUND outside the room's lifetime, 403 to non-members
// and 400 M_INVALID_PARAM to bad parameters.
func TestJumpToDateEndpoint(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		reg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, reg)
		bob := sessionClient(t, srv.URL, Register(t, srv.URL, "bob", "bob-pw", false))
		before := time.Now().UnixMilli() - 1
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := string(resp.RoomID)
		time.Sleep(5 * time.Millisecond)
		beforeA := time.Now().UnixMilli()
		a, _ := alice.SendText(ctxT(t), resp.RoomID, "A")
		time.Sleep(5 * time.Millisecond)
		afterA := time.Now().UnixMilli()
		time.Sleep(5 * time.Millisecond)
		b, _ := alice.SendText(ctxT(t), resp.RoomID, "B")
		time.Sleep(5 * time.Millisecond)
		afterB := time.Now().UnixMilli()
		for _, tc := range []struct {
			ts   int64
			dir  string
			want string
		}{
			{beforeA, "f", string(a.EventID)},
			{afterA, "b", string(a.EventID)},
			{afterA, "f", string(b.EventID)},
			{afterB, "b", string(b.EventID)},
			{afterB, "f", ""},
			{before, "b", ""},
		} {
			if got := jumpTo(t, srv.URL, alice, room, tc.ts, tc.dir); got != tc.want {
				t.Fatalf("ts %d dir %s: got %q, want %q", tc.ts, tc.dir, got, tc.want)
			}
		}
		// Of events sharing a millisecond, forward finds the first.
		var same []string
		for i := 0; i < 5; i++ {
			s, _ := alice.SendText(ctxT(t), resp.RoomID, "same")
			same = append(same, string(s.EventID))
		}
		ev, err := alice.GetEvent(ctxT(t), resp.RoomID, id.EventID(same[0]))
		if err != nil {
			t.Fatal(err)
		}
		if got := jumpTo(t, srv.URL, alice, room, ev.Timestamp, "f"); got != same[0] {
			t.Fatalf("forward at %d: %s, want the first of %v", ev.Timestamp, got, same)
		}
		raw(t, "GET", srv.URL+"/_matrix/client/v1/rooms/"+room+"/timestamp_to_event?ts=1&dir=f", bob.AccessToken, nil).wantErr(t, "non-member of a public room", 403, "M_FORBIDDEN")
		raw(t, "GET", srv.URL+"/_matrix/client/v1/rooms/"+room+"/timestamp_to_event?ts=x&dir=f", alice.AccessToken, nil).wantErr(t, "bad ts", 400, "M_INVALID_PARAM")
		raw(t, "GET", srv.URL+"/_matrix/client/v1/rooms/"+room+"/timestamp_to_event?ts=1&dir=up", alice.AccessToken, nil).wantErr(t, "bad dir", 400, "M_INVALID_PARAM")
	})
}

// TestJumpToDateFederation: a server that joined late asks the room's
// other servers (federation /timestamp_to_event) and finds the events
// sent before its user joined, fetched so that /context and /messages
// work from them.
func TestJumpToDateFederation(t *testing.T) {
	c := NewFedCluster(t, storage.SQLite, storage.Postgres)
	c.StartAll()
	a, b := c.Nodes[0], c.Nodes[1]
	alice := fedUser(t, a, "alice")
	charlie := fedUser(t, b, "charlie")
	resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	beforeA := time.Now().UnixMilli()
	evA, _ := alice.SendText(ctxT(t), resp.RoomID, "A")
	evB, _ := alice.SendText(ctxT(t), resp.RoomID, "B")
	time.Sleep(5 * time.Millisecond)
	afterB := time.Now().UnixMilli()
	time.Sleep(5 * time.Millisecond)
	fedJoin(t, charlie, resp.RoomID, a)
	if got := jumpTo(t, b.URL, charlie, string(resp.RoomID), beforeA, "f"); got != string(evA.EventID) {
		t.Fatalf("forward from before A on the late server: %q, want %s", got, evA.EventID)
	}
	if got := jumpTo(t, b.URL, charlie, string(resp.RoomID), afterB, "b"); got != string(evB.EventID) {
		t.Fatalf("backward from after B on the late server: %q, want %s", got, evB.EventID)
	}
	// The answer was fetched: the late server can open it and page back.
	ctx := mustOK(t, "context", raw(t, "GET", b.URL+"/_matrix/client/v3/rooms/"+string(resp.RoomID)+"/context/"+string(evB.EventID)+"?limit=0", charlie.AccessToken, nil))
	end, _ := ctx.Body["end"].(string)
	page := mustOK(t, "messages", raw(t, "GET", b.URL+"/_matrix/client/v3/rooms/"+string(resp.RoomID)+"/messages?dir=b&limit=100&from="+url.QueryEscape(end), charlie.AccessToken, nil))
	seen := map[string]bool{}
	for _, e := range page.Body["chunk"].([]any) {
		seen[e.(map[string]any)["event_id"].(string)] = true
	}
	if !seen[string(evA.EventID)] || !seen[string(evB.EventID)] {
		t.Fatalf("paging back from B on the late server misses A or B: %s", page.Raw)
	}
}

// delayedList returns the user's scheduled events (MSC4140).
func delayedList(t *testing.T, base, token string) []any {
	t.Helper()
	r := mustOK(t, "delayed_events", raw(t, "GET", base+"/_matrix/client/unstable/org.matrix.msc4140/delayed_events", token, nil))
	l, ok := r.Body["delayed_events"].([]any)
	if !ok {
		t.Fatalf("no delayed_events list: %s", r.Raw)
	}
	return l
}

// waitState polls a state event until its content has key = want.
func waitState(t *testing.T, url, token, key, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := raw(t, "GET", url, token, nil)
		if r.Status == 200 && r.Body[key] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s: %d %s, want %s=%s", url, r.Status, r.Raw, key, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDelayedEvents (MSC4140): ?org.matrix.msc4140.delay on /send and
// /state schedules the event (delay_id), listed until sent; the server
// sends it when due; cancel, restart and send act on it; newer state on
// the same key cancels it; scheduled events survive a restart.
func TestDelayedEvents(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		cfg := TestConfig(t, d, Options{})
		srv := StartConfig(t, cfg)
		reg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, reg)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		resp, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "trusted_private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := string(resp.RoomID)
		tok := reg.AccessToken
		const dp = "?org.matrix.msc4140.delay="
		state := func(base, key string) string {
			return base + "/_matrix/client/v3/rooms/" + room + "/state/com.example.test/" + key
		}
		de := func(base string) string { return base + "/_matrix/client/unstable/org.matrix.msc4140/delayed_events" }
		if l := delayedList(t, srv.URL, tok); len(l) != 0 {
			t.Fatalf("delayed events at start: %v", l)
		}

		// Sent on timeout, not before.
		r := mustOK(t, "delayed state", raw(t, "PUT", state(srv.URL, "timeout")+dp+"500", tok, map[string]any{"setter": "on_timeout"}))
		if id, _ := r.Body["delay_id"].(string); id == "" {
			t.Fatalf("no delay_id: %s", r.Raw)
		}
		l := delayedList(t, srv.URL, tok)
		if len(l) != 1 || l[0].(map[string]any)["content"].(map[string]any)["setter"] != "on_timeout" || l[0].(map[string]any)["state_key"] != "timeout" {
			t.Fatalf("listed: %v", l)
		}
		raw(t, "GET", state(srv.URL, "timeout"), tok, nil).wantErr(t, "state before the delay", 404, "M_NOT_FOUND")
		waitState(t, state(srv.URL, "timeout"), tok, "setter", "on_timeout", 5*time.Second)
		if l := delayedList(t, srv.URL, tok); len(l) != 0 {
			t.Fatalf("still listed after sending: %v", l)
		}

		// A delayed message event, sent at once by the send action.
		r = mustOK(t, "delayed message", raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/d1"+dp+"60000", tok, map[string]any{"msgtype": "m.text", "body": "later"}))
		msgID := r.Body["delay_id"].(string)
		// The same txnId again (a retry after a lost answer) is the same
		// scheduled event; another txnId is another.
		if again := mustOK(t, "delayed message again", raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/d1"+dp+"60000", tok, map[string]any{"msgtype": "m.text", "body": "later"})).Body["delay_id"]; again != msgID {
			t.Fatalf("a retried txnId scheduled %v, want the first delay %s", again, msgID)
		}
		if l := delayedList(t, srv.URL, tok); len(l) != 1 {
			t.Fatalf("%d delayed events after a retried txnId, want 1: %v", len(l), l)
		}
		otherID := mustOK(t, "delayed message, new txnId", raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/d2"+dp+"60000", tok, map[string]any{"msgtype": "m.text", "body": "other"})).Body["delay_id"].(string)
		if otherID == msgID || len(delayedList(t, srv.URL, tok)) != 2 {
			t.Fatalf("a new txnId did not schedule a second event")
		}
		mustOK(t, "cancel the other", raw(t, "POST", de(srv.URL)+"/"+otherID+"/cancel", tok, map[string]any{}))
		mustOK(t, "send now", raw(t, "POST", de(srv.URL)+"/"+msgID, tok, map[string]any{"action": "send"}))
		msgs, err := alice.Messages(ctxT(t), resp.RoomID, "", "", mautrix.DirectionBackward, nil, 5)
		if err != nil || len(msgs.Chunk) == 0 || body(msgs.Chunk[0]) != "later" {
			t.Fatalf("sent message not in the room: %v %v", err, msgs)
		}
		raw(t, "POST", de(srv.URL)+"/"+msgID, tok, map[string]any{"action": "send"}).wantErr(t, "sent twice", 404, "M_NOT_FOUND")

		// Cancel, restart; errors.
		cancelID := mustOK(t, "to cancel", raw(t, "PUT", state(srv.URL, "cancelled")+dp+"400", tok, map[string]any{"setter": "x"})).Body["delay_id"].(string)
		raw(t, "POST", de(srv.URL)+"/"+cancelID, bob.AccessToken, map[string]any{"action": "cancel"}).wantErr(t, "another user's", 404, "M_NOT_FOUND")
		raw(t, "POST", de(srv.URL)+"/"+cancelID, tok, map[string]any{"action": "explode"}).wantErr(t, "bad action", 400, "M_INVALID_PARAM")
		raw(t, "POST", de(srv.URL)+"/"+cancelID, tok, map[string]any{}).wantErr(t, "no action", 400, "M_MISSING_PARAM")
		mustOK(t, "cancel", raw(t, "POST", de(srv.URL)+"/"+cancelID+"/cancel", tok, map[string]any{}))
		restartID := mustOK(t, "to restart", raw(t, "PUT", state(srv.URL, "restarted")+dp+"1500", tok, map[string]any{"setter": "restarted"})).Body["delay_id"].(string)
		time.Sleep(1000 * time.Millisecond)
		mustOK(t, "restart", raw(t, "POST", de(srv.URL)+"/"+restartID, tok, map[string]any{"action": "restart"}))
		time.Sleep(1000 * time.Millisecond)
		raw(t, "GET", state(srv.URL, "restarted"), tok, nil).wantErr(t, "restarted event sent early", 404, "M_NOT_FOUND")
		waitState(t, state(srv.URL, "restarted"), tok, "setter", "restarted", 5*time.Second)
		raw(t, "GET", state(srv.URL, "cancelled"), tok, nil).wantErr(t, "cancelled event", 404, "M_NOT_FOUND")
		raw(t, "PUT", state(srv.URL, "x")+dp+"999999999999", tok, map[string]any{}).wantErr(t, "delay too long", 400, "M_MAX_DELAY_EXCEEDED")
		raw(t, "PUT", state(srv.URL, "x")+dp+"soon", tok, map[string]any{}).wantErr(t, "bad delay", 400, "M_INVALID_PARAM")
		raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/state/com.example.test/x"+dp+"100", bob.AccessToken, map[string]any{}).wantErr(t, "non-member", 403, "M_FORBIDDEN")

		// Newer state on the key cancels the scheduled one.
		mustOK(t, "to supersede", raw(t, "PUT", state(srv.URL, "superseded")+dp+"400", tok, map[string]any{"setter": "on_timeout"}))
		mustOK(t, "manual state", raw(t, "PUT", state(srv.URL, "superseded"), tok, map[string]any{"setter": "manual"}))
		if l := delayedList(t, srv.URL, tok); len(l) != 0 {
			t.Fatalf("superseded event still listed: %v", l)
		}
		time.Sleep(700 * time.Millisecond)
		waitState(t, state(srv.URL, "superseded"), tok, "setter", "manual", time.Second)

		// Kept over a restart: the one due while down is sent at start.
		mustOK(t, "short", raw(t, "PUT", state(srv.URL, "1")+dp+"300", tok, map[string]any{"setter": "1"}))
		mustOK(t, "long", raw(t, "PUT", state(srv.URL, "2")+dp+"60000", tok, map[string]any{"setter": "2"}))
		srv.Stop()
		time.Sleep(500 * time.Millisecond)
		srv = StartConfig(t, cfg)
		waitState(t, state(srv.URL, "1"), tok, "setter", "1", 5*time.Second)
		if l := delayedList(t, srv.URL, tok); len(l) != 1 || l[0].(map[string]any)["state_key"] != "2" {
			t.Fatalf("after restart: %v", l)
		}
	})
}
