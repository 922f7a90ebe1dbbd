package test

import (
	"strconv"
	"testing"

	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestAdminEventReports: the reports users file are readable and deletable
// through Synapse's Event Reports admin API, in its shapes (synapse-admin's
// Reports page): list with total/next_token, filters, one report with its
// event_json, delete (audited).
func TestAdminEventReports(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		s1 := srv.URL + "/_synapse/admin/v1/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, aliceReg)
		bob := sessionClient(t, srv.URL, Register(t, srv.URL, "bob", "bob-pw", false))
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Ops"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		var events []string
		for _, text := range []string{"spam one", "spam two", "spam three"} {
			sent, err := alice.SendText(ctx, room.RoomID, text)
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, string(sent.EventID))
			mustOK(t, "report", raw(t, "POST", srv.URL+"/_matrix/client/v3/rooms/"+string(room.RoomID)+"/report/"+string(sent.EventID), bob.AccessToken, map[string]any{"reason": "spam " + text, "score": -100}))
		}

		list := mustOK(t, "list", raw(t, "GET", s1+"event_reports?limit=2", admin.AccessToken, nil))
		reps, _ := list.Body["event_reports"].([]any)
		if list.Body["total"] != float64(3) || len(reps) != 2 || list.Body["next_token"] != float64(2) {
			t.Fatalf("first page: %s", list.Raw)
		}
		first := reps[0].(map[string]any)
		if first["event_id"] != events[2] || first["user_id"] != string(bob.UserID) || first["sender"] != aliceReg.UserID ||
			first["room_id"] != string(room.RoomID) || first["name"] != "Ops" || first["score"] != float64(-100) || first["received_ts"] == nil {
			t.Fatalf("newest report: %v", first)
		}
		last := mustOK(t, "page 2", raw(t, "GET", s1+"event_reports?from=2&limit=2", admin.AccessToken, nil))
		if r, _ := last.Body["event_reports"].([]any); len(r) != 1 || last.Body["next_token"] != nil {
			t.Fatalf("last page: %s", last.Raw)
		}
		fwd := mustOK(t, "forward", raw(t, "GET", s1+"event_reports?dir=f&user_id="+string(bob.UserID), admin.AccessToken, nil))
		if r, _ := fwd.Body["event_reports"].([]any); len(r) != 3 || r[0].(map[string]any)["event_id"] != events[0] {
			t.Fatalf("forward by reporter: %s", fwd.Raw)
		}
		none := mustOK(t, "by alice", raw(t, "GET", s1+"event_reports?user_id="+aliceReg.UserID, admin.AccessToken, nil))
		if none.Body["total"] != float64(0) {
			t.Fatalf("reports by alice: %s", none.Raw)
		}

		id := first["id"].(float64)
		one := mustOK(t, "one", raw(t, "GET", s1+"event_reports/"+ftoa(id), admin.AccessToken, nil))
		ej, _ := one.Body["event_json"].(map[string]any)
		if ej == nil || ej["type"] != "m.room.message" || ej["content"].(map[string]any)["body"] != "spam three" {
			t.Fatalf("report with event_json: %s", one.Raw)
		}
		raw(t, "GET", s1+"event_reports/"+ftoa(id), alice.AccessToken, nil).wantErr(t, "non-admin", 403, "M_FORBIDDEN")
		mustOK(t, "delete", raw(t, "DELETE", s1+"event_reports/"+ftoa(id), admin.AccessToken, nil))
		raw(t, "GET", s1+"event_reports/"+ftoa(id), admin.AccessToken, nil).wantErr(t, "deleted report", 404, "M_NOT_FOUND")
		raw(t, "GET", s1+"event_reports/nope", admin.AccessToken, nil).wantErr(t, "bad id", 400, "M_INVALID_PARAM")
		if after := mustOK(t, "list", raw(t, "GET", s1+"event_reports", admin.AccessToken, nil)); after.Body["total"] != float64(2) {
			t.Fatalf("after delete: %s", after.Raw)
		}
		findAudit(t, auditRows(t, srv), "admin.report_delete", nil)
	})
}

