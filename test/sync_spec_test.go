package test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// syncQuery is one GET /sync with these query parameters (timeout 0 unless
// given), decoded as JSON.
func syncQuery(t testing.TB, base, token string, q url.Values) rawResp {
	t.Helper()
	if q == nil {
		q = url.Values{}
	}
	if q.Get("timeout") == "" {
		q.Set("timeout", "0")
	}
	r := raw(t, "GET", base+"/_matrix/client/v3/sync?"+q.Encode(), token, nil)
	if r.Status != 200 {
		t.Fatalf("sync %v: %d %s", q, r.Status, r.Raw)
	}
	return r
}

// dig walks a decoded JSON body by keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func digList(v any, keys ...string) []any { l, _ := dig(v, keys...).([]any); return l }

func sendText(t testing.TB, cli *mautrix.Client, room id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(ctxT(t), room, text)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestSyncLeftRooms: rooms.leave as the spec and clients expect it
// (complement TestArchivedRoomsHistory, TestOlderLeftRoomsNotInLeaveSection,
// TestRoomForget): timeline.limit 0 gives an empty timeline and the state
// as the user left; include_leave brings back earlier left rooms only in
// initial and full_state syncs; a forgotten room is gone from them, but
// its leave still reaches an incremental sync from before it.
func TestSyncLeftRooms(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bob := registerClient(t, srv.URL, "bob", "bob-pass-1")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		bobSince := syncQuery(t, srv.URL, bob.AccessToken, nil).Body["next_batch"].(string)
		sendText(t, alice, room.RoomID, "before")
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.Type{Type: "a.madeup.test.state", Class: event.StateEventType}, "", map[string]any{"my_key": "before"}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room.RoomID, "after")
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.Type{Type: "a.madeup.test.state", Class: event.StateEventType}, "", map[string]any{"my_key": "after"}); err != nil {
			t.Fatal(err)
		}

		zero := mustJSON(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 0}, "include_leave": true}})
		for _, since := range []string{"", bobSince} {
			q := url.Values{"filter": {zero}}
			if since != "" {
				q.Set("since", since)
			}
			r := syncQuery(t, srv.URL, bob.AccessToken, q)
			lr := dig(r.Body, "rooms", "leave", string(room.RoomID))
			if lr == nil {
				t.Fatalf("since %q: left room missing: %s", since, r.Raw)
			}
			if tl, ok := dig(lr, "timeline", "events").([]any); !ok || len(tl) != 0 {
				t.Fatalf("since %q: limit 0 timeline: %v", since, dig(lr, "timeline"))
			}
			var sawLeave, sawMadeup bool
			for _, e := range digList(lr, "state", "events") {
				switch dig(e, "type") {
				case "a.madeup.test.state":
					sawMadeup = true
					if got := dig(e, "content", "my_key"); got != "before" {
						t.Fatalf("since %q: state from after the leave: %v", since, got)
					}
				case "m.room.member":
					if dig(e, "state_key") == string(bob.UserID) {
						sawLeave = dig(e, "content", "membership") == "leave"
					}
				}
			}
			if !sawLeave || !sawMadeup {
				t.Fatalf("since %q: state lacks the leave or the state before it: %s", since, mustJSON(lr))
			}
		}
		// With events in the timeline and a state filter matching only the
		// made-up type, the state section is empty (the event is in the
		// timeline) and the timeline ends at the leave.
		typed := mustJSON(map[string]any{"room": map[string]any{
			"timeline": map[string]any{"types": []string{"m.room.message", "a.madeup.test.state"}},
			"state":    map[string]any{"types": []string{"a.madeup.test.state"}}, "include_leave": true}})
		for _, since := range []string{"", bobSince} {
			q := url.Values{"filter": {typed}}
			if since != "" {
				q.Set("since", since)
			}
			lr := dig(syncQuery(t, srv.URL, bob.AccessToken, q).Body, "rooms", "leave", string(room.RoomID))
			tl := digList(lr, "timeline", "events")
			if len(tl) != 2 || dig(tl[0], "content", "body") != "before" {
				t.Fatalf("since %q: timeline %s", since, mustJSON(tl))
			}
			if st := digList(lr, "state", "events"); len(st) != 0 {
				t.Fatalf("since %q: state %s", since, mustJSON(st))
			}
		}

		// A room left before `since` is not in an incremental sync's leave
		// section, include_leave or not; an initial one with it has it.
		incl := mustJSON(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}, "include_leave": true}})
		after := syncQuery(t, srv.URL, bob.AccessToken, url.Values{"filter": {incl}}).Body
		if dig(after, "rooms", "leave", string(room.RoomID)) == nil {
			t.Fatalf("initial include_leave sync lacks the left room")
		}
		other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, other.RoomID); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			sendText(t, alice, other.RoomID, "filler")
		}
		inc := syncQuery(t, srv.URL, bob.AccessToken, url.Values{"filter": {incl}, "since": {after["next_batch"].(string)}}).Body
		if l, _ := dig(inc, "rooms", "leave").(map[string]any); len(l) != 0 {
			t.Fatalf("incremental sync lists earlier left rooms: %s", mustJSON(l))
		}
		full := syncQuery(t, srv.URL, bob.AccessToken, url.Values{"filter": {incl}, "since": {after["next_batch"].(string)}, "full_state": {"true"}}).Body
		if dig(full, "rooms", "leave", string(room.RoomID)) == nil {
			t.Fatalf("full_state include_leave sync lacks the left room")
		}

		// Forgetting: alice leaves `other`... bob leaves and forgets it;
		// an incremental sync from before the leave still shows it, an
		// initial include_leave one does not.
		beforeLeave := syncQuery(t, srv.URL, bob.AccessToken, nil).Body["next_batch"].(string)
		if _, err := bob.LeaveRoom(ctx, other.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.ForgetRoom(ctx, other.RoomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, other.RoomID, "after forget")
		inc = syncQuery(t, srv.URL, bob.AccessToken, url.Values{"filter": {incl}, "since": {beforeLeave}}).Body
		if dig(inc, "rooms", "leave", string(other.RoomID)) == nil {
			t.Fatalf("the leave of a forgotten room is missing from the incremental sync: %s", mustJSON(dig(inc, "rooms")))
		}
		initial := syncQuery(t, srv.URL, bob.AccessToken, url.Values{"filter": {incl}}).Body
		for _, sec := range []string{"join", "invite", "leave"} {
			if dig(initial, "rooms", sec, string(other.RoomID)) != nil {
				t.Fatalf("forgotten room in rooms.%s of an include_leave initial sync", sec)
			}
		}
		if dig(initial, "rooms", "leave", string(room.RoomID)) == nil {
			t.Fatalf("the room left but not forgotten is missing")
		}
	})
}

