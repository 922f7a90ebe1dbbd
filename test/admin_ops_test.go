package test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

func nowMS() int64 { return time.Now().UnixMilli() }

// TestAdminMediaOps: the media admin API in the shapes synapse-admin and
// synadm send and read (room media, media info, deletion by age and size
// with and without profile pictures, the remote cache purge, per-user
// media statistics, database room sizes), with what is left in the store
// read back through the media API.
func TestAdminMediaOps(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		s1 := srv.URL + "/_synapse/admin/v1/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, aliceReg)
		tok := admin.AccessToken

		up := func(size int, name string) string {
			t.Helper()
			r, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte(strings.Repeat("x", size)), ContentType: "text/plain", FileName: name})
			if err != nil {
				t.Fatal(err)
			}
			return r.ContentURI.FileID
		}
		small, big, avatar := up(5, "small.txt"), up(5000, "big.txt"), up(3000, "face.txt")
		if err := alice.SetAvatarURL(ctx, id.ContentURI{Homeserver: "localhost", FileID: avatar}); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Files"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.image", "body": "big",
			"url": "mxc://localhost/" + big, "info": map[string]any{"thumbnail_url": "mxc://localhost/" + small}}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.file", "body": "remote", "url": "mxc://remote.example/abc"}); err != nil {
			t.Fatal(err)
		}
		download := func(mediaID string) int {
			return raw(t, "GET", srv.URL+"/_matrix/client/v1/media/download/localhost/"+mediaID, alice.AccessToken, nil).Status
		}

		// synapse-admin's room media tab and synadm media list -r.
		rm := mustOK(t, "room media", raw(t, "GET", s1+"room/"+string(room.RoomID)+"/media", tok, nil))
		wantKeys(t, "room media", rm.Body, map[string]string{"local": "array", "remote": "array"})
		local, remote := rm.Body["local"].([]any), rm.Body["remote"].([]any)
		if len(local) != 2 || local[0] != "mxc://localhost/"+big || local[1] != "mxc://localhost/"+small || len(remote) != 1 || remote[0] != "mxc://remote.example/abc" || rm.Body["total"] != float64(2) {
			t.Fatalf("room media: %s", rm.Raw)
		}
		raw(t, "GET", s1+"room/!nope:localhost/media", tok, nil).wantErr(t, "unknown room", 404, "M_NOT_FOUND")

		// Media info.
		info := mustOK(t, "media info", raw(t, "GET", s1+"media/localhost/"+small, tok, nil))
		mi, _ := info.Body["media_info"].(map[string]any)
		wantKeys(t, "media_info", mi, map[string]string{"media_origin": "string", "user_id": "string", "media_id": "string", "media_type": "string",
			"media_length": "number", "upload_name": "string", "created_ts": "number", "last_access_ts": "number", "quarantined_by": "null", "safe_from_quarantine": "bool"})
		if mi["media_type"] != "text/plain" || mi["upload_name"] != "small.txt" || mi["media_length"] != float64(5) || mi["user_id"] != aliceReg.UserID {
			t.Fatalf("media info: %s", info.Raw)
		}
		raw(t, "GET", s1+"media/localhost/nothing", tok, nil).wantErr(t, "unknown media", 404, "M_NOT_FOUND")
		raw(t, "GET", s1+"media/localhost/"+small, alice.AccessToken, nil).wantErr(t, "non-admin", 403, "M_FORBIDDEN")

		// Statistics (synapse-admin's "Users' media" list).
		st := mustOK(t, "media stats", raw(t, "GET", s1+"statistics/users/media?from=0&limit=10&order_by=media_length&dir=b", tok, nil))
		users, _ := st.Body["users"].([]any)
		if st.Body["total"] != float64(1) || len(users) != 1 {
			t.Fatalf("media stats: %s", st.Raw)
		}
		u0 := users[0].(map[string]any)
		wantKeys(t, "media stat", u0, map[string]string{"user_id": "string", "displayname": "string", "media_count": "number", "media_length": "number"})
		if u0["user_id"] != aliceReg.UserID || u0["media_count"] != float64(3) || u0["media_length"] != float64(8005) {
			t.Fatalf("alice's stats: %v", u0)
		}
		if none := mustOK(t, "stats search", raw(t, "GET", s1+"statistics/users/media?search_term=nobody", tok, nil)); none.Body["total"] != float64(0) {
			t.Fatalf("search: %s", none.Raw)
		}
		raw(t, "GET", s1+"statistics/users/media?order_by=colour", tok, nil).wantErr(t, "bad order", 400, "M_INVALID_PARAM")

		// Database statistics.
		db := mustOK(t, "db rooms", raw(t, "GET", s1+"statistics/database/rooms", tok, nil))
		found := false
		for _, r := range db.Body["rooms"].([]any) {
			m := r.(map[string]any)
			if m["room_id"] == string(room.RoomID) && m["estimated_size"].(float64) > 0 {
				found = true
			}
		}
		if !found {
			t.Fatalf("database rooms: %s", db.Raw)
		}

		// Delete by age and size (synapse-admin's request): the profile
		// picture is kept, then deleted with keep_profiles=false.
		before := strconv.FormatInt(nowMS()+60_000, 10)
		del := mustOK(t, "delete by size", raw(t, "POST", s1+"media/localhost/delete?before_ts="+before+"&size_gt=1000&keep_profiles=true", tok, nil))
		if ids, _ := del.Body["deleted_media"].([]any); del.Body["total"] != float64(1) || len(ids) != 1 || ids[0] != big {
			t.Fatalf("deleted: %s", del.Raw)
		}
		if download(big) != 404 || download(small) != 200 || download(avatar) != 200 {
			t.Fatalf("after delete: big %d small %d avatar %d", download(big), download(small), download(avatar))
		}
		del = mustOK(t, "delete profiles", raw(t, "POST", s1+"media/localhost/delete?before_ts="+before+"&size_gt=1000&keep_profiles=false", tok, nil))
		if ids, _ := del.Body["deleted_media"].([]any); len(ids) != 1 || ids[0] != avatar || download(avatar) != 404 || download(small) != 200 {
			t.Fatalf("deleted with profiles: %s", del.Raw)
		}
		if old := mustOK(t, "nothing old", raw(t, "POST", s1+"media/localhost/delete?before_ts=1", tok, nil)); old.Body["total"] != float64(0) {
			t.Fatalf("before_ts=1 deleted: %s", old.Raw)
		}
		raw(t, "POST", s1+"media/localhost/delete", tok, nil).wantErr(t, "no before_ts", 400, "M_MISSING_PARAM")
		raw(t, "POST", s1+"media/remote.example/delete?before_ts=1", tok, nil).wantErr(t, "remote server", 400, "M_INVALID_PARAM")

		// The remote cache purge: nothing cached, nothing local touched.
		pc := mustOK(t, "purge cache", raw(t, "POST", s1+"purge_media_cache?before_ts="+before, tok, nil))
		if pc.Body["deleted"] != float64(0) || download(small) != 200 {
			t.Fatalf("purge cache: %s", pc.Raw)
		}
		raw(t, "POST", s1+"purge_media_cache", tok, nil).wantErr(t, "no before_ts", 400, "M_MISSING_PARAM")

		rows := auditRows(t, srv)
		findAudit(t, rows, "media.admin", func(r *storage.AuditRow) bool { return strings.Contains(r.Details, `"delete_before"`) })
		findAudit(t, rows, "media.admin", func(r *storage.AuditRow) bool { return strings.Contains(r.Details, `"purge_cache"`) })
	})
}

