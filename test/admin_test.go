package test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"enclave/auditapi"
	"enclave/storage"
)

// wantKeys asserts m has each key with a value of the given JSON kind
// ("string", "number", "bool", "array", "object", "null", "string|null").
func wantKeys(t testing.TB, what string, m map[string]any, kinds map[string]string) {
	t.Helper()
	for k, kind := range kinds {
		v, ok := m[k]
		if !ok {
			t.Errorf("%s: missing %q in %v", what, k, m)
			continue
		}
		got := "null"
		switch v.(type) {
		case string:
			got = "string"
		case float64:
			got = "number"
		case bool:
			got = "bool"
		case []any:
			got = "array"
		case map[string]any:
			got = "object"
		}
		if !strings.Contains("|"+kind+"|", "|"+got+"|") {
			t.Errorf("%s: %q is %s (%v), want %s", what, k, got, v, kind)
		}
	}
}

// TestAdminSynadm calls the admin API exactly as synadm's `user list`,
// `user details`, `room list` and `room details` do (IDs unescaped in the
// path, its query parameters) and checks the fields synadm and
// synapse-admin read.
func TestAdminSynadm(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "admin", "admin-pw", true)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		Register(t, srv.URL, "carol", "carol-pw", false)
		base := srv.URL + "/_synapse/admin/"
		get := func(path string) rawResp {
			t.Helper()
			r := raw(t, "GET", base+path, admin.AccessToken, nil)
			if r.Status != 200 {
				t.Fatalf("GET %s: %d %s", path, r.Status, r.Raw)
			}
			return r
		}
		// synadm version
		if v := get("v1/server_version"); v.Body["server_version"] == "" {
			t.Fatalf("server_version: %s", v.Raw)
		}
		// synadm user list: from, limit, guests (when given), name, user_id.
		list := get("v2/users?from=0&limit=100&guests=false")
		wantKeys(t, "user list", list.Body, map[string]string{"users": "array", "total": "number"})
		users := list.Body["users"].([]any)
		if len(users) != 3 || list.Body["total"].(float64) != 3 {
			t.Fatalf("user list: %s", list.Raw)
		}
		for _, u := range users {
			wantKeys(t, "listed user", u.(map[string]any), map[string]string{"name": "string", "is_guest": "bool", "admin": "bool",
				"deactivated": "bool", "shadow_banned": "bool", "displayname": "string|null", "avatar_url": "string|null",
				"creation_ts": "number", "user_type": "null", "locked": "bool", "erased": "bool"})
		}
		page := get("v2/users?from=0&limit=1")
		if page.Body["next_token"] != "1" || len(page.Body["users"].([]any)) != 1 {
			t.Fatalf("paging: %s", page.Raw)
		}
		if last := get("v2/users?from=2&limit=1"); last.Body["next_token"] != nil {
			t.Fatalf("last page has a next_token: %s", last.Raw)
		}
		if f := get("v2/users?name=bo"); len(f.Body["users"].([]any)) != 1 {
			t.Fatalf("name filter: %s", f.Raw)
		}
		if f := get("v2/users?user_id=" + url.QueryEscape("@carol")); len(f.Body["users"].([]any)) != 1 {
			t.Fatalf("user_id filter: %s", f.Raw)
		}
		// synadm user details: the ID goes into the path as typed.
		det := get("v2/users/" + bob.UserID)
		wantKeys(t, "user details", det.Body, map[string]string{"name": "string", "displayname": "string|null", "threepids": "array",
			"avatar_url": "string|null", "is_guest": "bool", "admin": "bool", "deactivated": "bool", "erased": "bool",
			"shadow_banned": "bool", "creation_ts": "number", "appservice_id": "null", "external_ids": "array", "user_type": "null", "locked": "bool"})
		if det.Body["name"] != bob.UserID || det.Body["admin"] != false {
			t.Fatalf("details: %s", det.Raw)
		}
		raw(t, "GET", base+"v2/users/@nobody:localhost", admin.AccessToken, nil).wantErr(t, "unknown user", 404, "M_NOT_FOUND")

		// Rooms: two of bob's, one named for search.
		mk := func(name string, public bool) string {
			body := map[string]any{"name": name}
			if public {
				body["visibility"] = "public"
				body["room_alias_name"] = strings.ToLower(name)
			}
			return mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", bob.AccessToken, body)).Body["room_id"].(string)
		}
		r1 := mk("Zebra", true)
		r2 := mk("Antelope", false)
		rooms := get("v1/rooms?from=0&limit=100")
		wantKeys(t, "room list", rooms.Body, map[string]string{"rooms": "array", "offset": "number", "total_rooms": "number"})
		rl := rooms.Body["rooms"].([]any)
		if len(rl) != 2 || rl[0].(map[string]any)["room_id"] != r2 {
			t.Fatalf("room list (by name): %s", rooms.Raw)
		}
		for _, r := range rl {
			wantKeys(t, "listed room", r.(map[string]any), map[string]string{"room_id": "string", "name": "string|null",
				"canonical_alias": "string|null", "joined_members": "number", "joined_local_members": "number", "version": "string",
				"creator": "string", "encryption": "string|null", "federatable": "bool", "public": "bool", "join_rules": "string|null",
				"guest_access": "string|null", "history_visibility": "string|null", "state_events": "number", "room_type": "string|null"})
		}
		if p := get("v1/rooms?from=0&limit=1"); p.Body["next_batch"] == nil || len(p.Body["rooms"].([]any)) != 1 {
			t.Fatalf("room paging: %s", p.Raw)
		}
		if s := get("v1/rooms?search_term=zeb&order_by=joined_members&dir=b"); len(s.Body["rooms"].([]any)) != 1 || s.Body["rooms"].([]any)[0].(map[string]any)["canonical_alias"] != "#zebra:localhost" {
			t.Fatalf("room search: %s", s.Raw)
		}
		rd := get("v1/rooms/" + r1)
		wantKeys(t, "room details", rd.Body, map[string]string{"room_id": "string", "name": "string", "topic": "string|null",
			"avatar": "string|null", "canonical_alias": "string|null", "joined_members": "number", "joined_local_members": "number",
			"joined_local_devices": "number", "version": "string", "creator": "string", "public": "bool", "forgotten": "bool", "state_events": "number"})
		if rd.Body["public"] != true || rd.Body["joined_local_devices"].(float64) != 1 {
			t.Fatalf("room details: %s", rd.Raw)
		}
		raw(t, "GET", base+"v1/rooms/!nope:localhost", admin.AccessToken, nil).wantErr(t, "unknown room", 404, "M_NOT_FOUND")

		// Every one of those calls is in the audit trail.
		if err := srv.AuditLog().Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		calls, _ := storage.ListAuditRows(context.Background(), srv.DB, storage.AuditFilter{Action: auditapi.ActionAdminCall, Actor: admin.UserID})
		if len(calls) != 13 {
			t.Fatalf("%d admin calls recorded, want 13", len(calls))
		}
	})
}