// TestSyncNewMemberPresence: a member who joins shows their presence in
// the next incremental sync of those already in the room, though it was
// set before the sync's since token (complement TestMembersLocal, TestSync).
func TestSyncNewMemberPresence(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bob := registerClient(t, srv.URL, "bob", "bob-pass-1")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if r := raw(t, "PUT", srv.URL+"/_matrix/client/v3/presence/"+string(bob.UserID)+"/status", bob.AccessToken, map[string]any{"presence": "online", "status_msg": "here"}); r.Status != 200 {
			t.Fatalf("set presence: %d %s", r.Status, r.Raw)
		}
		since := syncQuery(t, srv.URL, alice.AccessToken, nil).Body["next_batch"].(string)
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := syncQuery(t, srv.URL, alice.AccessToken, url.Values{"since": {since}, "timeout": {"2000"}}).Body
			var joined, presence bool
			for _, e := range digList(r, "rooms", "join", string(room.RoomID), "timeline", "events") {
				joined = joined || (dig(e, "type") == "m.room.member" && dig(e, "state_key") == string(bob.UserID))
			}
			for _, e := range digList(r, "presence", "events") {
				if dig(e, "sender") == string(bob.UserID) {
					presence = dig(e, "content", "presence") == "online" && dig(e, "content", "status_msg") == "here"
				}
			}
			if joined {
				if !presence {
					t.Fatalf("bob's join came without his presence: %s", mustJSON(r["presence"]))
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("bob's join never reached alice's sync")
			}
			since = r["next_batch"].(string)
		}
	})
}

// stateKeys lists "type|state_key" of a list of events.
func stateKeys(evs []any) map[string]string {
	out := map[string]string{}
	for _, e := range evs {
		k, _ := dig(e, "state_key").(string)
		out[dig(e, "type").(string)+"|"+k], _ = dig(e, "event_id").(string)
	}
	return out
}

