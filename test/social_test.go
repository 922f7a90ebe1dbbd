package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"enclave/config"
	"enclave/storage"
)

// The social layer end to end: profiles, account data, ignoring, typing,
// receipts and unread counts, presence, push rules, notifications and
// pushers, through mautrix against a real server on each store.

type socUser struct {
	*mautrix.Client
	id id.UserID
}

func socNewUser(t *testing.T, srv *Server, localpart string) *socUser {
	t.Helper()
	r := Register(t, srv.URL, localpart, "password-"+localpart, false)
	cli, err := mautrix.NewClient(srv.URL, id.UserID(r.UserID), r.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = id.DeviceID(r.DeviceID)
	return &socUser{Client: cli, id: id.UserID(r.UserID)}
}

// socErr asserts err is a Matrix error with this status and errcode.
func socErr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("%s: want %d %s, got %v", what, status, code, err)
	}
	got := ""
	if he.RespError != nil {
		got = he.RespError.ErrCode
	}
	if he.Response.StatusCode != status || got != code {
		t.Fatalf("%s: want %d %s, got %d %s (%s)", what, status, code, he.Response.StatusCode, got, he.ResponseBody)
	}
}

// socRaw sends a request with an arbitrary body (for malformed input).
func socRaw(t *testing.T, u *socUser, method, path string, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, u.HomeserverURL.String()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+u.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func (u *socUser) do(t *testing.T, method, path string, body, out any) error {
	t.Helper()
	_, err := u.MakeRequest(context.Background(), method, u.HomeserverURL.String()+"/_matrix/client/v3"+path, body, out)
	return err
}

type socEvent struct {
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	EventID  string          `json:"event_id"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

type socCounts struct {
	Highlight    int `json:"highlight_count"`
	Notification int `json:"notification_count"`
}

type socJoined struct {
	Timeline    struct{ Events []socEvent } `json:"timeline"`
	Ephemeral   struct{ Events []socEvent } `json:"ephemeral"`
	AccountData struct{ Events []socEvent } `json:"account_data"`
	Unread      *socCounts                  `json:"unread_notifications"`
	Threads     map[string]socCounts        `json:"unread_thread_notifications"`
}

type socSync struct {
	NextBatch   string                      `json:"next_batch"`
	AccountData struct{ Events []socEvent } `json:"account_data"`
	Presence    struct{ Events []socEvent } `json:"presence"`
	Rooms       struct {
		Join   map[string]*socJoined      `json:"join"`
		Invite map[string]json.RawMessage `json:"invite"`
	} `json:"rooms"`
}

func (u *socUser) sync(t *testing.T, since string, timeout time.Duration, query map[string]string) *socSync {
	t.Helper()
	q := map[string]string{"timeout": fmt.Sprint(timeout.Milliseconds())}
	if since != "" {
		q["since"] = since
	}
	for k, v := range query {
		q[k] = v
	}
	var out socSync
	_, err := u.MakeRequest(context.Background(), http.MethodGet, u.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil, &out)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return &out
}

// syncUntil long-polls from since until cond holds for a response (at most
// 10 s) and returns that response.
func (u *socUser) syncUntil(t *testing.T, since string, query map[string]string, what string, cond func(*socSync) bool) *socSync {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s := u.sync(t, since, 2*time.Second, query)
		if cond(s) {
			return s
		}
		since = s.NextBatch
	}
	t.Fatalf("%s: not seen in /sync", what)
	return nil
}

func (s *socSync) room(roomID id.RoomID) *socJoined {
	if jr := s.Rooms.Join[string(roomID)]; jr != nil {
		return jr
	}
	return &socJoined{}
}

func socFind(evs []socEvent, typ string) *socEvent {
	for i := range evs {
		if evs[i].Type == typ {
			return &evs[i]
		}
	}
	return nil
}

func (u *socUser) send(t *testing.T, roomID id.RoomID, content map[string]any) id.EventID {
	t.Helper()
	resp, err := u.SendMessageEvent(context.Background(), roomID, event.EventMessage, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func socRoom(t *testing.T, creator *socUser, members ...*socUser) id.RoomID {
	t.Helper()
	ctx := context.Background()
	resp, err := creator.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if _, err := m.JoinRoomByID(ctx, resp.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	return resp.RoomID
}

func TestSocial(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		alice, bob, carol := socNewUser(t, srv, "alice"), socNewUser(t, srv, "bob"), socNewUser(t, srv, "carol")
		room := socRoom(t, alice, bob)
		t.Run("profile", func(t *testing.T) { socProfile(t, srv, alice, bob, room) })
		t.Run("account_data", func(t *testing.T) { socAccountData(t, srv, alice, bob, room) })
		t.Run("typing", func(t *testing.T) { socTyping(t, srv, alice, bob, carol, room) })
		t.Run("unread", func(t *testing.T) { socUnread(t, srv, alice, bob, carol) })
		t.Run("presence", func(t *testing.T) { socPresence(t, srv, alice, bob) })
		t.Run("push_rules", func(t *testing.T) { socPushRules(t, srv, alice, bob) })
		t.Run("pushers", func(t *testing.T) { socPushers(t, srv, alice) })

		// The config switches, on a second server.
		strict := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Profile.RequireSharedRoom = true
			c.Presence.Enabled = false
		}})
		t.Run("switches", func(t *testing.T) { socSwitches(t, strict) })
	})
}

func socProfile(t *testing.T, srv *Server, alice, bob *socUser, room id.RoomID) {
	ctx := context.Background()
	if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(ctx, id.ContentURI{Homeserver: "localhost", FileID: "rabbit"}); err != nil {
		t.Fatal(err)
	}
	p, err := bob.GetProfile(ctx, alice.id)
	if err != nil || p.DisplayName != "Alice Liddell" || p.AvatarURL.String() != "mxc://localhost/rabbit" {
		t.Fatalf("profile %+v %v", p, err)
	}
	dn, err := bob.GetDisplayName(ctx, alice.id)
	if err != nil || dn.DisplayName != "Alice Liddell" {
		t.Fatalf("displayname %+v %v", dn, err)
	}
	stored, err := storage.GetProfile(ctx, srv.DB, string(alice.id))
	if err != nil || stored.DisplayName != "Alice Liddell" || stored.AvatarURL != "mxc://localhost/rabbit" {
		t.Fatalf("stored %+v %v", stored, err)
	}
	// Propagated to the room as a new join event.
	var member struct {
		Membership  string `json:"membership"`
		DisplayName string `json:"displayname"`
		AvatarURL   string `json:"avatar_url"`
	}
	if err := bob.StateEvent(ctx, room, event.StateMember, string(alice.id), &member); err != nil {
		t.Fatal(err)
	}
	if member.Membership != "join" || member.DisplayName != "Alice Liddell" || member.AvatarURL != "mxc://localhost/rabbit" {
		t.Fatalf("member event %+v", member)
	}

	// Forbidden and malformed changes leave the profile as it was.
	socErr(t, "set other's name", bob.do(t, "PUT", "/profile/"+url.PathEscape(string(alice.id))+"/displayname", map[string]any{"displayname": "Mallory"}, nil), 403, "M_FORBIDDEN")
	if code, body := socRaw(t, alice, "PUT", "/_matrix/client/v3/profile/"+string(alice.id)+"/displayname", `{"displayname": 5}`); code != 400 || body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("non-string displayname: %d %v", code, body)
	}
	// (An avatar_url that is not mxc is stored as given: TestStatusCodes.)
	if code, body := socRaw(t, alice, "PUT", "/_matrix/client/v3/profile/"+string(alice.id)+"/avatar_url", `{"avatar_url": "mxc://localhost/`+strings.Repeat("x", 5000)+`"}`); code != 400 || body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("oversized avatar: %d %v", code, body)
	}
	if stored, _ = storage.GetProfile(ctx, srv.DB, string(alice.id)); stored.DisplayName != "Alice Liddell" || stored.AvatarURL != "mxc://localhost/rabbit" {
		t.Fatalf("bad requests changed the profile: %+v", stored)
	}
	_, err = bob.GetProfile(ctx, "@nobody:localhost")
	socErr(t, "unknown user", err, 404, "M_NOT_FOUND")
}

func socAccountData(t *testing.T, srv *Server, alice, bob *socUser, room id.RoomID) {
	ctx := context.Background()
	initial := alice.sync(t, "", 0, nil)
	rules := socFind(initial.AccountData.Events, "m.push_rules")
	if rules == nil || !strings.Contains(string(rules.Content), ".m.rule.master") {
		t.Fatalf("initial sync lacks m.push_rules: %+v", initial.AccountData.Events)
	}
	direct := map[string][]string{string(bob.id): {string(room)}}
	if err := alice.SetAccountData(ctx, "m.direct", direct); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetRoomAccountData(ctx, room, "m.tag", map[string]any{"tags": map[string]any{"m.favourite": map[string]any{"order": 0.5}}}); err != nil {
		t.Fatal(err)
	}
	var got map[string][]string
	if err := alice.GetAccountData(ctx, "m.direct", &got); err != nil || got[string(bob.id)][0] != string(room) {
		t.Fatalf("get m.direct %v %v", got, err)
	}
	if c, err := storage.GetAccountData(ctx, srv.DB, string(alice.id), string(room), "m.tag"); err != nil || !strings.Contains(string(c), "m.favourite") {
		t.Fatalf("stored m.tag %s %v", c, err)
	}
	s := alice.sync(t, initial.NextBatch, 0, nil)
	if socFind(s.AccountData.Events, "m.direct") == nil || socFind(s.room(room).AccountData.Events, "m.tag") == nil {
		t.Fatalf("incremental sync lacks the new account data: %+v", s)
	}
	if socFind(s.AccountData.Events, "m.push_rules") != nil {
		t.Fatal("unchanged push rules sent again")
	}
	// Nothing new: the long-poll waits out its timeout and says nothing.
	began := time.Now()
	if again := alice.sync(t, s.NextBatch, 300*time.Millisecond, nil); len(again.AccountData.Events) != 0 || len(again.Rooms.Join) != 0 || time.Since(began) < 250*time.Millisecond {
		t.Fatalf("idle sync returned early or repeated data: %+v", again)
	}

	// Forbidden / malformed.
	socErr(t, "other user's data", bob.do(t, "PUT", "/user/"+url.PathEscape(string(alice.id))+"/account_data/m.direct", map[string]any{}, nil), 403, "M_FORBIDDEN")
	socErr(t, "server-managed type", alice.SetRoomAccountData(ctx, room, "m.fully_read", map[string]any{"event_id": "$x"}), 405, "M_BAD_JSON")
	if code, body := socRaw(t, alice, "PUT", "/_matrix/client/v3/user/"+string(alice.id)+"/account_data/m.direct", `not json`); code != 400 || body["errcode"] != "M_NOT_JSON" {
		t.Fatalf("non-JSON account data: %d %v", code, body)
	}
	socErr(t, "missing type", alice.GetAccountData(ctx, "com.example.none", &got), 404, "M_NOT_FOUND")
	if c, _ := storage.GetAccountData(ctx, srv.DB, string(alice.id), "", "m.direct"); !strings.Contains(string(c), string(room)) {
		t.Fatalf("m.direct changed by bad requests: %s", c)
	}

	// Ignoring bob hides his messages (not his state) from sync and /messages.
	before := alice.sync(t, "", 0, nil)
	hidden := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "you cannot see me"})
	if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(bob.id): map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	after := alice.sync(t, before.NextBatch, 0, nil)
	for _, e := range after.room(room).Timeline.Events {
		if e.EventID == string(hidden) {
			t.Fatal("ignored user's message in /sync")
		}
	}
	msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	sawBobState := false
	for _, e := range msgs.Chunk {
		if e.ID == hidden {
			t.Fatal("ignored user's message in /messages")
		}
		if e.Sender == bob.id && e.StateKey != nil {
			sawBobState = true
		}
	}
	if !sawBobState {
		t.Fatal("ignored user's state events must still be sent")
	}
	if code, body := socRaw(t, alice, "PUT", "/_matrix/client/v3/user/"+string(alice.id)+"/account_data/m.ignored_user_list", `{"ignored_users": ["@bob:localhost"]}`); code != 400 || body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("malformed ignore list: %d %v", code, body)
	}
	if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	msgs, _ = alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
	if len(msgs.Chunk) == 0 || msgs.Chunk[0].ID != hidden {
		t.Fatal("un-ignoring must show the user's messages again")
	}
}

func socTyping(t *testing.T, srv *Server, alice, bob, carol *socUser, room id.RoomID) {
	ctx := context.Background()
	start := bob.sync(t, "", 0, nil)
	if _, err := alice.UserTyping(ctx, room, true, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := srv.Sync.Typing().Users(string(room)); len(got) != 1 || got[0] != string(alice.id) {
		t.Fatalf("typing set %v", got)
	}
	s := bob.syncUntil(t, start.NextBatch, nil, "alice typing", func(s *socSync) bool {
		e := socFind(s.room(room).Ephemeral.Events, "m.typing")
		return e != nil && strings.Contains(string(e.Content), string(alice.id))
	})
	// Expiry wakes bob's long-poll with an empty set.
	began := time.Now()
	bob.syncUntil(t, s.NextBatch, nil, "typing expiry", func(s *socSync) bool {
		e := socFind(s.room(room).Ephemeral.Events, "m.typing")
		return e != nil && string(e.Content) == `{"user_ids":[]}`
	})
	if time.Since(began) > 5*time.Second {
		t.Fatal("typing expiry took too long")
	}
	if got := srv.Sync.Typing().Users(string(room)); len(got) != 0 {
		t.Fatalf("typing set after expiry %v", got)
	}
	// Initial sync includes current typers.
	if _, err := alice.UserTyping(ctx, room, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := socFind(bob.sync(t, "", 0, nil).room(room).Ephemeral.Events, "m.typing"); e == nil || !strings.Contains(string(e.Content), string(alice.id)) {
		t.Fatal("initial sync lacks the typing user")
	}
	if _, err := alice.UserTyping(ctx, room, false, 0); err != nil {
		t.Fatal(err)
	}

	_, err := carol.UserTyping(ctx, room, true, time.Second)
	socErr(t, "non-member typing", err, 403, "M_FORBIDDEN")
	socErr(t, "typing as other", bob.do(t, "PUT", "/rooms/"+url.PathEscape(string(room))+"/typing/"+url.PathEscape(string(alice.id)), map[string]any{"typing": true}, nil), 403, "M_FORBIDDEN")
	if code, body := socRaw(t, bob, "PUT", "/_matrix/client/v3/rooms/"+string(room)+"/typing/"+string(bob.id), `{"typing":"yes"}`); code != 400 || body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("malformed typing: %d %v", code, body)
	}
	if got := srv.Sync.Typing().Users(string(room)); len(got) != 0 {
		t.Fatalf("rejected requests changed the typing set: %v", got)
	}
}

// socUnread is the acceptance check: mentions raise highlight_count; a
// receipt resets the counts; an edit (m.replace) does not notify.
func socUnread(t *testing.T, srv *Server, alice, bob, carol *socUser) {
	ctx := context.Background()
	room := socRoom(t, bob, alice, carol) // three members: group rules apply
	since := alice.sync(t, "", 0, nil).NextBatch
	counts := func(what string, n, h int) *socSync {
		t.Helper()
		s := alice.syncUntil(t, since, nil, what, func(s *socSync) bool {
			c := s.room(room).Unread
			return c != nil && c.Notification == n && c.Highlight == h
		})
		since = s.NextBatch
		return s
	}
	first := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "hello all"})
	counts("plain message", 1, 0)
	mention := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "Alice Liddell: look", "m.mentions": map[string]any{"user_ids": []string{string(alice.id)}}})
	counts("mention", 2, 1)
	edit := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "* hello everyone", "m.new_content": map[string]any{"msgtype": "m.text", "body": "hello everyone"},
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": string(first)}})
	// Rules run in event order: once the next message counts, the edit was evaluated.
	last := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "and another"})
	counts("edit then message", 3, 1)

	ns := struct {
		Notifications []struct {
			Event   socEvent `json:"event"`
			Read    bool     `json:"read"`
			RoomID  string   `json:"room_id"`
			Actions []any    `json:"actions"`
		} `json:"notifications"`
		NextToken string `json:"next_token"`
	}{}
	if err := alice.do(t, "GET", "/notifications?limit=10", nil, &ns); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	inRoom := 0
	for _, n := range ns.Notifications {
		if n.RoomID != string(room) {
			continue // earlier tests' rooms
		}
		inRoom++
		seen[n.Event.EventID] = true
		if n.Read {
			t.Fatalf("notification %+v", n)
		}
	}
	if inRoom != 3 || seen[string(edit)] || !seen[string(mention)] || !seen[string(last)] {
		t.Fatalf("notifications %+v", ns.Notifications)
	}
	var hl struct {
		Notifications []struct {
			Event socEvent `json:"event"`
		} `json:"notifications"`
	}
	if err := alice.do(t, "GET", "/notifications?only=highlight", nil, &hl); err != nil || len(hl.Notifications) != 1 || hl.Notifications[0].Event.EventID != string(mention) {
		t.Fatalf("highlights %+v %v", hl, err)
	}
	if err := alice.do(t, "GET", "/notifications?limit=1", nil, &ns); err != nil || len(ns.Notifications) != 1 || ns.NextToken == "" {
		t.Fatalf("paging %+v %v", ns, err)
	}
	socErr(t, "bad from", alice.do(t, "GET", "/notifications?from=abc", nil, nil), 400, "M_INVALID_PARAM")

	// Bob does not get notified of his own messages.
	if n, _ := storage.ListNotifications(ctx, srv.DB, string(bob.id), 0, 10, false); len(n) != 0 {
		t.Fatalf("sender notified: %+v", n)
	}

	// A private receipt resets alice's counts; bob never sees it.
	bobSince := bob.sync(t, "", 0, nil).NextBatch
	if err := alice.SendReceipt(ctx, room, last, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	s := counts("after receipt", 0, 0)
	if e := socFind(s.room(room).Ephemeral.Events, "m.receipt"); e == nil || !strings.Contains(string(e.Content), "m.read.private") {
		t.Fatalf("own private receipt not synced: %+v", s.room(room).Ephemeral.Events)
	}
	if err := alice.do(t, "GET", "/notifications", nil, &ns); err != nil || len(ns.Notifications) < 3 || ns.Notifications[0].Event.EventID != string(last) || !ns.Notifications[0].Read {
		t.Fatalf("read flags %+v %v", ns, err)
	}
	// A public receipt goes to bob.
	if err := alice.SendReceipt(ctx, room, last, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	bs := bob.syncUntil(t, bobSince, nil, "alice's receipt", func(s *socSync) bool {
		return socFind(s.room(room).Ephemeral.Events, "m.receipt") != nil
	})
	rc := socFind(bs.room(room).Ephemeral.Events, "m.receipt")
	var content map[string]map[string]map[string]map[string]any
	_ = json.Unmarshal(rc.Content, &content)
	if _, ok := content[string(last)]["m.read"][string(alice.id)]["ts"]; !ok || strings.Contains(string(rc.Content), "m.read.private") {
		t.Fatalf("bob's receipts: %s", rc.Content)
	}
	stored, _ := storage.UserReceipts(ctx, srv.DB, string(alice.id), string(room))
	if len(stored) != 2 || stored[0].EventID != string(last) || stored[1].Type != "m.read.private" {
		t.Fatalf("stored receipts %+v", stored)
	}

	// Threads: counts per thread when the filter asks; a threaded receipt.
	threaded := map[string]string{"filter": `{"room":{"timeline":{"unread_thread_notifications":true}}}`}
	// Alice follows the thread (MSC4306): replies in threads she has not
	// subscribed to would not notify her.
	subPath := alice.HomeserverURL.String() + "/_matrix/client/unstable/io.element.msc4306/rooms/" + url.PathEscape(string(room)) + "/thread/" + url.PathEscape(string(first)) + "/subscription"
	if _, err := alice.MakeRequest(ctx, "PUT", subPath, map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	reply := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": string(first)}})
	ts := alice.syncUntil(t, since, threaded, "thread counts", func(s *socSync) bool {
		return s.room(room).Threads[string(first)].Notification == 1
	})
	if c := ts.room(room).Unread; c == nil || c.Notification != 0 {
		t.Fatalf("main timeline counts %+v", c)
	}
	if err := alice.do(t, "POST", "/rooms/"+url.PathEscape(string(room))+"/receipt/m.read/"+url.PathEscape(string(reply)), map[string]any{"thread_id": string(first)}, nil); err != nil {
		t.Fatal(err)
	}
	alice.syncUntil(t, ts.NextBatch, threaded, "thread read", func(s *socSync) bool {
		jr := s.Rooms.Join[string(room)]
		return jr != nil && jr.Unread != nil && len(jr.Threads) == 0
	})
	if stored, _ = storage.UserReceipts(ctx, srv.DB, string(alice.id), string(room)); len(stored) != 3 || stored[1].ThreadID != string(first) {
		t.Fatalf("threaded receipt %+v", stored)
	}

	// read_markers: m.fully_read becomes room account data.
	if err := alice.SetReadMarkers(ctx, room, map[string]any{"m.fully_read": string(reply), "m.read": string(reply)}); err != nil {
		t.Fatal(err)
	}
	if c, err := storage.GetAccountData(ctx, srv.DB, string(alice.id), string(room), "m.fully_read"); err != nil || !strings.Contains(string(c), string(reply)) {
		t.Fatalf("m.fully_read %s %v", c, err)
	}

	// Forbidden / malformed receipts change nothing.
	rpath := func(typ, ev string) string {
		return "/rooms/" + url.PathEscape(string(room)) + "/receipt/" + typ + "/" + url.PathEscape(ev)
	}
	socErr(t, "unknown receipt type", alice.do(t, "POST", rpath("m.seen", string(last)), map[string]any{}, nil), 400, "M_INVALID_PARAM")
	socErr(t, "empty thread", alice.do(t, "POST", rpath("m.read", string(last)), map[string]any{"thread_id": ""}, nil), 400, "M_INVALID_PARAM")
	socErr(t, "fully_read with thread", alice.do(t, "POST", rpath("m.fully_read", string(last)), map[string]any{"thread_id": "main"}, nil), 400, "M_INVALID_PARAM")
	socErr(t, "unknown event", alice.do(t, "POST", rpath("m.read", "$nope"), map[string]any{}, nil), 404, "M_NOT_FOUND")
	outsider := socNewUser(t, srv, "outsider")
	socErr(t, "non-member receipt", outsider.do(t, "POST", rpath("m.read", string(last)), map[string]any{}, nil), 403, "M_FORBIDDEN")
	if rs, _ := storage.UserReceipts(ctx, srv.DB, string(outsider.id), string(room)); len(rs) != 0 {
		t.Fatalf("outsider receipt stored: %+v", rs)
	}
}

func socPresence(t *testing.T, srv *Server, alice, bob *socUser) {
	ctx := context.Background()
	socRoom(t, alice, bob)
	henry := socNewUser(t, srv, "henry") // shares no room with alice
	since := bob.sync(t, "", 0, map[string]string{"set_presence": "offline"}).NextBatch
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "down the hole"}); err != nil {
		t.Fatal(err)
	}
	bob.syncUntil(t, since, map[string]string{"set_presence": "offline"}, "alice's presence", func(s *socSync) bool {
		for _, e := range s.Presence.Events {
			if e.Sender == string(alice.id) && strings.Contains(string(e.Content), "down the hole") && strings.Contains(string(e.Content), `"online"`) {
				return true
			}
		}
		return false
	})
	p, err := bob.GetPresence(ctx, alice.id)
	if err != nil || p.Presence != event.PresenceOnline || p.StatusMsg != "down the hole" || !p.CurrentlyActive {
		t.Fatalf("get presence %+v %v", p, err)
	}
	row, err := storage.GetPresence(ctx, srv.DB, string(alice.id))
	if err != nil || row.State != "online" || row.StatusMsg == nil || *row.StatusMsg != "down the hole" {
		t.Fatalf("stored presence %+v %v", row, err)
	}
	// Syncing with set_presence updates the state; repeating it writes no row.
	alice.sync(t, "", 0, map[string]string{"set_presence": "unavailable"})
	row, _ = storage.GetPresence(ctx, srv.DB, string(alice.id))
	if row.State != "unavailable" || row.StatusMsg == nil {
		t.Fatalf("after set_presence %+v", row)
	}
	alice.sync(t, "", 0, map[string]string{"set_presence": "unavailable"})
	if again, _ := storage.GetPresence(ctx, srv.DB, string(alice.id)); again.StreamPos != row.StreamPos {
		t.Fatal("unchanged presence wrote a new row")
	}
	// Henry shares no room with alice: no presence for him.
	_, err = henry.GetPresence(ctx, alice.id)
	socErr(t, "presence without a shared room", err, 403, "M_FORBIDDEN")
	for _, e := range henry.sync(t, "", 0, nil).Presence.Events {
		if e.Sender == string(alice.id) {
			t.Fatal("presence leaked to a user without a shared room")
		}
	}
	socErr(t, "set other's presence", bob.do(t, "PUT", "/presence/"+url.PathEscape(string(alice.id))+"/status", map[string]any{"presence": "offline"}, nil), 403, "M_FORBIDDEN")
	socErr(t, "bad presence", alice.do(t, "PUT", "/presence/"+url.PathEscape(string(alice.id))+"/status", map[string]any{"presence": "sleepy"}, nil), 400, "M_INVALID_PARAM")
	if row2, _ := storage.GetPresence(ctx, srv.DB, string(alice.id)); row2.State != "unavailable" {
		t.Fatalf("rejected requests changed presence: %+v", row2)
	}
}

func socPushRules(t *testing.T, srv *Server, alice, bob *socUser) {
	ctx := context.Background()
	rs, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, list := range [][]*pushrules.PushRule{rs.Override, rs.Content, rs.Underride} {
		for _, r := range list {
			ids[r.RuleID] = true
		}
	}
	for _, want := range []string{".m.rule.master", ".m.rule.suppress_edits", ".m.rule.is_user_mention", ".m.rule.contains_user_name", ".m.rule.encrypted", ".m.rule.call"} {
		if !ids[want] {
			t.Fatalf("default rule %s missing", want)
		}
	}
	since := alice.sync(t, "", 0, nil).NextBatch
	pattern := "cake*"
	if err := alice.PutPushRule(ctx, "global", pushrules.ContentRule, "cake", &mautrix.ReqPutPushRule{
		Actions: []*pushrules.PushAction{{Action: pushrules.ActionNotify}}, Pattern: pattern}); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "quiet", &mautrix.ReqPutPushRule{
		Actions:    []*pushrules.PushAction{},
		Conditions: []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "content.body", Pattern: "shh"}}}); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "first", &mautrix.ReqPutPushRule{Before: "quiet", Actions: []*pushrules.PushAction{}}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", false); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRuleActions(ctx, "global", pushrules.ContentRule, "cake", []*pushrules.PushAction{{Action: pushrules.ActionNotify}, {Action: pushrules.ActionSetTweak, Tweak: pushrules.TweakHighlight, Value: true}}); err != nil {
		t.Fatal(err)
	}
	r, err := alice.GetPushRule(ctx, "global", pushrules.ContentRule, "cake")
	if err != nil || r.Pattern != "cake*" || !r.Enabled || r.Default || len(r.Actions) != 2 {
		t.Fatalf("get rule %+v %v", r, err)
	}
	var enabled struct {
		Enabled bool `json:"enabled"`
	}
	if err := alice.do(t, "GET", "/pushrules/global/underride/.m.rule.message/enabled", nil, &enabled); err != nil || enabled.Enabled {
		t.Fatalf("message rule enabled %v %v", enabled, err)
	}
	rs, _ = alice.GetPushRules(ctx)
	if rs.Override[0].RuleID != ".m.rule.master" || rs.Override[1].RuleID != "first" || rs.Override[2].RuleID != "quiet" {
		t.Fatalf("override order %s %s %s", rs.Override[0].RuleID, rs.Override[1].RuleID, rs.Override[2].RuleID)
	}
	rows, _ := storage.PushRules(ctx, srv.DB, string(alice.id))
	if len(rows) != 4 {
		t.Fatalf("stored rows %+v", rows)
	}
	// The change reaches /sync as m.push_rules.
	alice.syncUntil(t, since, nil, "m.push_rules change", func(s *socSync) bool {
		e := socFind(s.AccountData.Events, "m.push_rules")
		return e != nil && strings.Contains(string(e.Content), `"cake*"`)
	})
	if err := alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "first"); err != nil {
		t.Fatal(err)
	}
	_, err = alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "first")
	socErr(t, "deleted rule", err, 404, "M_NOT_FOUND")

	// The user's rules decide: .m.rule.message is off, "cake" highlights.
	room := socRoom(t, bob, alice, socNewUser(t, srv, "dave"))
	bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "plain words"})
	cake := bob.send(t, room, map[string]any{"msgtype": "m.text", "body": "cakes for all"})
	alice.syncUntil(t, "", nil, "cake highlight", func(s *socSync) bool {
		c := s.room(room).Unread
		return c != nil && c.Notification == 1 && c.Highlight == 1
	})
	if n, _ := storage.ListNotifications(ctx, srv.DB, string(alice.id), 0, 1, false); len(n) != 1 || n[0].EventID != string(cake) || !n[0].Highlight {
		t.Fatalf("stored notification %+v", n)
	}

	// Malformed and forbidden changes.
	socErr(t, "reserved rule id", alice.PutPushRule(ctx, "global", pushrules.OverrideRule, ".mine", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}), 400, "M_INVALID_PARAM")
	socErr(t, "unknown kind", alice.do(t, "PUT", "/pushrules/global/weird/x", map[string]any{"actions": []any{}}, nil), 400, "M_INVALID_PARAM")
	socErr(t, "content without pattern", alice.do(t, "PUT", "/pushrules/global/content/nopattern", map[string]any{"actions": []any{"notify"}}, nil), 400, "M_MISSING_PARAM")
	socErr(t, "unknown action", alice.do(t, "PUT", "/pushrules/global/override/bad", map[string]any{"actions": []any{"explode"}}, nil), 400, "M_INVALID_PARAM")
	socErr(t, "unknown before", alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "x", &mautrix.ReqPutPushRule{Before: "nope", Actions: []*pushrules.PushAction{}}), 400, "M_UNKNOWN")
	socErr(t, "delete default", alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master"), 400, "M_INVALID_PARAM")
	socErr(t, "delete unknown", alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "never"), 404, "M_NOT_FOUND")
	socErr(t, "enable unknown", alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, "never", true), 404, "M_NOT_FOUND")
	if rows2, _ := storage.PushRules(ctx, srv.DB, string(alice.id)); len(rows2) != 3 {
		t.Fatalf("rejected requests changed rules: %+v", rows2)
	}
	// Other users' rules are their own.
	if rows3, _ := storage.PushRules(ctx, srv.DB, string(bob.id)); len(rows3) != 0 {
		t.Fatalf("bob has rules %+v", rows3)
	}
}

func socPushers(t *testing.T, srv *Server, alice *socUser) {
	ctx := context.Background()
	kind := mautrix.PusherKindHTTP
	p := &mautrix.Pusher{PushKey: "pk1", Kind: &kind, AppID: "org.example.app", AppDisplayName: "Example", DeviceDisplayName: "Phone", Language: "en",
		Data: mautrix.PusherData{"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"}}
	if err := alice.SetPusher(ctx, p); err != nil {
		t.Fatal(err)
	}
	list, err := alice.GetPushers(ctx)
	if err != nil || len(list.Pushers) != 1 || list.Pushers[0].PushKey != "pk1" || list.Pushers[0].AppDisplayName != "Example" {
		t.Fatalf("pushers %+v %v", list, err)
	}
	stored, _ := storage.Pushers(ctx, srv.DB, string(alice.id))
	if len(stored) != 1 || stored[0].DeviceID != string(alice.DeviceID) {
		t.Fatalf("stored pushers %+v", stored)
	}
	socErr(t, "http url", alice.do(t, "POST", "/pushers/set", map[string]any{"pushkey": "pk2", "kind": "http", "app_id": "a", "app_display_name": "A",
		"device_display_name": "D", "lang": "en", "data": map[string]any{"url": "http://push.example.org/_matrix/push/v1/notify"}}, nil), 400, "M_INVALID_PARAM")
	socErr(t, "missing lang", alice.do(t, "POST", "/pushers/set", map[string]any{"pushkey": "pk2", "kind": "http", "app_id": "a", "app_display_name": "A",
		"device_display_name": "D", "data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"}}, nil), 400, "M_MISSING_PARAM")
	if stored, _ = storage.Pushers(ctx, srv.DB, string(alice.id)); len(stored) != 1 {
		t.Fatalf("rejected pushers stored %+v", stored)
	}
	if err := alice.do(t, "POST", "/pushers/set", map[string]any{"pushkey": "pk1", "kind": nil, "app_id": "org.example.app"}, nil); err != nil {
		t.Fatal(err)
	}
	if stored, _ = storage.Pushers(ctx, srv.DB, string(alice.id)); len(stored) != 0 {
		t.Fatalf("pusher not deleted %+v", stored)
	}
}

func socSwitches(t *testing.T, srv *Server) {
	ctx := context.Background()
	erin, frank, gina := socNewUser(t, srv, "erin"), socNewUser(t, srv, "frank"), socNewUser(t, srv, "gina")
	socRoom(t, erin, frank)
	if err := gina.SetDisplayName(ctx, "Gina"); err != nil {
		t.Fatal(err)
	}
	if p, err := erin.GetProfile(ctx, frank.id); err != nil || p.DisplayName != "frank" {
		t.Fatalf("shared-room profile %+v %v", p, err)
	}
	_, err := erin.GetProfile(ctx, gina.id)
	socErr(t, "profile without a shared room", err, 403, "M_FORBIDDEN")
	if p, err := gina.GetProfile(ctx, gina.id); err != nil || p.DisplayName != "Gina" {
		t.Fatalf("own profile %+v %v", p, err)
	}
	// Presence disabled: PUT accepted and ignored, nothing synced.
	if err := erin.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "here"}); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.GetPresence(ctx, srv.DB, string(erin.id)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("presence stored while disabled: %v", err)
	}
	if s := frank.sync(t, "", 0, nil); len(s.Presence.Events) != 0 {
		t.Fatalf("presence sent while disabled: %+v", s.Presence.Events)
	}
	if p, err := frank.GetPresence(ctx, erin.id); err != nil || p.Presence != event.PresenceOffline || p.StatusMsg != "" {
		t.Fatalf("presence while disabled %+v %v", p, err)
	}
}