// TestAdminUsersRoomsTokens covers the rest of the admin API: user
// creation and modification, password reset, whois, joined rooms,
// deactivation, room members, state and deletion (with blocking and legal
// holds), registration tokens, server notices, roles and media.
func TestAdminUsersRoomsTokens(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "admin", "admin-pw", true)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		tok := admin.AccessToken
		s1, s2, e1 := srv.URL+"/_synapse/admin/v1/", srv.URL+"/_synapse/admin/v2/", srv.URL+"/_enclave/admin/v1/"
		do := func(method, url string, body any, want int) rawResp {
			t.Helper()
			r := raw(t, method, url, tok, body)
			if r.Status != want {
				t.Fatalf("%s %s: %d %s (want %d)", method, url, r.Status, r.Raw, want)
			}
			return r
		}
		login := func(user, pw string) int {
			return raw(t, "POST", cs(srv.URL)+"/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": pw}).Status
		}

		// Create, then modify, through PUT v2/users.
		created := do("PUT", s2+"users/@dora:localhost", map[string]any{"password": "dora-pw", "displayname": "Dora"}, 201)
		if created.Body["displayname"] != "Dora" || login("dora", "dora-pw") != 200 {
			t.Fatalf("created: %s", created.Raw)
		}
		mod := do("PUT", s2+"users/@dora:localhost", map[string]any{"admin": true, "displayname": "Dora E."}, 200)
		if mod.Body["admin"] != true || mod.Body["displayname"] != "Dora E." {
			t.Fatalf("modified: %s", mod.Raw)
		}
		if r := do("GET", s1+"users/@dora:localhost/admin", nil, 200); r.Body["admin"] != true {
			t.Fatalf("admin flag: %s", r.Raw)
		}
		roles := do("GET", e1+"users/@dora:localhost/roles", nil, 200)
		if got := roles.Body["roles"].([]any); len(got) != 1 || got[0] != "admin" {
			t.Fatalf("roles after admin:true: %s", roles.Raw)
		}
		do("PUT", e1+"users/@dora:localhost/roles", map[string]any{"roles": []string{"operator", "auditor"}}, 200)
		if r := do("GET", s2+"users/@dora:localhost", nil, 200); r.Body["admin"] != false {
			t.Fatalf("roles without admin keep the admin flag: %s", r.Raw)
		}
		do("PUT", e1+"users/@dora:localhost/roles", map[string]any{"roles": []string{"pope"}}, 400)
		if r := do("GET", e1+"roles", nil, 200); r.Body["roles"].(map[string]any)["auditor"] == nil {
			t.Fatalf("roles: %s", r.Raw)
		}

		// Password reset logs the user out.
		do("POST", s1+"reset_password/"+bob.UserID, map[string]any{"new_password": "bob-new"}, 200)
		raw(t, "GET", cs(srv.URL)+"/account/whoami", bob.AccessToken, nil).wantErr(t, "old token after reset", 401, "M_UNKNOWN_TOKEN")
		if login("bob", "bob-pw") != 403 || login("bob", "bob-new") != 200 {
			t.Fatal("password reset did not take")
		}
		bob2 := Register(t, srv.URL, "bob2", "bob2-pw", false)
		room := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", bob2.AccessToken, map[string]any{"name": "R", "room_alias_name": "r"})).Body["room_id"].(string)
		if r := do("GET", s1+"whois/"+bob2.UserID, nil, 200); r.Body["user_id"] != bob2.UserID || r.Body["devices"] == nil {
			t.Fatalf("whois: %s", r.Raw)
		}
		if r := do("GET", s1+"users/"+bob2.UserID+"/joined_rooms", nil, 200); r.Body["total"].(float64) != 1 || r.Body["joined_rooms"].([]any)[0] != room {
			t.Fatalf("joined rooms: %s", r.Raw)
		}
		if r := do("GET", s1+"rooms/"+room+"/members", nil, 200); r.Body["total"].(float64) != 1 || r.Body["members"].([]any)[0] != bob2.UserID {
			t.Fatalf("members: %s", r.Raw)
		}
		st := do("GET", s1+"rooms/"+room+"/state?type=m.room.name", nil, 200).Body["state"].([]any)
		if len(st) != 1 || st[0].(map[string]any)["content"].(map[string]any)["name"] != "R" {
			t.Fatalf("state: %v", st)
		}

		// Server notices: bob2 is invited to a notice room holding the message.
		n := do("POST", s1+"send_server_notice", map[string]any{"user_id": bob2.UserID, "content": map[string]any{"msgtype": "m.text", "body": "maintenance tonight"}}, 200)
		if ev, _ := n.Body["event_id"].(string); !strings.HasPrefix(ev, "$") {
			t.Fatalf("notice: %s", n.Raw)
		}
		invites, err := storage.RoomsByMembership(context.Background(), srv.DB, bob2.UserID, "invite")
		if err != nil || len(invites) != 1 {
			t.Fatalf("notice room invite: %v %v", invites, err)
		}

		// Legal hold blocks purging; lifting it lets the deletion through.
		do("PUT", e1+"legal_holds/room/"+room, map[string]any{"reason": "litigation 42"}, 200)
		if r := do("GET", e1+"legal_holds", nil, 200); len(r.Body["legal_holds"].([]any)) != 1 {
			t.Fatalf("holds: %s", r.Raw)
		}
		do("DELETE", s2+"rooms/"+room, map[string]any{"block": true, "purge": true}, 403)
		do("DELETE", e1+"legal_holds/room/"+room, nil, 200)
		del := do("DELETE", s2+"rooms/"+room, map[string]any{"block": true, "purge": true}, 200)
		id := del.Body["delete_id"].(string)
		stat := do("GET", s2+"rooms/delete_status/"+id, nil, 200)
		if stat.Body["status"] != "complete" || len(stat.Body["shutdown_room"].(map[string]any)["kicked_users"].([]any)) != 1 {
			t.Fatalf("delete status: %s", stat.Raw)
		}
		if r := do("GET", s2+"rooms/"+room+"/delete_status", nil, 200); len(r.Body["results"].([]any)) != 1 {
			t.Fatalf("delete status by room: %s", r.Raw)
		}
		do("GET", s1+"rooms/"+room, nil, 404)
		raw(t, "POST", cs(srv.URL)+"/rooms/"+room+"/join", bob2.AccessToken, map[string]any{}).wantErr(t, "join purged room", 404, "M_NOT_FOUND")
		if r := do("GET", s1+"rooms/"+room+"/block", nil, 200); r.Body["block"] != true {
			t.Fatalf("block status: %s", r.Raw)
		}
		// v1 deletion without purge, then block and unblock.
		room2 := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", bob2.AccessToken, map[string]any{})).Body["room_id"].(string)
		v1 := do("DELETE", s1+"rooms/"+room2, map[string]any{"purge": false}, 200)
		if k := v1.Body["kicked_users"].([]any); len(k) != 1 || k[0] != bob2.UserID {
			t.Fatalf("v1 delete: %s", v1.Raw)
		}
		do("PUT", s1+"rooms/"+room2+"/block", map[string]any{"block": true}, 200)
		raw(t, "POST", cs(srv.URL)+"/rooms/"+room2+"/join", bob2.AccessToken, map[string]any{}).wantErr(t, "join blocked room", 403, "M_FORBIDDEN")
		do("PUT", s1+"rooms/"+room2+"/block", map[string]any{"block": false}, 200)
		raw(t, "POST", cs(srv.URL)+"/rooms/"+room2+"/join", bob2.AccessToken, map[string]any{}).wantErr(t, "join after unblock (not invited)", 403, "M_FORBIDDEN")

		// Registration tokens.
		exp := time.Now().Add(time.Hour).UnixMilli()
		nt := do("POST", s1+"registration_tokens/new", map[string]any{"token": "abc-123", "uses_allowed": 2, "expiry_time": exp}, 200)
		if nt.Body["token"] != "abc-123" || nt.Body["uses_allowed"].(float64) != 2 || nt.Body["pending"].(float64) != 0 {
			t.Fatalf("new token: %s", nt.Raw)
		}
		do("POST", s1+"registration_tokens/new", map[string]any{"token": "abc-123"}, 400)
		gen := do("POST", s1+"registration_tokens/new", map[string]any{"length": 20}, 200)
		if len(gen.Body["token"].(string)) != 20 {
			t.Fatalf("generated token: %s", gen.Raw)
		}
		up := do("PUT", s1+"registration_tokens/abc-123", map[string]any{"uses_allowed": nil}, 200)
		if up.Body["uses_allowed"] != nil || up.Body["expiry_time"].(float64) != float64(exp) {
			t.Fatalf("updated token: %s", up.Raw)
		}
		if l := do("GET", s1+"registration_tokens?valid=true", nil, 200); len(l.Body["registration_tokens"].([]any)) != 2 {
			t.Fatalf("token list: %s", l.Raw)
		}
		do("GET", s1+"registration_tokens/abc-123", nil, 200)
		do("DELETE", s1+"registration_tokens/abc-123", nil, 200)
		do("GET", s1+"registration_tokens/abc-123", nil, 404)
		do("POST", s1+"registration_tokens/new", map[string]any{"expiry_time": 1}, 400)

		// Media through the media repository: quarantine then delete.
		up2 := raw(t, "POST", srv.URL+"/_matrix/media/v3/upload", bob2.AccessToken, "bytes")
		if up2.Status != 200 {
			t.Fatalf("upload: %s", up2.Raw)
		}
		mid := up2.Body["content_uri"].(string)[len("mxc://localhost/"):]
		do("POST", s1+"media/quarantine/localhost/"+mid+"/", map[string]any{}, 200)
		if r := raw(t, "GET", srv.URL+"/_matrix/client/v1/media/download/localhost/"+mid, bob2.AccessToken, nil); r.Status != 404 {
			t.Fatalf("quarantined media downloadable: %d", r.Status)
		}
		if r := do("DELETE", s1+"media/localhost/"+mid, nil, 200); r.Body["total"].(float64) != 1 {
			t.Fatalf("media delete: %s", r.Raw)
		}
		do("DELETE", s1+"media/localhost/"+mid, nil, 404)

		// Deactivation.
		if r := do("POST", s1+"deactivate/"+bob2.UserID, map[string]any{"erase": true}, 200); r.Body["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate: %s", r.Raw)
		}
		raw(t, "GET", cs(srv.URL)+"/account/whoami", bob2.AccessToken, nil).wantErr(t, "token after deactivation", 401, "M_UNKNOWN_TOKEN")
		if login("bob2", "bob2-pw") != 403 {
			t.Fatal("deactivated user can log in")
		}
		if r := do("GET", s2+"users?deactivated=true&name=bob2", nil, 200); r.Body["users"].([]any)[0].(map[string]any)["deactivated"] != true {
			t.Fatalf("deactivated listing: %s", r.Raw)
		}

		// The changes are in the audit trail with the admin as actor.
		if err := srv.AuditLog().Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		rows, _ := storage.ListAuditRows(context.Background(), srv.DB, storage.AuditFilter{Actor: admin.UserID})
		seen := map[string]bool{}
		for _, r := range rows {
			seen[r.Action] = true
		}
		for _, a := range []string{auditapi.ActionRegister, auditapi.ActionAccountModify, auditapi.ActionRoleChange, auditapi.ActionPasswordChange,
			auditapi.ActionLegalHold, auditapi.ActionRoomPurge, auditapi.ActionRoomBlock, auditapi.ActionRegTokenChange, auditapi.ActionMediaAdmin,
			auditapi.ActionDeactivate, auditapi.ActionServerNotice, auditapi.ActionAdminCall} {
			if !seen[a] {
				t.Errorf("no %s entry by the admin", a)
			}
		}
		for _, r := range rows {
			if strings.Contains(r.Details, "abc-123") || strings.Contains(r.Target, "abc-123") || strings.Contains(r.Details, "bob-new") {
				t.Fatalf("entry %d leaks a secret: %+v", r.N, r)
			}
		}
		// Nothing here needed: unknown admin paths answer M_UNRECOGNIZED.
		if r := raw(t, "GET", s1+"no_such_thing", tok, nil); r.Status != http.StatusNotFound {
			t.Fatalf("unknown admin path: %d", r.Status)
		}
	})
}