// TestSyncStateAfter: MSC4222 (spec v1.16). With use_state_after (or its
// unstable name) a room carries state_after — the state at the end of the
// timeline the client lacks, under the name matching the flag — and no
// state (complement msc4222 TestSync).
func TestSyncStateAfter(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bob := registerClient(t, srv.URL, "bob", "bob-pass-1")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rid := string(room.RoomID)
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		lazy := mustJSON(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 20}, "state": map[string]any{"lazy_load_members": true}}})

		// Initial, lazy-loading, unstable name: members of every timeline sender.
		r := syncQuery(t, srv.URL, alice.AccessToken, url.Values{"filter": {lazy}, "org.matrix.msc4222.use_state_after": {"true"}}).Body
		jr := dig(r, "rooms", "join", rid)
		if dig(jr, "state") != nil || dig(jr, "state_after") != nil {
			t.Fatalf("unstable flag: state or the stable field present: %s", mustJSON(jr))
		}
		sa := stateKeys(digList(jr, "org.matrix.msc4222.state_after", "events"))
		for _, e := range digList(jr, "timeline", "events") {
			if _, ok := sa["m.room.member|"+dig(e, "sender").(string)]; !ok {
				t.Fatalf("state_after lacks the member event of timeline sender %v: %v", dig(e, "sender"), sa)
			}
		}
		if sa["m.room.create|"] == "" || sa["m.room.join_rules|"] == "" {
			t.Fatalf("initial state_after lacks the room's state: %v", sa)
		}
		since := r["next_batch"].(string)

		// Incremental, not limited: the new state event is in both the
		// timeline and state_after (stable name).
		nameResp, err := alice.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]any{"name": "after"})
		if err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room.RoomID, "hello")
		r = syncQuery(t, srv.URL, alice.AccessToken, url.Values{"since": {since}, "use_state_after": {"true"}}).Body
		jr = dig(r, "rooms", "join", rid)
		if dig(jr, "state") != nil {
			t.Fatalf("state sent with use_state_after: %s", mustJSON(jr))
		}
		sa = stateKeys(digList(jr, "state_after", "events"))
		if len(sa) != 1 || sa["m.room.name|"] != string(nameResp.EventID) {
			t.Fatalf("incremental state_after: %v", sa)
		}
		since = r["next_batch"].(string)

		// A message only: state_after present and empty.
		sendText(t, alice, room.RoomID, "plain")
		r = syncQuery(t, srv.URL, alice.AccessToken, url.Values{"since": {since}, "use_state_after": {"true"}}).Body
		if l, ok := dig(r, "rooms", "join", rid, "state_after", "events").([]any); !ok || len(l) != 0 {
			t.Fatalf("state_after of a message-only sync: %s", mustJSON(dig(r, "rooms", "join", rid)))
		}
		since = r["next_batch"].(string)

		// Limited: the topic set before the messages that push it out of
		// the timeline is in state_after; so is the newest name.
		topic, err := alice.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]any{"topic": "t1"})
		if err != nil {
			t.Fatal(err)
		}
		name2, err := alice.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]any{"name": "last"})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			sendText(t, alice, room.RoomID, "filler")
		}
		one := mustJSON(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}})
		r = syncQuery(t, srv.URL, alice.AccessToken, url.Values{"since": {since}, "filter": {one}, "use_state_after": {"true"}}).Body
		jr = dig(r, "rooms", "join", rid)
		if dig(jr, "timeline", "limited") != true {
			t.Fatalf("not limited: %s", mustJSON(jr))
		}
		sa = stateKeys(digList(jr, "state_after", "events"))
		if len(sa) != 2 || sa["m.room.topic|"] != string(topic.EventID) || sa["m.room.name|"] != string(name2.EventID) {
			t.Fatalf("limited state_after: %v", sa)
		}

		// Without the flag: state as before, no state_after.
		r = syncQuery(t, srv.URL, alice.AccessToken, url.Values{"since": {since}, "filter": {one}}).Body
		jr = dig(r, "rooms", "join", rid)
		if dig(jr, "state_after") != nil || dig(jr, "state", "events") == nil {
			t.Fatalf("without the flag: %s", mustJSON(jr))
		}
		if r := raw(t, "GET", srv.URL+"/_matrix/client/v3/sync?timeout=0&use_state_after=maybe", alice.AccessToken, nil); r.Status != 400 {
			t.Fatalf("use_state_after=maybe: %d", r.Status)
		}
	})
}

