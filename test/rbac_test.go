package test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"enclave/auditapi"
	"enclave/config"
	"enclave/internal/rbac"
	"enclave/storage"
)

// TestRBACEveryPermission walks every permission with an endpoint that
// needs it, for a role that has it and a role that lacks only it.
func TestRBACEveryPermission(t *testing.T) {
	type call struct {
		method, path string
		body         any
	}
	cases := map[rbac.Permission]call{
		rbac.CreateRoom:        {"POST", "/_matrix/client/v3/createRoom", map[string]any{}},
		rbac.CreatePublicRoom:  {"POST", "/_matrix/client/v3/createRoom", map[string]any{"visibility": "public"}},
		rbac.InviteRemoteUsers: {"POST", "/_matrix/client/v3/rooms/!nowhere:localhost/invite", map[string]any{"user_id": "@x:remote.example"}},
		rbac.JoinRemoteRooms:   {"POST", "/_matrix/client/v3/join/%23room:remote.example", map[string]any{}},
		rbac.Federate:          {"POST", "/_matrix/client/r0/join/%23room:remote.example", map[string]any{}},
		rbac.UploadMedia:       {"POST", "/_matrix/media/v3/upload", "some bytes"},
		rbac.UseAdminAPI:       {"GET", "/_synapse/admin/v1/server_version", nil},
		rbac.ManageUsers:       {"GET", "/_synapse/admin/v2/users", nil},
		rbac.ManageRooms:       {"GET", "/_synapse/admin/v1/rooms", nil},
		rbac.ReadAudit:         {"GET", "/_enclave/audit/v1/entries", nil},
		rbac.ExportAudit:       {"GET", "/_enclave/audit/v1/export", nil},
		rbac.ManageRoles:       {"GET", "/_enclave/admin/v1/roles", nil},
	}
	if len(cases) != len(rbac.AllPermissions) {
		t.Fatalf("%d cases for %d permissions", len(cases), len(rbac.AllPermissions))
	}
	var all []string
	for _, p := range rbac.AllPermissions {
		all = append(all, string(p))
	}
	roles := []string{"everything=" + strings.Join(all, " ")}
	for _, p := range rbac.AllPermissions {
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
			resp := raw(t, "PUT", srv.URL+"/_enclave/admin/v1/users/"+r.UserID+"/roles", admin.AccessToken, map[string]any{"roles": roles})
			if resp.Status != 200 {
				t.Fatalf("set roles %v: %d %s", roles, resp.Status, resp.Raw)
			}
		}
		allowed := Register(t, srv.URL, "everything", "pw-everything", false)
		setRoles(allowed, "everything")
		denied := map[rbac.Permission]RegisterResult{}
		for _, p := range rbac.AllPermissions {
			u := Register(t, srv.URL, "no_"+string(p), "pw-"+string(p), false)
			setRoles(u, "no_"+string(p))
			denied[p] = u
		}
		for _, p := range rbac.AllPermissions {
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
			perm rbac.Permission
		}{
			{admin, cases[rbac.ReadAudit], rbac.ReadAudit},
			{admin, cases[rbac.ExportAudit], rbac.ExportAudit},
			{aud, cases[rbac.UseAdminAPI], rbac.UseAdminAPI},
			{aud, cases[rbac.CreateRoom], rbac.CreateRoom},
			{op, cases[rbac.ManageUsers], rbac.ManageUsers},
			{op, cases[rbac.ReadAudit], rbac.ReadAudit},
			{plain, cases[rbac.UseAdminAPI], rbac.UseAdminAPI},
			{guest, cases[rbac.CreateRoom], rbac.CreateRoom},
			{guest, cases[rbac.UploadMedia], rbac.UploadMedia},
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
		}{{aud, cases[rbac.ReadAudit]}, {op, cases[rbac.ManageRooms]}, {plain, cases[rbac.CreateRoom]}, {admin, cases[rbac.ManageRoles]}} {
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
		if want := len(rbac.AllPermissions) + len(denyCases); len(rows) != want {
			t.Fatalf("%d denials recorded, want %d", len(rows), want)
		}
	})
}