func ftoa(f float64) string { return strconv.FormatInt(int64(f), 10) }

// TestAdminUserExtras: the rest of the user pages synapse-admin shows, in
// Synapse's shapes: v3 user, pushers, the user's media (list, delete) and
// username availability.
func TestAdminUserExtras(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		ctx := ctxT(t)
		s1 := srv.URL + "/_synapse/admin/v1/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		aliceReg := Register(t, srv.URL, "alice", "alice-pw", false)
		alice := sessionClient(t, srv.URL, aliceReg)

		if u := mustOK(t, "v3 user", raw(t, "GET", srv.URL+"/_synapse/admin/v3/users/"+aliceReg.UserID, admin.AccessToken, nil)); u.Body["name"] != aliceReg.UserID {
			t.Fatalf("v3 user: %s", u.Raw)
		}
		mustOK(t, "pusher", raw(t, "POST", srv.URL+"/_matrix/client/v3/pushers/set", alice.AccessToken, map[string]any{
			"kind": "http", "app_id": "org.example.app", "pushkey": "key1", "app_display_name": "App", "device_display_name": "Phone",
			"lang": "en", "data": map[string]any{"url": "https://push.example/_matrix/push/v1/notify"}}))
		ps := mustOK(t, "pushers", raw(t, "GET", s1+"users/"+aliceReg.UserID+"/pushers", admin.AccessToken, nil))
		if list, _ := ps.Body["pushers"].([]any); ps.Body["total"] != float64(1) || len(list) != 1 || list[0].(map[string]any)["pushkey"] != "key1" {
			t.Fatalf("pushers: %s", ps.Raw)
		}

		var ids []string
		for i := 0; i < 3; i++ {
			up, err := alice.UploadBytes(ctx, []byte("file "+strconv.Itoa(i)), "text/plain")
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, up.ContentURI.FileID)
		}
		page := mustOK(t, "media", raw(t, "GET", s1+"users/"+aliceReg.UserID+"/media?limit=2", admin.AccessToken, nil))
		if m, _ := page.Body["media"].([]any); page.Body["total"] != float64(3) || len(m) != 2 || page.Body["next_token"] != float64(2) || m[0].(map[string]any)["media_length"] == nil {
			t.Fatalf("media page: %s", page.Raw)
		}
		del := mustOK(t, "delete media", raw(t, "DELETE", s1+"users/"+aliceReg.UserID+"/media", admin.AccessToken, nil))
		if del.Body["total"] != float64(3) {
			t.Fatalf("deleted: %s", del.Raw)
		}
		if r := raw(t, "GET", srv.URL+"/_matrix/client/v1/media/download/localhost/"+ids[0], alice.AccessToken, nil); r.Status != 404 {
			t.Fatalf("deleted media still served: %d", r.Status)
		}
		if after := mustOK(t, "media", raw(t, "GET", s1+"users/"+aliceReg.UserID+"/media", admin.AccessToken, nil)); after.Body["total"] != float64(0) {
			t.Fatalf("media after delete: %s", after.Raw)
		}

		if r := mustOK(t, "free name", raw(t, "GET", s1+"username_available?username=nobody", admin.AccessToken, nil)); r.Body["available"] != true {
			t.Fatalf("free name: %s", r.Raw)
		}
		raw(t, "GET", s1+"username_available?username=alice", admin.AccessToken, nil).wantErr(t, "taken name", 400, "M_USER_IN_USE")
		raw(t, "GET", s1+"username_available?username=Not%20Valid!", admin.AccessToken, nil).wantErr(t, "invalid name", 400, "M_INVALID_USERNAME")
		raw(t, "GET", s1+"username_available?username=x", alice.AccessToken, nil).wantErr(t, "non-admin", 403, "M_FORBIDDEN")
	})
}