// TestAdminUserOps: an administrator logging in as a user (the token
// works, its device shows in the user's list, refused for oneself and
// other administrators, audited) and the shadow ban (the user's sends
// answer 200 and nobody else sees them, until it is lifted).
func TestAdminUserOps(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		s1, s2 := srv.URL+"/_synapse/admin/v1/", srv.URL+"/_synapse/admin/v2/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		other := Register(t, srv.URL, "root2", "root2-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		bobReg := Register(t, srv.URL, "bob", "bob-pw", false)
		alice, bob := sessionClient(t, srv.URL, aliceReg), sessionClient(t, srv.URL, bobReg)
		tok := admin.AccessToken

		// synadm user login: {"valid_until_ms"}.
		until := nowMS() + 3_600_000
		lg := mustOK(t, "login as alice", raw(t, "POST", s1+"users/"+aliceReg.UserID+"/login", tok, map[string]any{"valid_until_ms": until}))
		puppet, _ := lg.Body["access_token"].(string)
		if puppet == "" {
			t.Fatalf("login: %s", lg.Raw)
		}
		if who := mustOK(t, "whoami", raw(t, "GET", cs(srv.URL)+"/account/whoami", puppet, nil)); who.Body["user_id"] != aliceReg.UserID {
			t.Fatalf("whoami with the admin's token: %s", who.Raw)
		}
		devs := mustOK(t, "devices", raw(t, "GET", s2+"users/"+aliceReg.UserID+"/devices", tok, nil))
		seen := false
		for _, dv := range devs.Body["devices"].([]any) {
			if dv.(map[string]any)["display_name"] == "admin login by "+admin.UserID {
				seen = true
			}
		}
		if !seen {
			t.Fatalf("the admin's session is not in alice's devices: %s", devs.Raw)
		}
		var expires int64
		if err := srv.DB.QueryRowContext(ctx, `SELECT MAX(expires_ts) FROM access_tokens WHERE user_id = $1`, aliceReg.UserID).Scan(&expires); err != nil || expires != until {
			t.Fatalf("token expiry = %d, %v; want %d", expires, err, until)
		}
		raw(t, "POST", s1+"users/"+admin.UserID+"/login", tok, map[string]any{}).wantErr(t, "as oneself", 400, "M_INVALID_PARAM")
		raw(t, "POST", s1+"users/"+other.UserID+"/login", tok, map[string]any{}).wantErr(t, "as another admin", 403, "M_FORBIDDEN")
		raw(t, "POST", s1+"users/@ghost:localhost/login", tok, map[string]any{}).wantErr(t, "unknown user", 404, "M_NOT_FOUND")
		raw(t, "POST", s1+"users/"+bobReg.UserID+"/login", alice.AccessToken, map[string]any{}).wantErr(t, "non-admin", 403, "M_FORBIDDEN")
		findAudit(t, auditRows(t, srv), "admin.login_as_user", func(r *storage.AuditRow) bool {
			return r.ActorUser == admin.UserID && r.Target == aliceReg.UserID
		})

		// Shadow ban.
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lobby"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		mustOK(t, "shadow ban", raw(t, "POST", s1+"users/"+bobReg.UserID+"/shadow_ban", tok, map[string]any{}))
		if u := mustOK(t, "user", raw(t, "GET", s2+"users/"+bobReg.UserID, tok, nil)); u.Body["shadow_banned"] != true {
			t.Fatalf("shadow_banned: %s", u.Raw)
		}
		hidden, err := bob.SendText(ctx, room.RoomID, "hidden words")
		if err != nil || !strings.HasPrefix(string(hidden.EventID), "$") {
			t.Fatalf("shadow-banned send: %v %v", hidden, err)
		}
		mustOK(t, "shadow-banned invite", raw(t, "POST", cs(srv.URL)+"/rooms/"+string(room.RoomID)+"/invite", bob.AccessToken, map[string]any{"user_id": other.UserID}))
		if err := alice.StateEvent(ctx, room.RoomID, event.StateMember, other.UserID, &map[string]any{}); err == nil {
			t.Fatal("the shadow-banned invite reached the room")
		}
		rename := raw(t, "PUT", cs(srv.URL)+"/rooms/"+string(room.RoomID)+"/state/m.room.topic", bob.AccessToken, map[string]any{"topic": "defaced"})
		if rename.Status != 200 || rename.Body["event_id"] == nil {
			t.Fatalf("shadow-banned state: %d %s", rename.Status, rename.Raw)
		}
		texts := func() string {
			t.Helper()
			msgs, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, ev := range msgs.Chunk {
				b.WriteString(string(ev.Content.VeryRaw) + "\n")
			}
			return b.String()
		}
		if s := texts(); strings.Contains(s, "hidden words") || strings.Contains(s, "defaced") {
			t.Fatalf("alice sees the shadow-banned user's events: %s", s)
		}
		raw(t, "GET", cs(srv.URL)+"/rooms/"+string(room.RoomID)+"/event/"+url.PathEscape(string(hidden.EventID)), alice.AccessToken, nil).wantErr(t, "fake event", 404, "M_NOT_FOUND")
		var n int
		if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND sender = $2 AND type <> 'm.room.member'`, string(room.RoomID), bobReg.UserID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("stored events of the shadow-banned user: %d, %v", n, err)
		}
		mustOK(t, "lift", raw(t, "DELETE", s1+"users/"+bobReg.UserID+"/shadow_ban", tok, nil))
		if _, err := bob.SendText(ctx, room.RoomID, "visible words"); err != nil {
			t.Fatal(err)
		}
		if s := texts(); !strings.Contains(s, "visible words") || strings.Contains(s, "hidden words") {
			t.Fatalf("after the ban is lifted: %s", s)
		}
		findAudit(t, auditRows(t, srv), "admin.shadow_ban", func(r *storage.AuditRow) bool { return strings.Contains(r.Details, `"banned":false`) })
	})
}

// TestAdminRoomOps: reading a room's messages as an administrator who is
// not in it, make_room_admin, and purge_history (local events kept unless
// asked, status, legal hold), read back from the store.
func TestAdminRoomOps(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		s1 := srv.URL + "/_synapse/admin/v1/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		carol := Register(t, srv.URL, "carol", "carol-pw", false)
		alice := sessionClient(t, srv.URL, aliceReg)
		tok := admin.AccessToken

		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Board"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(room.RoomID)
		var ids []string
		for _, text := range []string{"one", "two", "three"} {
			sent, err := alice.SendText(ctx, room.RoomID, text)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, string(sent.EventID))
		}
		bodies := func(chunk []any) []string {
			var out []string
			for _, e := range chunk {
				if c, _ := e.(map[string]any)["content"].(map[string]any); c != nil && c["body"] != nil {
					out = append(out, c["body"].(string))
				}
			}
			return out
		}

		// Admin /messages (the admin is not in the room).
		page := mustOK(t, "messages", raw(t, "GET", s1+"rooms/"+roomID+"/messages?dir=b&limit=2", tok, nil))
		wantKeys(t, "messages", page.Body, map[string]string{"chunk": "array", "start": "string", "end": "string"})
		if got := bodies(page.Body["chunk"].([]any)); strings.Join(got, ",") != "three,two" {
			t.Fatalf("newest two: %v (%s)", got, page.Raw)
		}
		next := mustOK(t, "older", raw(t, "GET", s1+"rooms/"+roomID+"/messages?dir=b&limit=1&from="+page.Body["end"].(string), tok, nil))
		if got := bodies(next.Body["chunk"].([]any)); strings.Join(got, ",") != "one" {
			t.Fatalf("next page: %v (%s)", got, next.Raw)
		}
		fwd := mustOK(t, "forward", raw(t, "GET", s1+"rooms/"+roomID+"/messages?limit=100", tok, nil))
		if got := bodies(fwd.Body["chunk"].([]any)); strings.Join(got, ",") != "one,two,three" {
			t.Fatalf("forward: %v", got)
		}
		if first := fwd.Body["chunk"].([]any)[0].(map[string]any); first["type"] != "m.room.create" || first["room_id"] != roomID {
			t.Fatalf("first event: %v", first)
		}
		raw(t, "GET", s1+"rooms/!nope:localhost/messages", tok, nil).wantErr(t, "unknown room", 404, "M_NOT_FOUND")

		// make_room_admin: carol, not in the private room, is invited and
		// raised to alice's level by alice.
		mustOK(t, "make admin", raw(t, "POST", s1+"rooms/"+roomID+"/make_room_admin", tok, map[string]any{"user_id": carol.UserID}))
		state := mustOK(t, "state", raw(t, "GET", s1+"rooms/"+roomID+"/state", tok, nil))
		var level any
		var membership any
		for _, e := range state.Body["state"].([]any) {
			m := e.(map[string]any)
			c := m["content"].(map[string]any)
			if m["type"] == "m.room.power_levels" {
				level = c["users"].(map[string]any)[carol.UserID]
				if m["sender"] != aliceReg.UserID {
					t.Fatalf("power levels sent by %v", m["sender"])
				}
			}
			if m["type"] == "m.room.member" && m["state_key"] == carol.UserID {
				membership = c["membership"]
			}
		}
		if level != float64(100) || membership != "invite" {
			t.Fatalf("carol: level %v membership %v", level, membership)
		}
		raw(t, "POST", s1+"rooms/"+roomID+"/make_room_admin", tok, map[string]any{"user_id": "@x:elsewhere.example"}).wantErr(t, "remote user", 400, "M_INVALID_PARAM")
		findAudit(t, auditRows(t, srv), "admin.make_room_admin", func(r *storage.AuditRow) bool { return r.Target == carol.UserID })

		// purge_history (synadm history purge): local events stay unless
		// delete_local_events.
		count := func() int {
			var n int
			if err := srv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND type = 'm.room.message'`, roomID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		p := mustOK(t, "purge keep local", raw(t, "POST", s1+"purge_history/"+roomID, tok, map[string]any{"purge_up_to_ts": nowMS() + 1000}))
		pid, _ := p.Body["purge_id"].(string)
		if pid == "" || count() != 3 {
			t.Fatalf("purge without delete_local_events: %s, %d messages left", p.Raw, count())
		}
		if s := mustOK(t, "status", raw(t, "GET", s1+"purge_history_status/"+pid, tok, nil)); s.Body["status"] != "complete" {
			t.Fatalf("status: %s", s.Raw)
		}
		mustOK(t, "purge", raw(t, "POST", s1+"purge_history/"+roomID, tok, map[string]any{"delete_local_events": true, "purge_up_to_event_id": ids[2]}))
		if got := bodies(mustOK(t, "after", raw(t, "GET", s1+"rooms/"+roomID+"/messages?limit=100", tok, nil)).Body["chunk"].([]any)); strings.Join(got, ",") != "three" || count() != 1 {
			t.Fatalf("after purge: %v, %d stored", got, count())
		}
		if _, err := storage.GetEvent(ctx, srv.DB, ids[0]); err != storage.ErrNotFound {
			t.Fatalf("purged event still stored: %v", err)
		}
		raw(t, "GET", s1+"purge_history_status/nope", tok, nil).wantErr(t, "unknown purge", 404, "M_NOT_FOUND")
		raw(t, "POST", s1+"purge_history/"+roomID, tok, map[string]any{}).wantErr(t, "no point", 400, "M_MISSING_PARAM")
		mustOK(t, "hold", raw(t, "PUT", srv.URL+"/_enclave/admin/v1/legal_holds/room/"+roomID, tok, map[string]any{"reason": "case 9"}))
		raw(t, "POST", s1+"purge_history/"+roomID, tok, map[string]any{"delete_local_events": true, "purge_up_to_ts": nowMS() + 1000}).wantErr(t, "held room", 403, "M_FORBIDDEN")
		if count() != 1 {
			t.Fatalf("held room purged: %d", count())
		}
		findAudit(t, auditRows(t, srv), "admin.purge_history", func(r *storage.AuditRow) bool { return strings.Contains(r.Details, `"delete_local_events":true`) })

		// Federation is off here: no destinations, and none to look up.
		if ds := mustOK(t, "destinations", raw(t, "GET", s1+"federation/destinations", tok, nil)); ds.Body["total"] != float64(0) {
			t.Fatalf("destinations without federation: %s", ds.Raw)
		}
		raw(t, "GET", s1+"federation/destinations/elsewhere.example", tok, nil).wantErr(t, "no federation", 404, "M_NOT_FOUND")
	})
}