// TestMembersAtSyncToken: /members?at=<token from /sync> answers the
// membership at that point, for an initial sync's prev_batch (which
// precedes the room) and for next_batch (complement TestGetRoomMembersAtPoint).
func TestMembersAtSyncToken(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bob := registerClient(t, srv.URL, "bob", "bob-pass-1")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rid := string(room.RoomID)
		sendText(t, alice, room.RoomID, "Hello world!")
		first := syncQuery(t, srv.URL, alice.AccessToken, nil).Body
		prev, _ := dig(first, "rooms", "join", rid, "timeline", "prev_batch").(string)
		next := first["next_batch"].(string)
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, bob, room.RoomID, "Hello back")
		later := syncQuery(t, srv.URL, alice.AccessToken, url.Values{"since": {next}}).Body["next_batch"].(string)
		members := func(at string) map[string]string {
			r := raw(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(rid)+"/members?at="+url.QueryEscape(at), alice.AccessToken, nil)
			if r.Status != 200 {
				t.Fatalf("members at %s: %d %s", at, r.Status, r.Raw)
			}
			out := map[string]string{}
			for _, e := range digList(r.Body, "chunk") {
				if dig(e, "room_id") != rid || dig(e, "type") != "m.room.member" {
					t.Fatalf("chunk entry %s", mustJSON(e))
				}
				out[dig(e, "state_key").(string)], _ = dig(e, "content", "membership").(string)
			}
			return out
		}
		for _, at := range []string{prev, next} {
			if got := members(at); len(got) != 1 || got[string(alice.UserID)] != "join" {
				t.Fatalf("members at %s: %v", at, got)
			}
		}
		if got := members(later); len(got) != 2 || got[string(bob.UserID)] != "join" {
			t.Fatalf("members after bob joined: %v", got)
		}
		if r := raw(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(rid)+"/members?at=bogus", alice.AccessToken, nil); r.Status != 400 {
			t.Fatalf("bogus at: %d", r.Status)
		}
	})
}

// TestSearchAndMessagesTokens: /search hands out next_batch for every
// full page, the page after the last is empty without it, and count is
// the total on every page (complement TestSearch); /messages gives end
// whenever a page held events, even one cut short by a filter, and the
// empty page after it has none (complement TestRoomImageRoundtrip).
func TestSearchAndMessagesTokens(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		rid := string(room.RoomID)
		var sent []string
		for i := range 20 {
			sent = append(sent, string(sendText(t, alice, room.RoomID, "Message number "+mustJSON(i))))
		}
		for _, order := range []string{"recent", "rank"} {
			req := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
				"keys": []string{"content.body"}, "search_term": "Message", "order_by": order,
				"filter": map[string]any{"limit": 10, "rooms": []string{rid}}}}}
			next := ""
			var got []string
			for page := 0; ; page++ {
				u := srv.URL + "/_matrix/client/v3/search"
				if next != "" {
					u += "?next_batch=" + url.QueryEscape(next)
				}
				r := raw(t, "POST", u, alice.AccessToken, req)
				re := dig(r.Body, "search_categories", "room_events")
				if r.Status != 200 || dig(re, "count") != float64(20) {
					t.Fatalf("%s page %d: %d %s", order, page, r.Status, r.Raw)
				}
				res := digList(re, "results")
				for _, x := range res {
					got = append(got, dig(x, "result", "event_id").(string))
				}
				nb, has := dig(re, "next_batch").(string)
				switch {
				case page < 2 && (len(res) != 10 || !has):
					t.Fatalf("%s page %d: %d results, next_batch %q", order, page, len(res), nb)
				case page == 2 && (len(res) != 0 || has):
					t.Fatalf("%s page 2: %d results, next_batch %q", order, len(res), nb)
				}
				if !has {
					break
				}
				next = nb
			}
			if len(got) != 20 {
				t.Fatalf("%s: %d results over all pages", order, len(got))
			}
			if order == "recent" {
				sameIDs(t, "recent order", toIDs(got), reversed(toIDs(sent)))
			}
			noDuplicates(t, order, toIDs(got))
		}

		// /messages: a filter leaves one event of a short page; end is
		// still there, and the page from it is empty and has none.
		if _, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.file", "body": "test.png", "url": "mxc://localhost/abc"}); err != nil {
			t.Fatal(err)
		}
		msgs := func(from string) rawResp {
			q := url.Values{"dir": {"b"}, "filter": {`{"contains_url":true}`}, "limit": {"50"}}
			if from != "" {
				q.Set("from", from)
			}
			r := raw(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(rid)+"/messages?"+q.Encode(), alice.AccessToken, nil)
			if r.Status != 200 {
				t.Fatalf("messages: %d %s", r.Status, r.Raw)
			}
			return r
		}
		first := msgs("")
		start, _ := first.Body["start"].(string)
		end, ok := first.Body["end"].(string)
		if start == "" || !ok || end == "" || len(digList(first.Body, "chunk")) != 1 {
			t.Fatalf("first page: %s", first.Raw)
		}
		last := msgs(end)
		if _, has := last.Body["end"]; has || len(digList(last.Body, "chunk")) != 0 {
			t.Fatalf("page after the last: %s", last.Raw)
		}
	})
}

