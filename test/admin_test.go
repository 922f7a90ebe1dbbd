package test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"enclave/auditapi"
	"enclave/config"
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
		if err := srv.Audit.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		calls, _ := storage.ListAuditRows(context.Background(), srv.DB, storage.AuditFilter{Action: auditapi.ActionAdminCall, Actor: admin.UserID})
		if len(calls) != 13 {
			t.Fatalf("%d admin calls recorded, want 13", len(calls))
		}
		synadmReplay(t, srv, admin, bob, r1, r2)
	})
}

// synadmReplay sends the requests synadm's user, room, media and history
// commands send (synadm/api.py: the same paths, bodies and query
// parameters) and checks each answer has the keys synadm reads, and what
// it changed is changed. synadm has no reports command; the event reports
// list is replayed as synapse-admin asks for it.
func synadmReplay(t *testing.T, srv *Server, admin, bob RegisterResult, r1, r2 string) {
	base := srv.URL + "/_synapse/admin/"
	do := func(method, path string, params url.Values, body any) rawResp {
		t.Helper()
		u := base + path
		if params != nil {
			u += "?" + params.Encode()
		}
		r := raw(t, method, u, admin.AccessToken, body)
		if r.Status != 200 {
			t.Fatalf("%s %s: %d %s", method, path, r.Status, r.Raw)
		}
		return r
	}
	upload := func(size int) string {
		t.Helper()
		r := raw(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=f.bin", bob.AccessToken, strings.Repeat("z", size))
		if r.Status != 200 {
			t.Fatalf("upload: %d %s", r.Status, r.Raw)
		}
		return strings.TrimPrefix(r.Body["content_uri"].(string), "mxc://localhost/")
	}
	m1, m2, m3 := upload(10), upload(4096), upload(20)
	mustOK(t, "send file", raw(t, "PUT", cs(srv.URL)+"/rooms/"+r1+"/send/m.room.message/f1", bob.AccessToken, map[string]any{"msgtype": "m.file", "body": "f", "url": "mxc://localhost/" + m1}))

	// synadm media list -r ROOM: v1/room/{room_id}/media.
	rm := do("GET", "v1/room/"+r1+"/media", nil, nil)
	wantKeys(t, "media list -r", rm.Body, map[string]string{"local": "array", "remote": "array"})
	if l := rm.Body["local"].([]any); len(l) != 1 || l[0] != "mxc://localhost/"+m1 {
		t.Fatalf("room media: %s", rm.Raw)
	}
	// synadm media list -u USER: v1/users/{id}/media with from and limit
	// (order_by and dir only when given); it reads created_ts and
	// last_access_ts of each item.
	um := do("GET", "v1/users/"+bob.UserID+"/media", url.Values{"from": {"0"}, "limit": {"100"}}, nil)
	wantKeys(t, "media list -u", um.Body, map[string]string{"media": "array", "total": "number"})
	for _, m := range um.Body["media"].([]any) {
		wantKeys(t, "user media item", m.(map[string]any), map[string]string{"media_id": "string", "created_ts": "number", "last_access_ts": "number|null", "media_length": "number"})
	}
	if um.Body["total"] != float64(3) {
		t.Fatalf("user media: %s", um.Raw)
	}
	// synadm media delete -i ID: DELETE v1/media/{server}/{id}/ with {}.
	del := do("DELETE", "v1/media/localhost/"+m3+"/", nil, map[string]any{})
	wantKeys(t, "media delete -i", del.Body, map[string]string{"deleted_media": "array", "total": "number"})
	// synadm media delete --before-ts T --size 2 --delete-profiles: the
	// size in KiB times 1024, server_name repeated as a parameter.
	bd := do("POST", "v1/media/localhost/delete", url.Values{"server_name": {"localhost"}, "before_ts": {fmt.Sprint(time.Now().UnixMilli() + 60000)},
		"size_gt": {"2048"}, "keep_profiles": {"false"}}, map[string]any{})
	if ids, _ := bd.Body["deleted_media"].([]any); len(ids) != 1 || ids[0] != m2 || bd.Body["total"] != float64(1) {
		t.Fatalf("media delete by size: %s", bd.Raw)
	}
	if left := do("GET", "v1/users/"+bob.UserID+"/media", nil, nil); left.Body["total"] != float64(1) {
		t.Fatalf("media left: %s", left.Raw)
	}
	// synadm media purge --before-ts T: v1/purge_media_cache, before_ts a string.
	if p := do("POST", "v1/purge_media_cache", url.Values{"before_ts": {fmt.Sprint(time.Now().UnixMilli())}}, map[string]any{}); p.Body["deleted"] == nil {
		t.Fatalf("media purge: %s", p.Raw)
	}

	// synadm history purge ROOM --before-ts T --delete-local, then
	// history purge-status ID.
	hp := do("POST", "v1/purge_history/"+r1, nil, map[string]any{"purge_up_to_ts": time.Now().UnixMilli() + 1000, "delete_local_events": true})
	if st := do("GET", "v1/purge_history_status/"+hp.Body["purge_id"].(string), nil, nil); st.Body["status"] != "complete" {
		t.Fatalf("purge status: %s", st.Raw)
	}
	// synadm room make-admin ROOM -u USER: {"user_id"}.
	do("POST", "v1/rooms/"+r2+"/make_room_admin", nil, map[string]any{"user_id": admin.UserID})

	// Reports, as synapse-admin lists them.
	rep := do("GET", "v1/event_reports", url.Values{"from": {"0"}, "limit": {"10"}, "order_by": {"received_ts"}, "dir": {"b"}}, nil)
	wantKeys(t, "reports", rep.Body, map[string]string{"event_reports": "array", "total": "number"})

	// synadm user login USER: {"valid_until_ms"} (one day by default).
	lg := do("POST", "v1/users/"+bob.UserID+"/login", nil, map[string]any{"valid_until_ms": time.Now().Add(24 * time.Hour).UnixMilli()})
	wantKeys(t, "user login", lg.Body, map[string]string{"access_token": "string"})

	// synadm room delete ROOM: DELETE v1/rooms/{id} {"block", "purge"}.
	rd := do("DELETE", "v1/rooms/"+r2, nil, map[string]any{"block": false, "purge": true})
	wantKeys(t, "room delete", rd.Body, map[string]string{"kicked_users": "array", "failed_to_kick_users": "array", "local_aliases": "array", "new_room_id": "null"})
	raw(t, "GET", base+"v1/rooms/"+r2, admin.AccessToken, nil).wantErr(t, "deleted room", 404, "M_NOT_FOUND")

	// synadm user deactivate USER: v1/deactivate/{id} {"erase": false}.
	dv := do("POST", "v1/deactivate/"+bob.UserID, nil, map[string]any{"erase": false})
	wantKeys(t, "user deactivate", dv.Body, map[string]string{"id_server_unbind_result": "string"})
	if u := do("GET", "v2/users/"+bob.UserID, nil, nil); u.Body["deactivated"] != true {
		t.Fatalf("deactivated: %s", u.Raw)
	}
	if r := raw(t, "GET", cs(srv.URL)+"/account/whoami", lg.Body["access_token"].(string), nil); r.Status != 401 {
		t.Fatalf("the admin login token outlived the deactivation: %d %s", r.Status, r.Raw)
	}
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
		// auditor watches the admins: the grant waits for a second admin.
		do("PUT", e1+"users/@dora:localhost/roles", map[string]any{"roles": []string{"operator", "auditor"}}, 202)
		if r := setRolesApproved(t, srv.URL, admin.AccessToken, "@dora:localhost", "operator", "auditor"); r.Status != 200 {
			t.Fatalf("approved grant: %d %s", r.Status, r.Raw)
		}
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
		if err := srv.Audit.Flush(context.Background()); err != nil {
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
		timeline := func() []string { return storedTimeline(t, srv.DB, room) }
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

// TestAdminRetentionDefaultPolicy: the server-wide retention section.
// Rooms without m.room.retention lose timeline events older than
// retention.default_max_lifetime, a room's own max_lifetime is clamped to
// allowed_lifetime_min/max, rooms (or members) under legal hold keep
// everything; each purge is audited with the policy that caused it.
func TestAdminRetentionDefaultPolicy(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		const (
			def   = 3 * time.Second // default and lower bound
			upper = 4 * time.Second
			year  = int64(365 * 24 * time.Hour / time.Millisecond)
		)
		srv := Start(t, d, Options{Configure: func(c *config.Config) {
			c.Retention.DefaultMaxLifetime.Duration = def
			c.Retention.AllowedLifetimeMin.Duration = def
			c.Retention.AllowedLifetimeMax.Duration = upper
		}})
		admin := Register(t, srv.URL, "admin", "admin-pw", true)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		carol := Register(t, srv.URL, "carol", "carol-pw", false)
		e1 := srv.URL + "/_enclave/admin/v1/"
		create := func(who RegisterResult) string {
			return mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", who.AccessToken, map[string]any{})).Body["room_id"].(string)
		}
		txn := 0
		send := func(who RegisterResult, room, body string) string {
			t.Helper()
			txn++
			return mustOK(t, "send", raw(t, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/t%d", cs(srv.URL), url.PathEscape(room), txn),
				who.AccessToken, map[string]any{"msgtype": "m.text", "body": body})).Body["event_id"].(string)
		}
		timeline := func(room string) []string { return storedTimeline(t, srv.DB, room) }
		messages := func(who RegisterResult, room string) map[string]bool {
			t.Helper()
			r := mustOK(t, "messages", raw(t, "GET", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", who.AccessToken, nil))
			seen := map[string]bool{}
			for _, ev := range r.Body["chunk"].([]any) {
				seen[ev.(map[string]any)["event_id"].(string)] = true
			}
			return seen
		}

		plain := create(alice)  // no policy: the default applies
		held := create(alice)   // no policy, room under legal hold
		heldBy := create(carol) // no policy, a member under legal hold
		long := create(alice)   // max_lifetime of a year, lowered to 4s
		short := create(alice)  // max_lifetime of 1ms, raised to 3s
		for _, p := range []struct {
			room string
			ms   int64
		}{{long, year}, {short, 1}} {
			mustOK(t, "retention", raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(p.room)+"/state/m.room.retention", alice.AccessToken, map[string]any{"max_lifetime": p.ms}))
		}
		old := map[string][]string{}
		for _, r := range []struct {
			who  RegisterResult
			room string
		}{{alice, plain}, {alice, held}, {carol, heldBy}, {alice, long}, {alice, short}} {
			old[r.room] = []string{send(r.who, r.room, "old 1"), send(r.who, r.room, "old 2")}
		}
		lastOld := time.Now()
		mustOK(t, "room hold", raw(t, "PUT", e1+"legal_holds/room/"+held, admin.AccessToken, map[string]any{"reason": "case 7"}))
		mustOK(t, "user hold", raw(t, "PUT", e1+"legal_holds/user/"+carol.UserID, admin.AccessToken, map[string]any{"reason": "case 8"}))

		// Younger than the default and the lower bound when the purge runs.
		time.Sleep(time.Until(lastOld.Add(upper - 1200*time.Millisecond)))
		recentPlain, recentShort := send(alice, plain, "recent"), send(alice, short, "recent")
		time.Sleep(time.Until(lastOld.Add(upper + 300*time.Millisecond)))
		latest := map[string]string{}
		for _, r := range []struct {
			who  RegisterResult
			room string
		}{{alice, plain}, {alice, held}, {carol, heldBy}, {alice, long}, {alice, short}} {
			latest[r.room] = send(r.who, r.room, "latest")
		}
		before := map[string]int{}
		for _, room := range []string{held, heldBy} {
			before[room] = len(timeline(room))
		}

		run := mustOK(t, "run", raw(t, "POST", e1+"retention/run", admin.AccessToken, map[string]any{}))
		purged := run.Body["purged"].(map[string]any)
		want := map[string]any{plain: float64(2), long: float64(2), short: float64(2)}
		if !reflect.DeepEqual(purged, want) {
			t.Fatalf("purged %v, want %v (plain %s, long %s, short %s)", purged, want, plain, long, short)
		}
		// Gone from the store and from /messages; the young and the latest stay.
		for room, keep := range map[string][]string{plain: {recentPlain, latest[plain]}, long: {latest[long]}, short: {recentShort, latest[short]}} {
			if got := timeline(room); !reflect.DeepEqual(got, keep) {
				t.Fatalf("timeline of %s after purge: %v, want %v", room, got, keep)
			}
			seen := messages(alice, room)
			for _, id := range old[room] {
				if seen[id] {
					t.Fatalf("purged %s still in /messages of %s", id, room)
				}
			}
			for _, id := range keep {
				if !seen[id] {
					t.Fatalf("kept %s missing from /messages of %s", id, room)
				}
			}
		}
		// Held rooms keep everything, in the store and in /messages.
		for room, who := range map[string]RegisterResult{held: alice, heldBy: carol} {
			if n := len(timeline(room)); n != before[room] {
				t.Fatalf("held room %s: %d timeline events, had %d", room, n, before[room])
			}
			seen := messages(who, room)
			for _, id := range append(old[room], latest[room]) {
				if !seen[id] {
					t.Fatalf("held room %s lost %s from /messages", room, id)
				}
			}
		}
		// A second run finds nothing more.
		if r := mustOK(t, "rerun", raw(t, "POST", e1+"retention/run", admin.AccessToken, map[string]any{})); len(r.Body["purged"].(map[string]any)) != 0 {
			t.Fatalf("second run purged: %s", r.Raw)
		}

		rows := auditRows(t, srv)
		for room, w := range map[string]struct {
			policy    string
			lifetime  float64
			roomLimit any
		}{plain: {"default", 3000, nil}, long: {"room", 4000, float64(year)}, short: {"room", 3000, float64(1)}} {
			p := findAudit(t, rows, auditapi.ActionRetention, target(room))
			dt := details(t, p)
			if p.ActorServer != "localhost" || p.RoomID != room || dt["events"] != float64(2) || dt["policy"] != w.policy ||
				dt["max_lifetime"] != w.lifetime || dt["room_max_lifetime"] != w.roomLimit {
				t.Fatalf("retention entry for %s: %+v", room, p)
			}
		}
		for _, r := range rows {
			if r.Action == auditapi.ActionRetention && (r.Target == held || r.Target == heldBy) {
				t.Fatalf("retention entry for a held room: %+v", r)
			}
		}
	})
}

// TestAdminDeleteRoomNewRoom: deleting a room with new_room_user_id moves
// its local users into a new room created by that user, with the given
// (or default) name and message, and repoints its local aliases there; a
// new_room_user_id that is not a local user is refused and changes nothing.
func TestAdminDeleteRoomNewRoom(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		admin := Register(t, srv.URL, "admin", "admin-pw", true)
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		bob := Register(t, srv.URL, "bob", "bob-pw", false)
		mod := Register(t, srv.URL, "moderator", "mod-pw", false)
		s1, s2 := srv.URL+"/_synapse/admin/v1/", srv.URL+"/_synapse/admin/v2/"
		do := func(method, url string, body any, want int) rawResp {
			t.Helper()
			r := raw(t, method, url, admin.AccessToken, body)
			if r.Status != want {
				t.Fatalf("%s %s: %d %s (want %d)", method, url, r.Status, r.Raw, want)
			}
			return r
		}
		resolve := func(alias string) rawResp {
			return raw(t, "GET", cs(srv.URL)+"/directory/room/"+url.PathEscape(alias), bob.AccessToken, nil)
		}
		joined := func(who RegisterResult) []any {
			return mustOK(t, "joined_rooms", raw(t, "GET", cs(srv.URL)+"/joined_rooms", who.AccessToken, nil)).Body["joined_rooms"].([]any)
		}
		mkRoom := func(alias string) string {
			room := mustOK(t, "create", raw(t, "POST", cs(srv.URL)+"/createRoom", alice.AccessToken,
				map[string]any{"preset": "public_chat", "room_alias_name": alias, "name": "Doomed " + alias})).Body["room_id"].(string)
			mustOK(t, "bob joins", raw(t, "POST", cs(srv.URL)+"/rooms/"+url.PathEscape(room)+"/join", bob.AccessToken, map[string]any{}))
			return room
		}
		room := mkRoom("doomed")
		alias := "#doomed:localhost"

		// Refused, and nothing changed: a remote user, a malformed ID, an unknown local user.
		for _, c := range []struct {
			url, user string
			status    int
			errcode   string
		}{
			{s1 + "rooms/" + room, "@mallory:elsewhere.example", 400, "M_INVALID_PARAM"},
			{s2 + "rooms/" + room, "@mallory:elsewhere.example", 400, "M_INVALID_PARAM"},
			{s1 + "rooms/" + room, "moderator", 400, "M_INVALID_PARAM"},
			{s2 + "rooms/" + room, "@ghost:localhost", 404, "M_NOT_FOUND"},
		} {
			raw(t, "DELETE", c.url, admin.AccessToken, map[string]any{"new_room_user_id": c.user, "block": true}).
				wantErr(t, "delete with new_room_user_id "+c.user, c.status, c.errcode)
		}
		if r := do("GET", s1+"rooms/"+room, nil, 200); r.Body["joined_members"].(float64) != 2 {
			t.Fatalf("room after refused deletions: %s", r.Raw)
		}
		if r := do("GET", s1+"rooms?from=0&limit=100", nil, 200); r.Body["total_rooms"].(float64) != 1 {
			t.Fatalf("a refused deletion created a room: %s", r.Raw)
		}
		if r := mustOK(t, "resolve", resolve(alias)); r.Body["room_id"] != room {
			t.Fatalf("alias after refused deletions: %s", r.Raw)
		}
		if r := do("GET", s1+"rooms/"+room+"/block", nil, 200); r.Body["block"] != false {
			t.Fatalf("refused deletion blocked the room: %s", r.Raw)
		}
		raw(t, "GET", s2+"rooms/"+room+"/delete_status", admin.AccessToken, nil).wantErr(t, "delete status after refusals", 404, "M_NOT_FOUND")

		// v1 with a room name and the default message.
		res := do("DELETE", s1+"rooms/"+room, map[string]any{"new_room_user_id": mod.UserID, "room_name": "Closed by the administrator", "block": true}, 200)
		newRoom, _ := res.Body["new_room_id"].(string)
		if !strings.HasPrefix(newRoom, "!") || newRoom == room {
			t.Fatalf("new_room_id: %s", res.Raw)
		}
		kicked := map[string]bool{}
		for _, u := range res.Body["kicked_users"].([]any) {
			kicked[u.(string)] = true
		}
		if len(kicked) != 2 || !kicked[alice.UserID] || !kicked[bob.UserID] || len(res.Body["failed_to_kick_users"].([]any)) != 0 {
			t.Fatalf("kicked: %s", res.Raw)
		}
		if la := res.Body["local_aliases"].([]any); len(la) != 1 || la[0] != alias {
			t.Fatalf("local_aliases: %s", res.Raw)
		}
		checkNewRoom := func(newRoom, name, message string) {
			t.Helper()
			det := do("GET", s1+"rooms/"+newRoom, nil, 200)
			if det.Body["name"] != name || det.Body["creator"] != mod.UserID || det.Body["joined_members"].(float64) != 3 {
				t.Fatalf("new room: %s", det.Raw)
			}
			for _, who := range []RegisterResult{alice, bob} {
				if j := joined(who); len(j) != 1 || j[0] != newRoom {
					t.Fatalf("%s joined to %v, want only %s", who.UserID, j, newRoom)
				}
			}
			msgs := mustOK(t, "messages", raw(t, "GET", cs(srv.URL)+"/rooms/"+url.PathEscape(newRoom)+"/messages?dir=b&limit=50", bob.AccessToken, nil))
			found := false
			for _, e := range msgs.Body["chunk"].([]any) {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.message" && ev["sender"] == mod.UserID && ev["content"].(map[string]any)["body"] == message {
					found = true
				}
			}
			if !found {
				t.Fatalf("message %q not in the new room: %.2000s", message, msgs.Raw)
			}
			// Moved users may read, not post.
			raw(t, "PUT", cs(srv.URL)+"/rooms/"+url.PathEscape(newRoom)+"/send/m.room.message/x", bob.AccessToken,
				map[string]any{"msgtype": "m.text", "body": "hi"}).wantErr(t, "post in the notice room", 403, "M_FORBIDDEN")
		}
		checkNewRoom(newRoom, "Closed by the administrator", "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.")
		if r := mustOK(t, "resolve", resolve(alias)); r.Body["room_id"] != newRoom {
			t.Fatalf("alias resolves to %s, want the new room %s", r.Body["room_id"], newRoom)
		}
		do("GET", s1+"rooms/"+room, nil, 404)
		if r := do("GET", s1+"rooms/"+room+"/block", nil, 200); r.Body["block"] != true {
			t.Fatalf("deleted room not blocked: %s", r.Raw)
		}

		// v2 with a message and the default name; the users leave the
		// first notice room so that only the new one is theirs.
		for _, who := range []RegisterResult{alice, bob} {
			mustOK(t, "leave", raw(t, "POST", cs(srv.URL)+"/rooms/"+url.PathEscape(newRoom)+"/leave", who.AccessToken, map[string]any{}))
		}
		room2 := mkRoom("doomed2")
		del := do("DELETE", s2+"rooms/"+room2, map[string]any{"new_room_user_id": mod.UserID, "message": "Room closed: policy 4.2"}, 200)
		st := do("GET", s2+"rooms/delete_status/"+del.Body["delete_id"].(string), nil, 200)
		sr := st.Body["shutdown_room"].(map[string]any)
		newRoom2, _ := sr["new_room_id"].(string)
		if st.Body["status"] != "complete" || !strings.HasPrefix(newRoom2, "!") || newRoom2 == newRoom || len(sr["kicked_users"].([]any)) != 2 {
			t.Fatalf("v2 delete status: %s", st.Raw)
		}
		checkNewRoom(newRoom2, "Content Violation Notification", "Room closed: policy 4.2")
		if r := mustOK(t, "resolve", resolve("#doomed2:localhost")); r.Body["room_id"] != newRoom2 {
			t.Fatalf("alias 2 resolves to %s, want %s", r.Body["room_id"], newRoom2)
		}

		// Audited: the purge names the new room; the room server recorded the
		// moves with the admin as requester.
		rows := auditRows(t, srv)
		if dt := details(t, findAudit(t, rows, auditapi.ActionRoomPurge, target(room))); dt["new_room_id"] != newRoom {
			t.Fatalf("purge entry: %v", dt)
		}
		findAudit(t, rows, auditapi.ActionRoomCreate, target(newRoom))
		for _, u := range []string{alice.UserID, bob.UserID} {
			j := findAudit(t, rows, auditapi.ActionJoin, func(r *storage.AuditRow) bool { return r.Target == u && r.RoomID == newRoom })
			if j.ActorUser != u || details(t, j)["requested_by"] != admin.UserID {
				t.Fatalf("join entry for %s: %+v", u, j)
			}
			findAudit(t, rows, auditapi.ActionInvite, func(r *storage.AuditRow) bool {
				return r.Target == u && r.RoomID == newRoom && r.ActorUser == mod.UserID
			})
		}
	})
}

// storedTimeline reads the IDs of a room's timeline (non-state) events
// straight from the store, in stream order.
func storedTimeline(t *testing.T, db *storage.DB, room string) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT event_id FROM events WHERE room_id = $1 AND state_key IS NULL ORDER BY stream_pos`, room)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}