// TestAdminServerNoticeTagAndVersion: server_version is a version, and the
// server-notice room carries m.server_notice in the user's room tags.
func TestAdminServerNoticeTagAndVersion(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, aliceReg)
		v := mustOK(t, "version", raw(t, "GET", srv.URL+"/_synapse/admin/v1/server_version", admin.AccessToken, nil))
		if s, _ := v.Body["server_version"].(string); len(s) < 5 || s[0] < '0' || s[0] > '9' || strings.Count(s, ".") < 2 {
			t.Fatalf("server_version is not a version: %s", v.Raw)
		}
		sent := mustOK(t, "notice", raw(t, "POST", srv.URL+"/_synapse/admin/v1/send_server_notice", admin.AccessToken,
			map[string]any{"user_id": aliceReg.UserID, "content": map[string]any{"msgtype": "m.text", "body": "maintenance tonight"}}))
		ev, err := storage.GetEvent(ctx, srv.DB, sent.Body["event_id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.JoinRoomByID(ctx, id.RoomID(ev.RoomID)); err != nil {
			t.Fatal(err)
		}
		tags := mustOK(t, "tags", raw(t, "GET", cs(srv.URL)+"/user/"+aliceReg.UserID+"/rooms/"+ev.RoomID+"/tags", alice.AccessToken, nil))
		if tg, _ := tags.Body["tags"].(map[string]any); tg == nil || tg["m.server_notice"] == nil {
			t.Fatalf("notice room tags: %s", tags.Raw)
		}
	})
}