func toIDs(s []string) []id.EventID {
	out := make([]id.EventID, len(s))
	for i, v := range s {
		out[i] = id.EventID(v)
	}
	return out
}

// checkInviteState asserts an invite_state as clients render it: the
// invite with its event ID and timestamp, and the inviter's own member
// event with their display name.
func checkInviteState(t testing.TB, what string, evs []any, inviter, invitee, inviteID, inviterName string) {
	t.Helper()
	var sawInvite, sawInviter bool
	for _, e := range evs {
		if dig(e, "type") != "m.room.member" {
			continue
		}
		switch dig(e, "state_key") {
		case invitee:
			ts, _ := dig(e, "origin_server_ts").(float64)
			if dig(e, "event_id") != inviteID || ts < float64(time.Now().Add(-time.Hour).UnixMilli()) || dig(e, "sender") != inviter || dig(e, "content", "membership") != "invite" {
				t.Fatalf("%s: the invite in invite_state: %s (want event %s)", what, mustJSON(e), inviteID)
			}
			sawInvite = true
		case inviter:
			if dig(e, "content", "membership") != "join" || dig(e, "content", "displayname") != inviterName {
				t.Fatalf("%s: the inviter's member event: %s", what, mustJSON(e))
			}
			sawInviter = true
		}
	}
	if !sawInvite || !sawInviter {
		t.Fatalf("%s: invite_state lacks the invite (%v) or the inviter's member event (%v): %s", what, sawInvite, sawInviter, mustJSON(evs))
	}
}

// TestInviteStateShowsInvite: invite_state carries the invite's event_id
// and origin_server_ts and the inviter's m.room.member, as other servers
// send it (Cinny showed "1 Jan 1970" and a bare user ID without them).
func TestInviteStateShowsInvite(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bob := registerClient(t, srv.URL, "bob", "bob-pass-1")
		ctx := ctxT(t)
		if err := alice.SetDisplayName(ctx, "Alice A"); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "cards"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		st, err := alice.State(ctx, room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		inviteID := string(st[event.StateMember][bob.UserID.String()].ID)
		r := syncQuery(t, srv.URL, bob.AccessToken, nil).Body
		checkInviteState(t, "initial", digList(r, "rooms", "invite", string(room.RoomID), "invite_state", "events"), string(alice.UserID), string(bob.UserID), inviteID, "Alice A")
	})
}

// TestUnreadCountsStartAtJoin: the invite notifies the invitee, but once
// they join, the room's unread count starts at the join: five messages
// after it count five, not six (Cinny's badge showed six).
func TestUnreadCountsStartAtJoin(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := registerClient(t, srv.URL, "alice", "alice-pass-1")
		bob := registerClient(t, srv.URL, "bob", "bob-pass-1")
		ctx := ctxT(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		// The invite is a notification of bob's.
		waitNotifications(t, srv.URL, bob.AccessToken, 1)
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			sendText(t, alice, room.RoomID, "message "+mustJSON(i))
		}
		waitNotifications(t, srv.URL, bob.AccessToken, 6)
		r := syncQuery(t, srv.URL, bob.AccessToken, nil).Body
		if got := dig(r, "rooms", "join", string(room.RoomID), "unread_notifications", "notification_count"); got != float64(5) {
			t.Fatalf("unread count after joining and five messages: %v", got)
		}
	})
}

