package test

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/config"
	"enclave/storage"
)

// roomFingerprint is everything a member can read of a room: every
// timeline event and the current state, by event ID. Equal fingerprints
// before and after a rejected request prove it changed nothing.
func roomFingerprint(t testing.TB, cli *mautrix.Client, room id.RoomID) string {
	t.Helper()
	var b strings.Builder
	for _, e := range pageAll(t, cli, room, "", "", mautrix.DirectionBackward, 100) {
		b.WriteString(e.ID.String())
	}
	r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/state", cli.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("reading state: %d %s", r.Status, r.Raw)
	}
	var state []string
	for _, e := range jsonArray(t, r.Raw) {
		state = append(state, fmt.Sprint(e["event_id"]))
	}
	sort.Strings(state)
	b.WriteString("|" + strings.Join(state, ","))
	return b.String()
}

func joinedRooms(t testing.TB, cli *mautrix.Client) []id.RoomID {
	t.Helper()
	r, err := cli.JoinedRooms(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(r.JoinedRooms, func(i, j int) bool { return r.JoinedRooms[i] < r.JoinedRooms[j] })
	return r.JoinedRooms
}

// TestNegativePaths sends each kind of bad request the spec defines an
// error for and checks both the spec's status and errcode and, by reading
// the affected state back, that the request changed nothing.
func TestNegativePaths(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		const refreshLife = 1500 * time.Millisecond
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Auth.RefreshAccessTokenLifetime.Duration = refreshLife
		}})
		ctx := ctxT(t)
		v3 := srv.URL + "/_matrix/client/v3"
		alice := registerClient(t, srv.URL, "alice", "alice-pass")
		bob := registerClient(t, srv.URL, "bob", "bob-pass")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "negative"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		roomPath := v3 + "/rooms/" + url.PathEscape(room.String())
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room, "hello"); err != nil {
			t.Fatal(err)
		}
		sendURL := func(txn string) string { return roomPath + "/send/m.room.message/" + txn }
		// unchanged runs fn and asserts the room and alice's rooms are as before.
		unchanged := func(t *testing.T, fn func()) {
			t.Helper()
			before, beforeRooms := roomFingerprint(t, alice, room), joinedRooms(t, alice)
			fn()
			if roomFingerprint(t, alice, room) != before {
				t.Fatal("the rejected request changed the room")
			}
			if after := joinedRooms(t, alice); fmt.Sprint(after) != fmt.Sprint(beforeRooms) {
				t.Fatalf("the rejected request changed alice's rooms: %v -> %v", beforeRooms, after)
			}
		}

		t.Run("not JSON", func(t *testing.T) {
			unchanged(t, func() {
				raw(t, "PUT", sendURL("nj1"), alice.AccessToken, `{"msgtype": "m.text", "body": `).wantErr(t, "truncated send body", 400, "M_NOT_JSON")
				raw(t, "PUT", sendURL("nj2"), alice.AccessToken, `hello there`).wantErr(t, "plain-text send body", 400, "M_NOT_JSON")
				raw(t, "POST", v3+"/createRoom", alice.AccessToken, `{"name": "x"`).wantErr(t, "truncated createRoom", 400, "M_NOT_JSON")
				raw(t, "PUT", roomPath+"/state/m.room.topic", alice.AccessToken, `<topic/>`).wantErr(t, "XML state", 400, "M_NOT_JSON")
				raw(t, "POST", roomPath+"/invite", alice.AccessToken, "{'user_id': 'x'}").wantErr(t, "single-quoted invite", 400, "M_NOT_JSON")
			})
		})

		t.Run("wrong field types", func(t *testing.T) {
			unchanged(t, func() {
				raw(t, "POST", v3+"/createRoom", alice.AccessToken, `{"name": 5}`).wantErr(t, "numeric room name", 400, "M_BAD_JSON")
				raw(t, "POST", v3+"/createRoom", alice.AccessToken, `{"invite": "@bob:localhost"}`).wantErr(t, "invite as a string", 400, "M_BAD_JSON")
				raw(t, "POST", v3+"/createRoom", alice.AccessToken, `[]`).wantErr(t, "createRoom array", 400, "M_BAD_JSON")
				raw(t, "PUT", sendURL("wt1"), alice.AccessToken, `[{"body": "x"}]`).wantErr(t, "array event content", 400, "M_BAD_JSON")
				raw(t, "PUT", sendURL("wt2"), alice.AccessToken, `"text"`).wantErr(t, "string event content", 400, "M_BAD_JSON")
				raw(t, "PUT", roomPath+"/state/m.room.topic", alice.AccessToken, `null`).wantErr(t, "null state content", 400, "M_BAD_JSON")
				raw(t, "POST", roomPath+"/invite", alice.AccessToken, `{"user_id": 42}`).wantErr(t, "numeric user_id", 400, "M_BAD_JSON")
				raw(t, "POST", roomPath+"/kick", alice.AccessToken, `{"user_id": ["@bob:localhost"]}`).wantErr(t, "list user_id", 400, "M_BAD_JSON")
			})
			// Query parameters of the wrong type.
			raw(t, "GET", roomPath+"/messages?dir=sideways", alice.AccessToken, nil).wantErr(t, "dir=sideways", 400, "M_INVALID_PARAM")
			raw(t, "GET", roomPath+"/messages?dir=b&limit=many", alice.AccessToken, nil).wantErr(t, "limit=many", 400, "M_INVALID_PARAM")
			raw(t, "GET", roomPath+"/messages?dir=b&from=yesterday", alice.AccessToken, nil).wantErr(t, "from=yesterday", 400, "M_INVALID_PARAM")
			raw(t, "GET", v3+"/sync?since=nonsense", alice.AccessToken, nil).wantErr(t, "since=nonsense", 400, "M_INVALID_PARAM")
			raw(t, "GET", v3+"/sync?timeout=soon", alice.AccessToken, nil).wantErr(t, "timeout=soon", 400, "M_INVALID_PARAM")
		})

		t.Run("unknown endpoints and methods", func(t *testing.T) {
			raw(t, "GET", v3+"/no/such/endpoint", "", nil).wantErr(t, "unknown endpoint without token", 404, "M_UNRECOGNIZED")
			raw(t, "GET", v3+"/no/such/endpoint", alice.AccessToken, nil).wantErr(t, "unknown endpoint", 404, "M_UNRECOGNIZED")
			raw(t, "GET", srv.URL+"/_matrix/client/v9/sync", alice.AccessToken, nil).wantErr(t, "unknown API version", 404, "M_UNRECOGNIZED")
			unchanged(t, func() {
				raw(t, "PUT", roomPath+"/send/m.room.message", alice.AccessToken, `{"body": "no txn"}`).wantErr(t, "send without txn ID", 404, "M_UNRECOGNIZED")
				raw(t, "POST", sendURL("m1"), alice.AccessToken, `{"msgtype": "m.text", "body": "x"}`).wantErr(t, "POST to send", 405, "M_UNRECOGNIZED")
				raw(t, "DELETE", sendURL("m2"), alice.AccessToken, nil).wantErr(t, "DELETE send", 405, "M_UNRECOGNIZED")
				raw(t, "POST", v3+"/sync", alice.AccessToken, nil).wantErr(t, "POST /sync", 405, "M_UNRECOGNIZED")
				raw(t, "GET", v3+"/createRoom", alice.AccessToken, nil).wantErr(t, "GET /createRoom", 405, "M_UNRECOGNIZED")
			})
		})

		t.Run("missing and unknown tokens", func(t *testing.T) {
			raw(t, "GET", v3+"/joined_rooms", "", nil).wantErr(t, "no token", 401, "M_MISSING_TOKEN")
			unchanged(t, func() {
				raw(t, "PUT", sendURL("tok1"), "", map[string]any{"msgtype": "m.text", "body": "x"}).wantErr(t, "send without token", 401, "M_MISSING_TOKEN")
				r := raw(t, "PUT", sendURL("tok2"), "syt_not_a_real_token", map[string]any{"msgtype": "m.text", "body": "x"})
				r.wantErr(t, "send with a made-up token", 401, "M_UNKNOWN_TOKEN")
				if r.Body["soft_logout"] == true {
					t.Fatal("a made-up token must not be a soft logout")
				}
				raw(t, "PUT", sendURL("tok3")+"?access_token=syt_bogus", "", map[string]any{"msgtype": "m.text", "body": "x"}).wantErr(t, "query-string token", 401, "M_UNKNOWN_TOKEN")
			})
			// A logged-out token is unknown (hard logout).
			gone := loginClient(t, srv.URL, "alice", "alice-pass")
			if _, err := gone.Logout(ctx); err != nil {
				t.Fatal(err)
			}
			r := raw(t, "GET", v3+"/account/whoami", gone.AccessToken, nil)
			r.wantErr(t, "logged-out token", 401, "M_UNKNOWN_TOKEN")
			if r.Body["soft_logout"] == true {
				t.Fatal("a logged-out token must not be a soft logout")
			}
		})

		t.Run("expired token is a soft logout", func(t *testing.T) {
			cli := client(t, srv.URL, "", "")
			login, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "alice-pass", RefreshToken: true})
			if err != nil {
				t.Fatal(err)
			}
			if login.RefreshToken == "" || login.ExpiresInMS <= 0 || login.ExpiresInMS > refreshLife.Milliseconds() {
				t.Fatalf("refresh login: refresh_token %q expires_in_ms %d", login.RefreshToken, login.ExpiresInMS)
			}
			if r := raw(t, "GET", v3+"/account/whoami", login.AccessToken, nil); r.Status != 200 {
				t.Fatalf("fresh token: %d %s", r.Status, r.Raw)
			}
			time.Sleep(refreshLife + 200*time.Millisecond)
			unchanged(t, func() {
				r := raw(t, "PUT", sendURL("exp1"), login.AccessToken, map[string]any{"msgtype": "m.text", "body": "late"})
				r.wantErr(t, "send with an expired token", 401, "M_UNKNOWN_TOKEN")
				if r.Body["soft_logout"] != true {
					t.Fatalf("expired token: want soft_logout true, got %s", r.Raw)
				}
			})
			// The refresh token still renews the session.
			rr := raw(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": login.RefreshToken})
			if rr.Status != 200 {
				t.Fatalf("refresh: %d %s", rr.Status, rr.Raw)
			}
			if r := raw(t, "GET", v3+"/account/whoami", fmt.Sprint(rr.Body["access_token"]), nil); r.Status != 200 || r.Body["user_id"] != alice.UserID.String() {
				t.Fatalf("refreshed token: %d %s", r.Status, r.Raw)
			}
			raw(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": login.RefreshToken}).wantErr(t, "reused refresh token", 401, "M_UNKNOWN_TOKEN")
		})

		t.Run("history visibility joined", func(t *testing.T) {
			hidden, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
				Type: event.StateHistoryVisibility, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
			}}})
			if err != nil {
				t.Fatal(err)
			}
			hr := hidden.RoomID
			var secrets []id.EventID
			for i := 0; i < 3; i++ {
				r, err := alice.SendText(ctx, hr, fmt.Sprintf("before carol %d", i))
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, r.EventID)
			}
			preJoin := pageAll(t, alice, hr, "", "", mautrix.DirectionForward, 100)
			carol := registerClient(t, srv.URL, "carol", "carol-pass")
			carolFilter := timelineFilter(t, carol, 100)
			s0, err := carol.SyncRequest(ctx, 0, "", carolFilter, false, "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := carol.JoinRoomByID(ctx, hr); err != nil {
				t.Fatal(err)
			}
			after, err := alice.SendText(ctx, hr, "after carol joined")
			if err != nil {
				t.Fatal(err)
			}
			// Hidden: what was sent while "joined" was in force and carol was
			// not. Events before the visibility change (and the change
			// itself, which the earlier default "shared" lets her see) are
			// visible by the spec's rules.
			hiddenSet := map[id.EventID]bool{}
			inForce := false
			for _, e := range preJoin {
				if inForce {
					hiddenSet[e.ID] = true
				}
				if e.Type.Type == event.StateHistoryVisibility.Type {
					inForce = true
				}
			}
			for _, s := range secrets {
				if !hiddenSet[s] {
					t.Fatalf("message %s sent under joined visibility is not in the hidden set", s)
				}
			}
			// /messages: only from carol's join on.
			got := pageAll(t, carol, hr, "", "", mautrix.DirectionBackward, 2)
			var sawAfter, sawJoin bool
			for _, e := range got {
				if hiddenSet[e.ID] {
					t.Fatalf("carol read pre-join event %s (%s) via /messages", e.ID, e.Type)
				}
				sawAfter = sawAfter || e.ID == after.EventID
				sawJoin = sawJoin || (e.Type.Type == event.StateMember.Type && e.GetStateKey() == carol.UserID.String())
			}
			if !sawAfter || !sawJoin {
				t.Fatalf("carol's /messages lacks her join or the later message: %v", ids(got))
			}
			// /sync after joining: the timeline starts at the join.
			s1, err := carol.SyncRequest(ctx, 0, s0.NextBatch, carolFilter, false, "")
			if err != nil {
				t.Fatal(err)
			}
			jr := s1.Rooms.Join[hr]
			if jr == nil || len(jr.Timeline.Events) == 0 {
				t.Fatalf("carol's sync lacks the room: %+v", s1.Rooms)
			}
			for _, e := range jr.Timeline.Events {
				if hiddenSet[e.ID] {
					t.Fatalf("carol read pre-join event %s (%s) via /sync", e.ID, e.Type)
				}
			}
			// /event and /context of an earlier message: not found.
			for _, s := range secrets {
				_, err := carol.GetEvent(ctx, hr, s)
				wantMatrixErr(t, "/event of a pre-join message", err, 404, "M_NOT_FOUND")
				_, err = carol.Context(ctx, hr, s, nil, 10)
				wantMatrixErr(t, "/context of a pre-join message", err, 404, "M_NOT_FOUND")
			}
			// /context around a visible event shows nothing from before the join.
			c, err := carol.Context(ctx, hr, after.EventID, nil, 20)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range append(c.EventsBefore, c.EventsAfter...) {
				if hiddenSet[e.ID] {
					t.Fatalf("carol read pre-join event %s via /context", e.ID)
				}
			}
			if ev, err := carol.GetEvent(ctx, hr, after.EventID); err != nil || body(ev) != "after carol joined" {
				t.Fatalf("carol cannot read a post-join message: %v %v", ev, err)
			}
			// A non-member reads neither state nor members nor messages.
			dave := registerClient(t, srv.URL, "dave", "dave-pass")
			hp := v3 + "/rooms/" + url.PathEscape(hr.String())
			raw(t, "GET", hp+"/state", dave.AccessToken, nil).wantErr(t, "non-member /state", 403, "M_FORBIDDEN")
			raw(t, "GET", hp+"/state/m.room.join_rules/", dave.AccessToken, nil).wantErr(t, "non-member /state/type", 403, "M_FORBIDDEN")
			raw(t, "GET", hp+"/members", dave.AccessToken, nil).wantErr(t, "non-member /members", 403, "M_FORBIDDEN")
			raw(t, "GET", hp+"/joined_members", dave.AccessToken, nil).wantErr(t, "non-member /joined_members", 403, "M_FORBIDDEN")
			raw(t, "GET", hp+"/messages?dir=b", dave.AccessToken, nil).wantErr(t, "non-member /messages", 403, "M_FORBIDDEN")
			_, err = dave.GetEvent(ctx, hr, after.EventID)
			wantMatrixErr(t, "non-member /event", err, 404, "M_NOT_FOUND")
		})

		t.Run("forbidden state changes", func(t *testing.T) {
			var plBefore map[string]any
			if err := alice.StateEvent(ctx, room, event.StatePowerLevels, "", &plBefore); err != nil {
				t.Fatal(err)
			}
			unchanged(t, func() {
				_, err := bob.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"users": map[string]any{bob.UserID.String(): 100, alice.UserID.String(): 100}})
				wantMatrixErr(t, "bob raises his own power level", err, 403, "M_FORBIDDEN")
				_, err = bob.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "bob's now"})
				wantMatrixErr(t, "bob renames the room", err, 403, "M_FORBIDDEN")
				_, err = bob.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: alice.UserID})
				wantMatrixErr(t, "bob kicks alice", err, 403, "M_FORBIDDEN")
				_, err = bob.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: alice.UserID})
				wantMatrixErr(t, "bob bans alice", err, 403, "M_FORBIDDEN")
				// alice (100) may not raise bob above herself.
				_, err = alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"users": map[string]any{alice.UserID.String(): 100, bob.UserID.String(): 101}})
				wantMatrixErr(t, "alice sets a level above her own", err, 403, "M_FORBIDDEN")
			})
			var plAfter map[string]any
			if err := bob.StateEvent(ctx, room, event.StatePowerLevels, "", &plAfter); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(plAfter) != fmt.Sprint(plBefore) {
				t.Fatalf("power levels changed: %v -> %v", plBefore, plAfter)
			}
			var name map[string]any
			if err := bob.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name["name"] != "negative" {
				t.Fatalf("room name: %v %v", name, err)
			}
			if m, err := bob.JoinedMembers(ctx, room); err != nil || len(m.Joined) != 2 {
				t.Fatalf("members after forbidden kick: %+v %v", m, err)
			}
			// Sending to a room one is not in.
			eve := registerClient(t, srv.URL, "eve", "eve-pass")
			unchanged(t, func() {
				_, err := eve.SendText(ctx, room, "gatecrash")
				wantMatrixErr(t, "non-member send", err, 403, "M_FORBIDDEN")
				_, err = eve.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "x"})
				wantMatrixErr(t, "non-member state", err, 403, "M_FORBIDDEN")
			})
		})

		t.Run("oversized bodies", func(t *testing.T) {
			unchanged(t, func() {
				huge := `{"msgtype": "m.text", "body": "` + strings.Repeat("a", 2<<20) + `"}`
				raw(t, "PUT", sendURL("big1"), alice.AccessToken, huge).wantErr(t, "2 MiB request", 413, "M_TOO_LARGE")
				// Under the request limit, over the 64 KiB event limit.
				big := `{"msgtype": "m.text", "body": "` + strings.Repeat("b", 70000) + `"}`
				raw(t, "PUT", sendURL("big2"), alice.AccessToken, big).wantErr(t, "70 kB event", 413, "M_TOO_LARGE")
				raw(t, "PUT", roomPath+"/state/m.room.topic", alice.AccessToken, `{"topic": "`+strings.Repeat("c", 70000)+`"}`).wantErr(t, "70 kB state event", 413, "M_TOO_LARGE")
			})
		})

		t.Run("unsupported room version", func(t *testing.T) {
			unchanged(t, func() {
				for _, v := range []id.RoomVersion{"999", "org.example.custom", "1.0"} {
					_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: v})
					wantMatrixErr(t, "room version "+string(v), err, 400, "M_UNSUPPORTED_ROOM_VERSION")
				}
			})
		})

		t.Run("user in use", func(t *testing.T) {
			c := client(t, srv.URL, "", "")
			_, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "hijack"})
			wantMatrixErr(t, "register alice again", err, 400, "M_USER_IN_USE")
			_, err = c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "ALICE", Password: "hijack"})
			wantMatrixErr(t, "register ALICE", err, 400, "M_USER_IN_USE")
			_, err = c.RegisterAvailable(ctx, "alice")
			wantMatrixErr(t, "alice available", err, 400, "M_USER_IN_USE")
			// Alice's password is unchanged; the hijacker's does not work.
			loginClient(t, srv.URL, "alice", "alice-pass")
			_, err = c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "hijack"})
			wantMatrixErr(t, "login with the hijacker's password", err, 403, "M_FORBIDDEN")
		})

		t.Run("invalid username", func(t *testing.T) {
			c := client(t, srv.URL, "", "")
			for _, u := range []string{"bad user", "_reserved", "caf\u00e9", "semi:colon", strings.Repeat("x", 300)} {
				_, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: u, Password: "pw-for-bad"})
				wantMatrixErr(t, fmt.Sprintf("register %.20q", u), err, 400, "M_INVALID_USERNAME")
				_, err = c.RegisterAvailable(ctx, u)
				wantMatrixErr(t, fmt.Sprintf("available %.20q", u), err, 400, "M_INVALID_USERNAME")
			}
			_, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "_reserved"}, Password: "pw-for-bad"})
			wantMatrixErr(t, "login as a rejected username", err, 403, "M_FORBIDDEN")
		})
	})
}

