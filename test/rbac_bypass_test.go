package test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"enclave/config"
	"enclave/storage"
)

// TestRBACBypasses replays the red team's RBAC bypasses (issue 11 §3): a
// role with no permission created a room by upgrading one, and a role
// without create_public_room published a room in the directory and
// created public rooms with preset public_chat. Each is refused now,
// naming the missing permission, and leaves nothing behind.
func TestRBACBypasses(t *testing.T) {
	roles := []string{
		"nothing=",
		"private_only=create_room invite_remote_users join_remote_rooms federate upload_media",
	}
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{Configure: func(c *config.Config) { c.RBAC.Roles = roles }})
		admin := Register(t, srv.URL, "boss", "boss-pw", true)
		setRoles := func(r RegisterResult, roles ...string) {
			t.Helper()
			resp := setRolesApproved(t, srv.URL, admin.AccessToken, r.UserID, roles...)
			if resp.Status != 200 {
				t.Fatalf("set roles %v: %d %s", roles, resp.Status, resp.Raw)
			}
		}
		refused := func(what string, resp rawResp, permission string) {
			t.Helper()
			msg, _ := resp.Body["error"].(string)
			if resp.Status != http.StatusForbidden || resp.errcode() != "M_FORBIDDEN" || !strings.Contains(msg, permission) {
				t.Errorf("%s: want 403 M_FORBIDDEN naming %s, got %d %s", what, permission, resp.Status, resp.Raw)
			}
		}
		createRoom := func(u RegisterResult, body map[string]any) rawResp {
			return raw(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", u.AccessToken, body)
		}
		roomID := func(resp rawResp) string {
			t.Helper()
			id, _ := resp.Body["room_id"].(string)
			if resp.Status != 200 || id == "" {
				t.Fatalf("createRoom: %d %s", resp.Status, resp.Raw)
			}
			return id
		}
		joinedRooms := func(u RegisterResult) int {
			t.Helper()
			resp := raw(t, "GET", srv.URL+"/_matrix/client/v3/joined_rooms", u.AccessToken, nil)
			rooms, _ := resp.Body["joined_rooms"].([]any)
			return len(rooms)
		}
		publicRooms := func() int {
			t.Helper()
			resp := raw(t, "GET", srv.URL+"/_matrix/client/v3/publicRooms", "", nil)
			chunk, _ := resp.Body["chunk"].([]any)
			return len(chunk)
		}

		// 1. A role with no permissions upgrades its room into a new one.
		mallory := Register(t, srv.URL, "mallory", "mallory-pw", false)
		room := roomID(createRoom(mallory, map[string]any{}))
		setRoles(mallory, "nothing")
		refused("createRoom with no permission", createRoom(mallory, map[string]any{}), "create_room")
		refused("upgrade with no permission", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+room+"/upgrade", mallory.AccessToken,
			map[string]any{"new_version": "11"}), "create_room")
		if n := joinedRooms(mallory); n != 1 {
			t.Errorf("mallory is in %d rooms after the refused upgrade, want 1", n)
		}

		// 2. A role without create_public_room publishes or creates public
		// rooms.
		trudy := Register(t, srv.URL, "trudy", "trudy-pw", false)
		setRoles(trudy, "private_only")
		own := roomID(createRoom(trudy, map[string]any{"preset": "private_chat"}))
		refused("publish in the directory", raw(t, "PUT", srv.URL+"/_matrix/client/v3/directory/list/room/"+own, trudy.AccessToken,
			map[string]any{"visibility": "public"}), "create_public_room")
		if resp := raw(t, "PUT", srv.URL+"/_matrix/client/v3/directory/list/room/"+own, trudy.AccessToken,
			map[string]any{"visibility": "private"}); resp.Status != 200 {
			t.Errorf("unpublishing: %d %s", resp.Status, resp.Raw)
		}
		refused("createRoom preset public_chat", createRoom(trudy, map[string]any{"preset": "public_chat"}), "create_public_room")
		refused("createRoom visibility public", createRoom(trudy, map[string]any{"visibility": "public"}), "create_public_room")
		refused("createRoom with a public join rule in initial_state", createRoom(trudy, map[string]any{"initial_state": []any{
			map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "public"}}}}), "create_public_room")
		refused("making a room public by its join rule", raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+own+"/state/m.room.join_rules", trudy.AccessToken,
			map[string]any{"join_rule": "public"}), "create_public_room")
		refused("making a room public by its join rule (empty key in the path)", raw(t, "PUT", srv.URL+"/_matrix/client/r0/rooms/"+own+"/state/m.room.join_rules/", trudy.AccessToken,
			map[string]any{"join_rule": "public"}), "create_public_room")
		if resp := raw(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+own+"/state/m.room.join_rules", trudy.AccessToken,
			map[string]any{"join_rule": "knock"}); resp.Status != 200 {
			t.Errorf("a non-public join rule: %d %s", resp.Status, resp.Raw)
		}
		if n := publicRooms(); n != 0 {
			t.Errorf("%d rooms in the public directory, want 0", n)
		}
		if n := joinedRooms(trudy); n != 1 {
			t.Errorf("trudy is in %d rooms, want 1", n)
		}

		// An upgrade makes a room like the old one: a public room's
		// upgrade needs create_public_room too.
		alice := Register(t, srv.URL, "alice", "alice-pw", false)
		pub := roomID(createRoom(alice, map[string]any{"visibility": "public"}))
		setRoles(alice, "private_only")
		refused("upgrading a public room", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+pub+"/upgrade", alice.AccessToken,
			map[string]any{"new_version": "11"}), "create_public_room")
		// Holders of the permissions are not affected.
		setRoles(alice, "user")
		if resp := raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+pub+"/upgrade", alice.AccessToken, map[string]any{"new_version": "11"}); resp.Status != 200 {
			t.Errorf("upgrade by a user: %d %s", resp.Status, resp.Raw)
		}
		if resp := createRoom(alice, map[string]any{"preset": "public_chat"}); resp.Status != 200 {
			t.Errorf("public_chat by a user: %d %s", resp.Status, resp.Raw)
		}
	})
}

