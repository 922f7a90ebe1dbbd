package test

import (
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"enclave/storage"
)

// TestStatusCodes checks the status codes and errcodes issue 13 lists
// ("Status codes and error codes"), each against the spec, on each store.
func TestStatusCodes(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		v3 := srv.URL + "/_matrix/client/v3"
		alice := registerClient(t, srv.URL, "alice", "alice-pass")
		bob := registerClient(t, srv.URL, "bob", "bob-pass")
		roomURL := func(room, rest string) string { return v3 + "/rooms/" + url.PathEscape(room) + rest }

		t.Run("media v1 without a token", func(t *testing.T) {
			for _, p := range []string{"/download/localhost/abc", "/download/localhost/abc/name.png", "/thumbnail/localhost/abc?width=32&height=32",
				"/download/localhost/" + url.PathEscape("mxc://localhost/abc"), "/config", "/nothing/here"} {
				raw(t, "GET", srv.URL+"/_matrix/client/v1/media"+p, "", nil).wantErr(t, p, 401, "M_MISSING_TOKEN")
			}
		})

		t.Run("not UTF-8 JSON", func(t *testing.T) {
			bad := "{ \"test\":\"a\x81\" }"
			raw(t, "POST", v3+"/register", "", bad).wantErr(t, "register", 400, "M_NOT_JSON")
			raw(t, "DELETE", v3+"/devices/"+string(alice.DeviceID), alice.AccessToken, bad).wantErr(t, "delete device", 400, "M_NOT_JSON")
		})

		t.Run("device delete with another user's auth", func(t *testing.T) {
			other := loginClient(t, srv.URL, "alice", "alice-pass")
			r := raw(t, "DELETE", v3+"/devices/"+string(other.DeviceID), alice.AccessToken, map[string]any{})
			if r.Status != 401 {
				t.Fatalf("challenge: %d %s", r.Status, r.Raw)
			}
			sess := r.Body["session"]
			raw(t, "DELETE", v3+"/devices/"+string(other.DeviceID), alice.AccessToken, map[string]any{"auth": map[string]any{
				"type": "m.login.password", "session": sess, "password": "bob-pass",
				"identifier": map[string]any{"type": "m.id.user", "user": bob.UserID.String()}}}).wantErr(t, "bob's password", 403, "M_FORBIDDEN")
			// Bob's session cannot authorise alice's request either.
			rb := raw(t, "DELETE", v3+"/devices/"+string(bob.DeviceID), bob.AccessToken, map[string]any{})
			raw(t, "DELETE", v3+"/devices/"+string(other.DeviceID), alice.AccessToken, map[string]any{"auth": map[string]any{
				"type": "m.login.password", "session": rb.Body["session"], "password": "alice-pass",
				"identifier": map[string]any{"type": "m.id.user", "user": alice.UserID.String()}}}).wantErr(t, "bob's session", 403, "M_FORBIDDEN")
			if _, err := storage.GetDevice(ctx, srv.DB, alice.UserID.String(), string(other.DeviceID)); err != nil {
				t.Fatalf("device must still exist: %v", err)
			}
		})

		t.Run("canonical alias", func(t *testing.T) {
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
			if err != nil {
				t.Fatal(err)
			}
			other, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
			rid := room.RoomID.String()
			raw(t, "PUT", v3+"/directory/room/"+url.PathEscape("#here:localhost"), alice.AccessToken, map[string]any{"room_id": rid})
			raw(t, "PUT", v3+"/directory/room/"+url.PathEscape("#there:localhost"), alice.AccessToken, map[string]any{"room_id": other.RoomID.String()})
			put := func(c map[string]any) rawResp {
				return raw(t, "PUT", roomURL(rid, "/state/m.room.canonical_alias"), alice.AccessToken, c)
			}
			put(map[string]any{"alias": "#missing:localhost"}).wantErr(t, "missing", 400, "M_BAD_ALIAS")
			put(map[string]any{"alias": "%invalid:localhost"}).wantErr(t, "invalid", 400, "M_INVALID_PARAM")
			put(map[string]any{"alias": "#there:localhost"}).wantErr(t, "other room", 400, "M_BAD_ALIAS")
			put(map[string]any{"alias": "#here:localhost", "alt_aliases": []string{"#nowhere:localhost"}}).wantErr(t, "alt missing", 400, "M_BAD_ALIAS")
			put(map[string]any{"alias": "#here:localhost", "alt_aliases": []string{"%bad:localhost"}}).wantErr(t, "alt invalid", 400, "M_INVALID_PARAM")
			put(map[string]any{"alias": "#here:localhost", "alt_aliases": []string{"#there:localhost"}}).wantErr(t, "alt other room", 400, "M_BAD_ALIAS")
			put(map[string]any{"alias": 5}).wantErr(t, "not a string", 400, "M_INVALID_PARAM")
			if r := put(map[string]any{"alias": "#here:localhost", "alt_aliases": []string{"#here:localhost"}}); r.Status != 200 {
				t.Fatalf("valid: %d %s", r.Status, r.Raw)
			}
		})

		t.Run("joined_members after leaving", func(t *testing.T) {
			room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			if r := raw(t, "GET", roomURL(room.RoomID.String(), "/joined_members"), bob.AccessToken, nil); r.Status != 200 {
				t.Fatalf("joined: %d %s", r.Status, r.Raw)
			}
			if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			raw(t, "GET", roomURL(room.RoomID.String(), "/joined_members"), bob.AccessToken, nil).wantErr(t, "left", 403, "M_FORBIDDEN")
		})

		t.Run("invalid device_keys", func(t *testing.T) {
			raw(t, "POST", v3+"/keys/upload", bob.AccessToken, map[string]any{"device_keys": map[string]any{
				"user_id": bob.UserID, "device_id": bob.DeviceID}}).wantErr(t, "no keys", 400, "M_BAD_JSON")
			if _, err := storage.GetDeviceKeys(ctx, srv.DB, bob.UserID.String(), string(bob.DeviceID)); err == nil {
				t.Fatal("invalid keys were stored")
			}
		})

		t.Run("filters with invalid IDs", func(t *testing.T) {
			fu := v3 + "/user/" + url.PathEscape(alice.UserID.String()) + "/filter"
			for name, f := range map[string]map[string]any{
				"rooms":            {"room": map[string]any{"rooms": []string{"not_a_room"}}},
				"not_rooms":        {"room": map[string]any{"not_rooms": []string{"#alias:localhost"}}},
				"timeline rooms":   {"room": map[string]any{"timeline": map[string]any{"rooms": []string{"x"}}}},
				"senders":          {"room": map[string]any{"timeline": map[string]any{"senders": []string{"alice"}}}},
				"not_senders":      {"presence": map[string]any{"not_senders": []string{"@"}}},
				"state not_rooms":  {"room": map[string]any{"state": map[string]any{"not_rooms": []string{"!"}}}},
				"account_data snd": {"account_data": map[string]any{"senders": []string{"bob:localhost"}}},
			} {
				raw(t, "POST", fu, alice.AccessToken, f).wantErr(t, name, 400, "M_INVALID_PARAM")
			}
			if r := raw(t, "POST", fu, alice.AccessToken, map[string]any{"room": map[string]any{"rooms": []string{"!a:localhost"}, "timeline": map[string]any{"senders": []string{"@bob:localhost"}}}}); r.Status != 200 {
				t.Fatalf("valid filter: %d %s", r.Status, r.Raw)
			}
		})

		t.Run("avatar_url not mxc", func(t *testing.T) {
			room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
			if r := raw(t, "PUT", v3+"/profile/"+url.PathEscape(alice.UserID.String())+"/avatar_url", alice.AccessToken, map[string]any{"avatar_url": "LemurLover"}); r.Status != 200 {
				t.Fatalf("put: %d %s", r.Status, r.Raw)
			}
			if r := raw(t, "GET", v3+"/profile/"+url.PathEscape(alice.UserID.String())+"/avatar_url", "", nil); r.Body["avatar_url"] != "LemurLover" {
				t.Fatalf("get: %d %s", r.Status, r.Raw)
			}
			var m event.MemberEventContent
			if err := alice.StateEvent(ctx, room.RoomID, event.StateMember, alice.UserID.String(), &m); err != nil || m.AvatarURL != "LemurLover" {
				t.Fatalf("member event: %+v %v", m, err)
			}
		})

		t.Run("messages without dir", func(t *testing.T) {
			room, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			raw(t, "GET", roomURL(room.RoomID.String(), "/messages"), bob.AccessToken, nil).wantErr(t, "stranger", 403, "M_FORBIDDEN")
			if r := raw(t, "GET", roomURL(room.RoomID.String(), "/messages"), alice.AccessToken, nil); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Fatalf("member without dir: %d %s", r.Status, r.Raw)
			}
			// A room left and forgotten is no longer readable.
			pub, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			pr := pub.RoomID.String()
			if _, err := bob.JoinRoomByID(ctx, pub.RoomID); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.SendText(ctx, pub.RoomID, "Hello world!"); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.LeaveRoom(ctx, pub.RoomID); err != nil {
				t.Fatal(err)
			}
			if r := raw(t, "GET", roomURL(pr, "/messages?dir=b"), bob.AccessToken, nil); r.Status != 200 {
				t.Fatalf("left, not forgotten: %d %s", r.Status, r.Raw)
			}
			if r := raw(t, "POST", roomURL(pr, "/forget"), bob.AccessToken, map[string]any{}); r.Status != 200 {
				t.Fatalf("forget: %d %s", r.Status, r.Raw)
			}
			raw(t, "GET", roomURL(pr, "/messages"), bob.AccessToken, nil).wantErr(t, "forgotten, no dir", 403, "M_FORBIDDEN")
			raw(t, "GET", roomURL(pr, "/messages?dir=b"), bob.AccessToken, nil).wantErr(t, "forgotten", 403, "M_FORBIDDEN")
			// Joining again makes it readable again.
			if _, err := bob.JoinRoomByID(ctx, pub.RoomID); err != nil {
				t.Fatal(err)
			}
			if r := raw(t, "GET", roomURL(pr, "/messages?dir=b"), bob.AccessToken, nil); r.Status != 200 {
				t.Fatalf("rejoined: %d %s", r.Status, r.Raw)
			}
		})
	})
}
