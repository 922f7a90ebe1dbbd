package test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/perm"
	"enclave/storage"
)

// TestRBACEveryPermission walks every permission with an endpoint that
// needs it, for a role that has it and a role that lacks only it.
func TestRBACEveryPermission(t *testing.T) {
	type call struct {
		method, path string
		body         any
	}
	cases := map[perm.Permission]call{
		perm.CreateRoom:        {"POST", "/_matrix/client/v3/createRoom", map[string]any{}},
		perm.CreatePublicRoom:  {"POST", "/_matrix/client/v3/createRoom", map[string]any{"visibility": "public"}},
		perm.InviteRemoteUsers: {"POST", "/_matrix/client/v3/rooms/!nowhere:localhost/invite", map[string]any{"user_id": "@x:remote.example"}},
		perm.JoinRemoteRooms:   {"POST", "/_matrix/client/v3/join/%23room:remote.example", map[string]any{}},
		perm.Federate:          {"POST", "/_matrix/client/r0/join/%23room:remote.example", map[string]any{}},
		perm.UploadMedia:       {"POST", "/_matrix/media/v3/upload", "some bytes"},
		perm.UseAdminAPI:       {"GET", "/_synapse/admin/v1/server_version", nil},
		perm.ManageUsers:       {"GET", "/_synapse/admin/v2/users", nil},
		perm.ManageRooms:       {"GET", "/_synapse/admin/v1/rooms", nil},
		perm.ReadAudit:         {"GET", "/_enclave/audit/v1/entries", nil},
		perm.ExportAudit:       {"GET", "/_enclave/audit/v1/export", nil},
		perm.ManageRoles:       {"GET", "/_enclave/admin/v1/roles", nil},
		perm.LiftLegalHold:     {"DELETE", "/_enclave/admin/v1/legal_holds/room/!held:localhost", nil},
		perm.LoginAsUser:       {"POST", "/_synapse/admin/v1/users/@nobody:localhost/login", map[string]any{}},
		perm.ManageAppServices: {"GET", "/_enclave/admin/v1/appservices", nil},
	}
	if len(cases) != len(perm.All) {
		t.Fatalf("%d cases for %d permissions", len(cases), len(perm.All))
	}
	var all []string
	for _, p := range perm.All {
		all = append(all, string(p))
	}
	roles := []string{"everything=" + strings.Join(all, " ")}
	for _, p := range perm.All {
		var rest []string
		for _, q := range all {
			if q != string(p) {
				rest = append(rest, q)
			}
		}
		roles = append(roles, "no_"+string(p)+"="+strings.Join(rest, " "))
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
		allowed := Register(t, srv.URL, "everything", "pw-everything", false)
		setRoles(allowed, "everything")
		denied := map[perm.Permission]RegisterResult{}
		for _, p := range perm.All {
			u := Register(t, srv.URL, "no_"+string(p), "pw-"+string(p), false)
			setRoles(u, "no_"+string(p))
			denied[p] = u
		}
		for _, p := range perm.All {
			c := cases[p]
			t.Run(string(p), func(t *testing.T) {
				resp := raw(t, c.method, srv.URL+c.path, denied[p].AccessToken, c.body)
				resp.wantErr(t, "lacking "+string(p), http.StatusForbidden, "M_FORBIDDEN")
				if msg, _ := resp.Body["error"].(string); !strings.Contains(msg, string(p)) {
					t.Fatalf("denial does not name %s: %s", p, msg)
				}
				resp = raw(t, c.method, srv.URL+c.path, allowed.AccessToken, c.body)
				if msg, _ := resp.Body["error"].(string); resp.Status == http.StatusForbidden && strings.Contains(msg, "permission") {
					t.Fatalf("holder of every permission refused: %s", resp.Raw)
				}
			})
		}

		// Built-in roles and separation of duties.
		aud := Register(t, srv.URL, "aud", "aud-pw", false)
		setRoles(aud, "auditor")
		op := Register(t, srv.URL, "op", "op-pw", false)
		setRoles(op, "operator")
		plain := Register(t, srv.URL, "plain", "plain-pw", false)
		guest := Register(t, srv.URL, "guesty", "guest-pw", false)
		setRoles(guest, "guest")
		denyCases := []struct {
			who  RegisterResult
			c    call
			perm perm.Permission
		}{
			{admin, cases[perm.ReadAudit], perm.ReadAudit},
			{admin, cases[perm.ExportAudit], perm.ExportAudit},
			{aud, cases[perm.UseAdminAPI], perm.UseAdminAPI},
			{aud, cases[perm.CreateRoom], perm.CreateRoom},
			{op, cases[perm.ManageUsers], perm.ManageUsers},
			{op, cases[perm.ReadAudit], perm.ReadAudit},
			{plain, cases[perm.UseAdminAPI], perm.UseAdminAPI},
			{guest, cases[perm.CreateRoom], perm.CreateRoom},
			{guest, cases[perm.UploadMedia], perm.UploadMedia},
		}
		for _, dc := range denyCases {
			resp := raw(t, dc.c.method, srv.URL+dc.c.path, dc.who.AccessToken, dc.c.body)
			if msg, _ := resp.Body["error"].(string); resp.Status != 403 || !strings.Contains(msg, string(dc.perm)) {
				t.Errorf("%s on %s: want 403 naming %s, got %d %s", dc.who.UserID, dc.c.path, dc.perm, resp.Status, resp.Raw)
			}
		}
		for _, ok := range []struct {
			who RegisterResult
			c   call
		}{{aud, cases[perm.ReadAudit]}, {op, cases[perm.ManageRooms]}, {plain, cases[perm.CreateRoom]}, {admin, cases[perm.ManageRoles]}} {
			if resp := raw(t, ok.c.method, srv.URL+ok.c.path, ok.who.AccessToken, ok.c.body); resp.Status != 200 {
				t.Errorf("%s on %s: %d %s", ok.who.UserID, ok.c.path, resp.Status, resp.Raw)
			}
		}
		// Nobody, not even an admin holding every permission, can change
		// the audit trail through the API.
		setRoles(admin, "admin", "everything")
		for _, m := range []string{"DELETE", "PUT", "POST", "PATCH"} {
			resp := raw(t, m, srv.URL+"/_enclave/audit/v1/entries", admin.AccessToken, map[string]any{})
			if resp.Status != 405 && resp.Status != 404 {
				t.Errorf("%s on the audit entries: %d %s", m, resp.Status, resp.Raw)
			}
		}
		// Every denial was recorded.
		if err := srv.Audit.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		rows, err := storage.ListAuditRows(context.Background(), srv.DB, storage.AuditFilter{Action: auditapi.ActionAccessDenied})
		if err != nil {
			t.Fatal(err)
		}
		if want := len(perm.All) + len(denyCases); len(rows) != want {
			t.Fatalf("%d denials recorded, want %d", len(rows), want)
		}
	})
}