// TestRemoteProfileNeedsFederate: looking up another server's user makes
// this server federate, so it needs an access token and the federate
// permission, although local profile lookups need neither. (The rule
// existed before the route table but was never run: the route takes no
// token, so the authorizer never saw it.)
func TestRemoteProfileNeedsFederate(t *testing.T) {
	srv := Start(t, storage.SQLite, Options{Configure: func(c *config.Config) {
		c.RBAC.Roles = []string{"local_only=create_room create_public_room upload_media"}
	}})
	admin := Register(t, srv.URL, "boss", "boss-pw", true)
	eve := Register(t, srv.URL, "eve", "eve-pw", false)
	if resp := raw(t, "PUT", srv.URL+"/_enclave/admin/v1/users/"+eve.UserID+"/roles", admin.AccessToken, map[string]any{"roles": []string{"local_only"}}); resp.Status != 200 {
		t.Fatalf("set roles: %d %s", resp.Status, resp.Raw)
	}
	remote := srv.URL + "/_matrix/client/v3/profile/" + url.PathEscape("@someone:remote.example")
	resp := raw(t, "GET", remote, eve.AccessToken, nil)
	if msg, _ := resp.Body["error"].(string); resp.Status != http.StatusForbidden || resp.errcode() != "M_FORBIDDEN" || !strings.Contains(msg, "federate") {
		t.Errorf("remote profile without federate: want 403 naming federate, got %d %s", resp.Status, resp.Raw)
	}
	raw(t, "GET", remote+"/displayname", "", nil).wantErr(t, "remote profile without a token", http.StatusForbidden, "M_FORBIDDEN")
	// A holder of federate gets past the check (federation is off here,
	// so the user is not found); local lookups stay open.
	raw(t, "GET", remote, admin.AccessToken, nil).wantErr(t, "remote profile with federate", http.StatusNotFound, "M_NOT_FOUND")
	for _, token := range []string{"", eve.AccessToken} {
		if resp := raw(t, "GET", srv.URL+"/_matrix/client/v3/profile/"+url.PathEscape(admin.UserID), token, nil); resp.Status != 200 {
			t.Errorf("local profile (token %t): %d %s", token != "", resp.Status, resp.Raw)
		}
	}
}