// TestNegativeRateLimit enables rate limiting and checks that a client
// over its burst gets 429 M_LIMIT_EXCEEDED with retry_after_ms, that the
// refused send stored nothing, and that waiting as told lets it through.
func TestNegativeRateLimit(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		const burst = 5
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.RateLimits.Enabled = true
			c.RateLimits.PerSecond = 2
			c.RateLimits.Burst = burst
		}})
		ctx := ctxT(t)
		alice := sessionClient(t, srv.URL, Register(t, srv.URL, "alice", "alice-pass", false))
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		var acked []id.EventID
		var limitedTxn string
		var retryAfter int64
		for i := 0; i <= burst; i++ {
			txn := fmt.Sprintf("rl%d", i)
			r := raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/send/m.room.message/"+txn,
				alice.AccessToken, map[string]any{"msgtype": "m.text", "body": txn})
			if r.Status == http.StatusTooManyRequests {
				r.wantErr(t, "send over the limit", 429, "M_LIMIT_EXCEEDED")
				ms, ok := r.Body["retry_after_ms"].(float64)
				if !ok || ms <= 0 || ms > 1000 {
					t.Fatalf("retry_after_ms = %v, want 0 < ms <= 1000 at 2/s", r.Body["retry_after_ms"])
				}
				limitedTxn, retryAfter = txn, int64(ms)
				break
			}
			if r.Status != 200 {
				t.Fatalf("send %d: %d %s", i, r.Status, r.Raw)
			}
			acked = append(acked, id.EventID(fmt.Sprint(r.Body["event_id"])))
		}
		if limitedTxn == "" {
			t.Fatalf("%d sends within a burst of %d were never limited", burst+1, burst)
		}
		// Reads are not limited, and show only the acknowledged sends.
		got := messagesOnly(pageAll(t, alice, room, "", "", mautrix.DirectionForward, 50))
		sameIDs(t, "messages after the limit", ids(got), acked)
		time.Sleep(time.Duration(retryAfter)*time.Millisecond + 50*time.Millisecond)
		resp, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": limitedTxn}, mautrix.ReqSendEvent{TransactionID: limitedTxn})
		if err != nil {
			t.Fatalf("send after waiting retry_after_ms: %v", err)
		}
		got = messagesOnly(pageAll(t, alice, room, "", "", mautrix.DirectionForward, 50))
		sameIDs(t, "messages after the retry", ids(got), append(acked, resp.EventID))
	})
}

func ptr[T any](v T) *T { return &v }

func jsonArray(t testing.TB, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	if err := jsonUnmarshal(b, &out); err != nil {
		t.Fatalf("want a JSON array: %v: %s", err, b)
	}
	return out
}