// waitNotifications polls /notifications until it lists n rows.
func waitNotifications(t testing.TB, base, token string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := raw(t, "GET", base+"/_matrix/client/v3/notifications", token, nil)
		if got := len(digList(r.Body, "notifications")); got >= n {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%d notifications listed, want %d: %s", got, n, r.Raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSyncWakesOnKeyCounts: a device's waiting /sync answers when its
// one-time key counts or unused fallback key types change — its own
// upload, or another user claiming a key — well within 2 s instead of at
// the timeout (Cinny waited ~31 s at "Connecting…" after each login).
func TestSyncWakesOnKeyCounts(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice := newE2EERaw(Register(t, srv.URL, "alice", "alice-pass-1", false))
		bob := Register(t, srv.URL, "bob", "bob-pass-1", false)
		since := e2eeSync(t, srv.URL, alice.token, "", 0).NextBatch
		if r := raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/upload", alice.token, map[string]any{"device_keys": alice.deviceKeys()}); r.Status != 200 {
			t.Fatalf("device keys: %d %s", r.Status, r.Raw)
		}
		since = e2eeSync(t, srv.URL, alice.token, since, 0).NextBatch

		// poll long-polls from since, runs change after 300 ms, and
		// returns the response and how long after the change it came.
		poll := func(what string, change func()) (*e2eeSyncResp, time.Duration) {
			t.Helper()
			type res struct {
				r  *e2eeSyncResp
				at time.Time
			}
			ch := make(chan res, 1)
			go func() {
				r := e2eeSync(t, srv.URL, alice.token, since, 20000)
				ch <- res{r, time.Now()}
			}()
			time.Sleep(300 * time.Millisecond)
			select {
			case got := <-ch:
				t.Fatalf("%s: the long-poll answered before the change: %+v", what, got.r)
			default:
			}
			changed := time.Now()
			change()
			got := <-ch
			since = got.r.NextBatch
			return got.r, got.at.Sub(changed)
		}

		otks := map[string]any{}
		for i := range 3 {
			otks["signed_curve25519:AAA"+mustJSON(i)] = alice.otk(false)
		}
		r, took := poll("upload", func() {
			if r := raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/upload", alice.token, map[string]any{"one_time_keys": otks}); r.Status != 200 {
				t.Fatalf("upload: %d %s", r.Status, r.Raw)
			}
		})
		if took > 2*time.Second || r.OTKCounts["signed_curve25519"] != 3 {
			t.Fatalf("after the upload: counts %v after %v", r.OTKCounts, took)
		}

		r, took = poll("fallback", func() {
			if r := raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/upload", alice.token, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:FB1": alice.otk(true)}}); r.Status != 200 {
				t.Fatalf("fallback upload: %d %s", r.Status, r.Raw)
			}
		})
		if took > 2*time.Second || r.Fallback == nil || len(*r.Fallback) != 1 {
			t.Fatalf("after the fallback upload: %v after %v", r.Fallback, took)
		}

		r, took = poll("claim", func() {
			c := raw(t, "POST", srv.URL+"/_matrix/client/v3/keys/claim", bob.AccessToken, map[string]any{"one_time_keys": map[string]any{alice.userID: map[string]string{alice.deviceID: "signed_curve25519"}}})
			if c.Status != 200 || dig(c.Body, "one_time_keys", alice.userID, alice.deviceID) == nil {
				t.Fatalf("claim: %d %s", c.Status, c.Raw)
			}
		})
		if took > 2*time.Second || r.OTKCounts["signed_curve25519"] != 2 {
			t.Fatalf("after the claim: counts %v after %v", r.OTKCounts, took)
		}

		// Nothing changed: the long-poll waits out its timeout.
		start := time.Now()
		if r := e2eeSync(t, srv.URL, alice.token, since, 1000); time.Since(start) < 900*time.Millisecond {
			t.Fatalf("an idle long-poll answered after %v: %+v", time.Since(start), r)
		}
	})
}
