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

// TestEventContent checks the event content and state rules issue 13
// lists ("Event content and state"), reading back what the room stored,
// on each store.
func TestEventContent(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		v3 := srv.URL + "/_matrix/client/v3"
		alice := registerClient(t, srv.URL, "alice", "alice-pass")
		bob := registerClient(t, srv.URL, "bob", "bob-pass")
		roomURL := func(room id.RoomID, rest string) string { return v3 + "/rooms/" + url.PathEscape(room.String()) + rest }
		state := func(cli *mautrix.Client, room id.RoomID, typ event.Type, key string) map[string]any {
			t.Helper()
			var c map[string]any
			if err := cli.StateEvent(ctx, room, typ, key, &c); err != nil {
				t.Fatalf("state %s/%s: %v", typ.Type, key, err)
			}
			return c
		}
		create := func(req *mautrix.ReqCreateRoom) id.RoomID {
			t.Helper()
			resp, err := alice.CreateRoom(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return resp.RoomID
		}

		t.Run("createRoom topic writes m.topic", func(t *testing.T) {
			for _, req := range []*mautrix.ReqCreateRoom{
				{Topic: "Test Room", Preset: "public_chat"},
				{Topic: "Test Room", Preset: "public_chat", InitialState: []*event.Event{{Type: event.StateTopic, StateKey: ptr(""),
					Content: event.Content{Raw: map[string]any{"topic": "Shenanigans"}}}}},
			} {
				c := state(alice, create(req), event.StateTopic, "")
				blocks, _ := c["m.topic"].(map[string]any)["m.text"].([]any)
				if c["topic"] != "Test Room" || len(blocks) != 1 || blocks[0].(map[string]any)["body"] != "Test Room" ||
					blocks[0].(map[string]any)["mimetype"] != "text/plain" {
					t.Fatalf("topic content: %v", c)
				}
			}
		})

		t.Run("membership bodies reach the member event", func(t *testing.T) {
			room := create(&mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "custom"})
			if r := raw(t, "POST", v3+"/join/"+url.PathEscape("#custom:localhost"), bob.AccessToken, map[string]any{"foo": "bar", "reason": "hi",
				"membership": "ban", "displayname": "Mallory"}); r.Status != 200 {
				t.Fatalf("join: %d %s", r.Status, r.Raw)
			}
			c := state(alice, room, event.StateMember, bob.UserID.String())
			if c["foo"] != "bar" || c["reason"] != "hi" || c["membership"] != "join" || c["displayname"] != "bob" {
				t.Fatalf("join content: %v", c)
			}
			raw(t, "POST", roomURL(room, "/leave"), bob.AccessToken, map[string]any{"reason": 5}).wantErr(t, "non-string reason", 400, "M_BAD_JSON")
			if r := raw(t, "POST", roomURL(room, "/leave"), bob.AccessToken, map[string]any{"reason": "bye", "custom": 1}); r.Status != 200 {
				t.Fatalf("leave: %d %s", r.Status, r.Raw)
			}
			if c := state(alice, room, event.StateMember, bob.UserID.String()); c["membership"] != "leave" || c["reason"] != "bye" || c["custom"] != float64(1) {
				t.Fatalf("leave content: %v", c)
			}
			if r := raw(t, "POST", roomURL(room, "/ban"), alice.AccessToken, map[string]any{"user_id": bob.UserID, "reason": "Testing", "x": "y"}); r.Status != 200 {
				t.Fatalf("ban: %d %s", r.Status, r.Raw)
			}
			if c := state(alice, room, event.StateMember, bob.UserID.String()); c["membership"] != "ban" || c["reason"] != "Testing" || c["x"] != "y" || c["user_id"] != nil {
				t.Fatalf("ban content: %v", c)
			}
		})

		t.Run("identical state is a no-op", func(t *testing.T) {
			room := create(&mautrix.ReqCreateRoom{Preset: "public_chat"})
			put := func(cli *mautrix.Client, body string) string {
				t.Helper()
				r := raw(t, "PUT", roomURL(room, "/state/m.room.topic/"), cli.AccessToken, body)
				if r.Status != 200 {
					t.Fatalf("put topic: %d %s", r.Status, r.Raw)
				}
				return r.Body["event_id"].(string)
			}
			first := put(alice, `{"topic":"same","x":{"a":1,"b":2}}`)
			before := srv.DB.Stream.Last()
			if again := put(alice, `{"x":{"b":2,"a":1},"topic":"same"}`); again != first {
				t.Fatalf("same content: %s, want %s", again, first)
			}
			if srv.DB.Stream.Last() != before {
				t.Fatal("the no-op wrote an event")
			}
			if other := put(alice, `{"topic":"other"}`); other == first {
				t.Fatal("new content must be a new event")
			}
			// Another sender setting the same content is a new event.
			raw(t, "POST", roomURL(room, "/join"), bob.AccessToken, map[string]any{})
			pl := state(alice, room, event.StatePowerLevels, "")
			pl["users"].(map[string]any)[bob.UserID.String()] = 100
			if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", pl); err != nil {
				t.Fatal(err)
			}
			cur := put(alice, `{"topic":"shared"}`)
			if byBob := put(bob, `{"topic":"shared"}`); byBob == cur {
				t.Fatal("another sender's identical state is an event of its own")
			}
		})

		t.Run("deleting the canonical alias", func(t *testing.T) {
			room := create(&mautrix.ReqCreateRoom{})
			for _, a := range []string{"#canon:localhost", "#alt1:localhost", "#alt2:localhost"} {
				if r := raw(t, "PUT", v3+"/directory/room/"+url.PathEscape(a), alice.AccessToken, map[string]any{"room_id": room}); r.Status != 200 {
					t.Fatalf("alias %s: %d %s", a, r.Status, r.Raw)
				}
			}
			if _, err := alice.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", map[string]any{"alias": "#canon:localhost", "alt_aliases": []string{"#alt1:localhost", "#alt2:localhost"}}); err != nil {
				t.Fatal(err)
			}
			del := func(a string) {
				t.Helper()
				if r := raw(t, "DELETE", v3+"/directory/room/"+url.PathEscape(a), alice.AccessToken, nil); r.Status != 200 {
					t.Fatalf("delete %s: %d %s", a, r.Status, r.Raw)
				}
			}
			del("#canon:localhost")
			if c := state(alice, room, event.StateCanonicalAlias, ""); c["alias"] != nil || len(c["alt_aliases"].([]any)) != 2 {
				t.Fatalf("after deleting the alias: %v", c)
			}
			del("#alt1:localhost")
			del("#alt2:localhost")
			if c := state(alice, room, event.StateCanonicalAlias, ""); len(c) != 0 {
				t.Fatalf("after deleting every alias: %v", c)
			}
			// An alias creator without power still deletes the alias.
			pub := create(&mautrix.ReqCreateRoom{Preset: "public_chat"})
			raw(t, "POST", roomURL(pub, "/join"), bob.AccessToken, map[string]any{})
			raw(t, "PUT", v3+"/directory/room/"+url.PathEscape("#bobs:localhost"), bob.AccessToken, map[string]any{"room_id": pub})
			if _, err := alice.SendStateEvent(ctx, pub, event.StateCanonicalAlias, "", map[string]any{"alias": "#bobs:localhost"}); err != nil {
				t.Fatal(err)
			}
			if r := raw(t, "DELETE", v3+"/directory/room/"+url.PathEscape("#bobs:localhost"), bob.AccessToken, nil); r.Status != 200 {
				t.Fatalf("creator without power: %d %s", r.Status, r.Raw)
			}
			if _, _, err := storage.GetAlias(ctx, srv.DB, "#bobs:localhost"); err == nil {
				t.Fatal("alias still stored")
			}
		})
		t.Run("txnId is per room", func(t *testing.T) {
			r1 := create(&mautrix.ReqCreateRoom{})
			r2 := create(&mautrix.ReqCreateRoom{})
			send := func(cli *mautrix.Client, room id.RoomID) string {
				t.Helper()
				r := raw(t, "PUT", roomURL(room, "/send/m.room.message/same-txn"), cli.AccessToken, map[string]any{"msgtype": "m.text", "body": "x"})
				if r.Status != 200 {
					t.Fatalf("send: %d %s", r.Status, r.Raw)
				}
				return r.Body["event_id"].(string)
			}
			a1, a2 := send(alice, r1), send(alice, r2)
			if a1 == a2 {
				t.Fatal("the same txnId in another room must be another event")
			}
			if again := send(alice, r1); again != a1 {
				t.Fatalf("retry in the first room: %s, want %s", again, a1)
			}
			if again := send(alice, r2); again != a2 {
				t.Fatalf("retry in the second room: %s, want %s", again, a2)
			}
			for room, want := range map[id.RoomID]string{r1: a1, r2: a2} {
				ev, err := storage.GetEvent(ctx, srv.DB, want)
				if err != nil || ev.RoomID != room.String() {
					t.Fatalf("stored %s: %+v %v", want, ev, err)
				}
			}
			// Another device of the same user is another transaction.
			other := loginClient(t, srv.URL, "alice", "alice-pass")
			if send(other, r1) == a1 {
				t.Fatal("another device's txnId must be another event")
			}
		})

		t.Run("one-time keys are claimed oldest first", func(t *testing.T) {
			upload := func(keyID string) {
				t.Helper()
				r := raw(t, "POST", v3+"/keys/upload", bob.AccessToken, map[string]any{"one_time_keys": map[string]any{
					"signed_curve25519:" + keyID: map[string]any{"key": "key-" + keyID}}})
				if r.Status != 200 {
					t.Fatalf("upload %s: %d %s", keyID, r.Status, r.Raw)
				}
			}
			// Uploaded in the opposite order of their IDs, in separate requests.
			for _, k := range []string{"9", "5", "1"} {
				upload(k)
				time.Sleep(5 * time.Millisecond)
			}
			for _, want := range []string{"9", "5", "1"} {
				r := raw(t, "POST", v3+"/keys/claim", alice.AccessToken, map[string]any{"one_time_keys": map[string]any{
					bob.UserID.String(): map[string]string{bob.DeviceID.String(): "signed_curve25519"}}})
				keys, _ := r.Body["one_time_keys"].(map[string]any)[bob.UserID.String()].(map[string]any)[bob.DeviceID.String()].(map[string]any)
				if _, ok := keys["signed_curve25519:"+want]; !ok || len(keys) != 1 {
					t.Fatalf("claim: want key %s, got %s", want, r.Raw)
				}
			}
		})
		t.Run("user directory", func(t *testing.T) {
			carol := registerClient(t, srv.URL, "carol", "carol-pass")
			eve := registerClient(t, srv.URL, "eve", "eve-pass")
			if err := carol.SetDisplayName(ctx, "Carol Cooper"); err != nil {
				t.Fatal(err)
			}
			if _, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat"}); err != nil {
				t.Fatal(err)
			}
			priv := create(&mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{carol.UserID}})
			if _, err := carol.JoinRoomByID(ctx, priv); err != nil {
				t.Fatal(err)
			}
			// Carol's name in alice's room only.
			if _, err := carol.SendStateEvent(ctx, priv, event.StateMember, carol.UserID.String(), map[string]any{"membership": "join", "displayname": "Freddy"}); err != nil {
				t.Fatal(err)
			}
			if c := state(alice, priv, event.StateMember, carol.UserID.String()); c["displayname"] != "Freddy" {
				t.Fatalf("room-specific name: %v", c)
			}
			search := func(cli *mautrix.Client, term string) []map[string]any {
				t.Helper()
				r := raw(t, "POST", v3+"/user_directory/search", cli.AccessToken, map[string]any{"search_term": term})
				if r.Status != 200 {
					t.Fatalf("search %q: %d %s", term, r.Status, r.Raw)
				}
				var out []map[string]any
				for _, x := range r.Body["results"].([]any) {
					out = append(out, x.(map[string]any))
				}
				return out
			}
			for _, who := range []*mautrix.Client{alice, eve} {
				for _, term := range []string{"Carol Cooper", "@carol"} {
					if res := search(who, term); len(res) != 1 || res[0]["user_id"] != carol.UserID.String() || res[0]["display_name"] != "Carol Cooper" {
						t.Fatalf("%s searching %q: %v", who.UserID, term, res)
					}
				}
				if res := search(who, "Freddy"); len(res) != 0 {
					t.Fatalf("%s finds the room-specific name: %v", who.UserID, res)
				}
			}
			// The searcher is never a result of their own search.
			if res := search(carol, "carol"); len(res) != 0 {
				t.Fatalf("carol finds herself: %v", res)
			}
			if res := search(alice, "localhost"); len(res) == 0 {
				t.Fatal("alice finds nobody")
			} else {
				for _, u := range res {
					if u["user_id"] == alice.UserID.String() {
						t.Fatalf("alice finds herself: %v", res)
					}
				}
			}
		})
		t.Run("upgrade copies room push rules", func(t *testing.T) {
			room := create(&mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
			if _, err := bob.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			rule := func(cli *mautrix.Client, kind, ruleID string) string {
				return v3 + "/pushrules/global/" + kind + "/" + url.PathEscape(ruleID)
			}
			put := func(cli *mautrix.Client, kind, ruleID string, body map[string]any) {
				t.Helper()
				if r := raw(t, "PUT", rule(cli, kind, ruleID), cli.AccessToken, body); r.Status != 200 {
					t.Fatalf("put %s rule: %d %s", kind, r.Status, r.Raw)
				}
			}
			put(alice, "room", room.String(), map[string]any{"actions": []string{"dont_notify"}})
			put(alice, "underride", room.String(), map[string]any{"actions": []string{"dont_notify"},
				"conditions": []map[string]any{{"kind": "event_match", "key": "room_id", "pattern": room.String()}}})
			put(alice, "override", "unrelated", map[string]any{"actions": []string{"notify"},
				"conditions": []map[string]any{{"kind": "event_match", "key": "room_id", "pattern": room.String()}}})
			put(bob, "room", room.String(), map[string]any{"actions": []string{"dont_notify"}})
			if r := raw(t, "PUT", rule(bob, "room", room.String())+"/enabled", bob.AccessToken, map[string]any{"enabled": false}); r.Status != 200 {
				t.Fatalf("disable: %d %s", r.Status, r.Raw)
			}
			// Frank left before the upgrade and joins the new room after it.
			frank := registerClient(t, srv.URL, "frank", "frank-pass")
			if _, err := frank.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			put(frank, "room", room.String(), map[string]any{"actions": []string{"dont_notify"}})
			if _, err := frank.LeaveRoom(ctx, room); err != nil {
				t.Fatal(err)
			}
			up := raw(t, "POST", roomURL(room, "/upgrade"), alice.AccessToken, map[string]any{"new_version": "11"})
			newRoom, _ := up.Body["replacement_room"].(string)
			if up.Status != 200 || newRoom == "" {
				t.Fatalf("upgrade: %d %s", up.Status, up.Raw)
			}
			get := func(cli *mautrix.Client, kind, ruleID string) map[string]any {
				t.Helper()
				r := raw(t, "GET", rule(cli, kind, ruleID), cli.AccessToken, nil)
				if r.Status != 200 {
					t.Fatalf("%s's %s rule %s: %d %s", cli.UserID, kind, ruleID, r.Status, r.Raw)
				}
				return r.Body
			}
			for _, who := range []*mautrix.Client{alice, bob} {
				for _, id := range []string{room.String(), newRoom} {
					if r := get(who, "room", id); r["actions"].([]any)[0] != "dont_notify" {
						t.Fatalf("%s's room rule %s: %v", who.UserID, id, r)
					}
				}
			}
			if r := raw(t, "GET", rule(frank, "room", newRoom), frank.AccessToken, nil); r.Status != 404 {
				t.Fatalf("frank was not in the room at the upgrade: %d %s", r.Status, r.Raw)
			}
			if _, err := frank.JoinRoomByID(ctx, id.RoomID(newRoom)); err != nil {
				t.Fatal(err)
			}
			if r := get(frank, "room", newRoom); r["actions"].([]any)[0] != "dont_notify" {
				t.Fatalf("frank's rule after joining the new room: %v", r)
			}
			if r := get(bob, "room", newRoom); r["enabled"] != false {
				t.Fatalf("bob's rule must stay disabled: %v", r)
			}
			if r := get(alice, "underride", newRoom); r["conditions"].([]any)[0].(map[string]any)["pattern"] != newRoom {
				t.Fatalf("underride copy: %v", r)
			}
			if r := get(alice, "override", "unrelated"); r["conditions"].([]any)[0].(map[string]any)["pattern"] != room.String() {
				t.Fatalf("a rule not named for the room is left alone: %v", r)
			}
		})
		t.Run("server notices room", func(t *testing.T) {
			admin := sessionClient(t, srv.URL, Register(t, srv.URL, "noticeadmin", "admin-pass", true))
			dave := registerClient(t, srv.URL, "dave", "dave-pass")
			notice := func(txn string) string {
				t.Helper()
				method, u := "POST", srv.URL+"/_synapse/admin/v1/send_server_notice"
				if txn != "" {
					method, u = "PUT", u+"/"+txn
				}
				r := raw(t, method, u, admin.AccessToken, map[string]any{"user_id": dave.UserID, "content": map[string]any{"msgtype": "m.text", "body": "hello"}})
				if r.Status != 200 {
					t.Fatalf("notice: %d %s", r.Status, r.Raw)
				}
				return r.Body["event_id"].(string)
			}
			raw(t, "POST", srv.URL+"/_synapse/admin/v1/send_server_notice", dave.AccessToken, map[string]any{"user_id": dave.UserID,
				"content": map[string]any{"msgtype": "m.text", "body": "x"}}).wantErr(t, "not an admin", 403, "M_FORBIDDEN")
			first := notice("")
			roomID, err := storage.ServerNoticeRoom(ctx, srv.DB, dave.UserID.String())
			if err != nil || roomID == "" {
				t.Fatalf("notice room: %q %v", roomID, err)
			}
			room := id.RoomID(roomID)
			if m, _ := srv.Rooms.Membership(ctx, roomID, dave.UserID.String()); m != "invite" {
				t.Fatalf("dave is %q, want invited", m)
			}
			// Clients find the notice room by its inviter: the first stripped
			// event of the invite is from the notice sender.
			sy := raw(t, "GET", v3+"/sync", dave.AccessToken, nil)
			inv, _ := sy.Body["rooms"].(map[string]any)["invite"].(map[string]any)[roomID].(map[string]any)
			if evs, _ := inv["invite_state"].(map[string]any)["events"].([]any); len(evs) == 0 || evs[0].(map[string]any)["sender"] != "@_server:localhost" {
				t.Fatalf("invite_state: %v", inv)
			}
			raw(t, "POST", roomURL(room, "/leave"), dave.AccessToken, map[string]any{}).wantErr(t, "reject the notice invite", 403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
			if m, _ := srv.Rooms.Membership(ctx, roomID, dave.UserID.String()); m != "invite" {
				t.Fatalf("after the refused leave dave is %q", m)
			}
			if _, err := dave.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			if _, err := dave.GetEvent(ctx, room, id.EventID(first)); err != nil {
				t.Fatalf("dave reads the notice: %v", err)
			}
			if _, err := dave.LeaveRoom(ctx, room); err != nil {
				t.Fatalf("leaving once joined: %v", err)
			}
			second := notice("")
			if again, _ := storage.ServerNoticeRoom(ctx, srv.DB, dave.UserID.String()); again != roomID {
				t.Fatalf("a new notice room %s, want %s", again, roomID)
			}
			if m, _ := srv.Rooms.Membership(ctx, roomID, dave.UserID.String()); m != "invite" {
				t.Fatalf("dave is %q after the second notice, want invited back", m)
			}
			if ev, err := storage.GetEvent(ctx, srv.DB, second); err != nil || ev.RoomID != roomID {
				t.Fatalf("second notice: %+v %v", ev, err)
			}
			if a, b := notice("n1"), notice("n1"); a != b {
				t.Fatalf("notice txnId: %s then %s", a, b)
			}
		})
		t.Run("unsigned.membership", func(t *testing.T) {
			room := create(&mautrix.ReqCreateRoom{Preset: "public_chat"})
			sendText := func(body string) string {
				t.Helper()
				r, err := alice.SendText(ctx, room, body)
				if err != nil {
					t.Fatal(err)
				}
				return r.EventID.String()
			}
			pre := sendText("prejoin")
			erin := registerClient(t, srv.URL, "erin", "erin-pass")
			if _, err := erin.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			post := sendText("postjoin")
			check := func(what string, evs []any) {
				t.Helper()
				seenJoin, seen := false, map[string]bool{}
				for _, x := range evs {
					ev := x.(map[string]any)
					if ev["type"] == "m.room.member" && ev["state_key"] == erin.UserID.String() {
						seenJoin = true
					}
					want := "leave"
					if seenJoin {
						want = "join"
					}
					un, _ := ev["unsigned"].(map[string]any)
					if un["membership"] != want {
						t.Fatalf("%s: %s %s has unsigned.membership %v, want %s", what, ev["type"], ev["event_id"], un["membership"], want)
					}
					seen[ev["event_id"].(string)] = true
				}
				if !seen[pre] || !seen[post] || !seenJoin {
					t.Fatalf("%s lacks the messages or the join: %v", what, seen)
				}
			}
			r := raw(t, "GET", v3+"/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`), erin.AccessToken, nil)
			join := r.Body["rooms"].(map[string]any)["join"].(map[string]any)[room.String()].(map[string]any)
			check("/sync", join["timeline"].(map[string]any)["events"].([]any))
			m := raw(t, "GET", roomURL(room, "/messages?dir=b&limit=50"), erin.AccessToken, nil)
			check("/messages", reversed(m.Body["chunk"].([]any)))
			c := raw(t, "GET", roomURL(room, "/context/"+url.PathEscape(post)+"?limit=50"), erin.AccessToken, nil)
			if un, _ := c.Body["event"].(map[string]any)["unsigned"].(map[string]any); un["membership"] != "join" {
				t.Fatalf("/context event: %s", c.Raw)
			}
			check("/context", append(reversed(c.Body["events_before"].([]any)), c.Body["event"]))
			for id, want := range map[string]string{pre: "leave", post: "join"} {
				e := raw(t, "GET", roomURL(room, "/event/"+url.PathEscape(id)), erin.AccessToken, nil)
				if un, _ := e.Body["unsigned"].(map[string]any); un["membership"] != want {
					t.Fatalf("/event %s: %s", id, e.Raw)
				}
			}
		})
	})
}