// TestAdminRetentionHoldExport: MSC1763 retention purges expired timeline
// events (not state, not the room's latest), a legal hold stops it, and
// the room export streams the room's events; all of it audited.
func TestAdminRetentionHoldExport(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "admin", "admin-pw", true)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		room := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken, map[string]any{})).Body["room_id"].(string)
		rp := cs(srv.URL) + "/rooms/" + url.PathEscape(room)
		for i := range 3 {
			mustOK(t, "send", raw(t, "PUT", rp+"/send/m.room.message/old"+string(rune('a'+i)), alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "old"}))
		}
		mustOK(t, "retention", raw(t, "PUT", rp+"/state/m.room.retention", alice.AccessToken, map[string]any{"max_lifetime": 1000}))
		time.Sleep(1100 * time.Millisecond)
		keep := mustOK(t, "send", raw(t, "PUT", rp+"/send/m.room.message/new", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "new"})).Body["event_id"].(string)
		e1 := srv.URL + "/_enclave/admin/v1/"
		timeline := func() []string {
			rows, err := srv.DB.QueryContext(context.Background(), `SELECT event_id FROM events WHERE room_id = $1 AND state_key IS NULL`, room)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var ids []string
			for rows.Next() {
				var id string
				_ = rows.Scan(&id)
				ids = append(ids, id)
			}
			return ids
		}
		if n := len(timeline()); n != 4 {
			t.Fatalf("%d timeline events before purge", n)
		}
		// Held: nothing goes.
		mustOK(t, "hold", raw(t, "PUT", e1+"legal_holds/user/"+alice.UserID, admin.AccessToken, map[string]any{"reason": "inquiry"}))
		if r := mustOK(t, "run", raw(t, "POST", e1+"retention/run", admin.AccessToken, map[string]any{})); len(r.Body["purged"].(map[string]any)) != 0 {
			t.Fatalf("purged under hold: %s", r.Raw)
		}
		if n := len(timeline()); n != 4 {
			t.Fatalf("%d timeline events after a held run", n)
		}
		mustOK(t, "lift", raw(t, "DELETE", e1+"legal_holds/user/"+alice.UserID, admin.AccessToken, nil))
		r := mustOK(t, "run", raw(t, "POST", e1+"retention/run", admin.AccessToken, map[string]any{}))
		if r.Body["purged"].(map[string]any)[room] != float64(3) {
			t.Fatalf("purge: %s", r.Raw)
		}
		if ids := timeline(); len(ids) != 1 || ids[0] != keep {
			t.Fatalf("after purge: %v (want only %s)", ids, keep)
		}
		// The room still works.
		mustOK(t, "send after purge", raw(t, "PUT", rp+"/send/m.room.message/after", alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "after"}))

		// Export.
		exp := raw(t, "GET", e1+"rooms/"+room+"/export", admin.AccessToken, nil)
		if exp.Status != 200 {
			t.Fatalf("export: %d %s", exp.Status, exp.Raw)
		}
		lines := strings.Split(strings.TrimSpace(string(exp.Raw)), "\n")
		var total int
		_ = srv.DB.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM events WHERE room_id = $1`, room).Scan(&total)
		if !strings.Contains(lines[0], `"room_id":"`+room+`"`) || len(lines) != total+1 {
			t.Fatalf("export has %d lines for %d events: %.300s", len(lines), total, exp.Raw)
		}
		raw(t, "GET", e1+"rooms/"+room+"/export", alice.AccessToken, nil).wantErr(t, "export by a user", 403, "M_FORBIDDEN")

		rows := auditRows(t, srv)
		p := findAudit(t, rows, auditapi.ActionRetention, target(room))
		if details(t, p)["events"] != float64(3) || p.ActorServer != "localhost" {
			t.Fatalf("retention entry %+v", p)
		}
		findAudit(t, rows, auditapi.ActionRoomExport, target(room))
		findAudit(t, rows, auditapi.ActionLegalHold, target(alice.UserID))
	})
}
