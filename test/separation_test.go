package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"enclave/storage"
)

// TestWatchfulRoleGrantNeedsSecondAdmin: an admin cannot make itself (or
// anyone) an auditor alone. Through the admin API the grant waits (202)
// until an admin who neither asked nor receives it approves; until then
// nothing changes, and every step is audited.
func TestWatchfulRoleGrantNeedsSecondAdmin(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		e1 := srv.URL + "/_enclave/admin/v1/"
		ann := Register(t, srv.URL, "ann", "ann-pw", true)
		ben := Register(t, srv.URL, "ben", "ben-pw", true)
		cat := Register(t, srv.URL, "cat", "cat-pw", true)
		rolesOf := func(u RegisterResult) string {
			r := mustOK(t, "roles", raw(t, "GET", e1+"users/"+u.UserID+"/roles", ann.AccessToken, nil))
			b, err := json.Marshal(r.Body["roles"])
			if err != nil {
				t.Fatal(err)
			}
			return strings.Trim(string(b), "[]")
		}

		// ann asks for auditor for herself: pending, nothing changes.
		req := raw(t, "PUT", e1+"users/"+ann.UserID+"/roles", ann.AccessToken, map[string]any{"roles": []string{"admin", "auditor"}})
		if req.Status != http.StatusAccepted {
			t.Fatalf("self-grant of auditor: %d %s, want 202 pending", req.Status, req.Raw)
		}
		id, _ := req.Body["pending"].(map[string]any)["id"].(string)
		if got := rolesOf(ann); got != `"admin"` {
			t.Fatalf("roles before approval: %s", got)
		}
		raw(t, "GET", srv.URL+"/_enclave/audit/v1/entries", ann.AccessToken, nil).wantErr(t, "audit before approval", 403, "M_FORBIDDEN")
		// She cannot approve her own request.
		raw(t, "POST", e1+"role_grants/"+id+"/approve", ann.AccessToken, nil).wantErr(t, "self approval", 403, "M_FORBIDDEN")
		list := mustOK(t, "list", raw(t, "GET", e1+"role_grants", ben.AccessToken, nil))
		if grants, _ := list.Body["role_grants"].([]any); len(grants) != 1 {
			t.Fatalf("pending grants after a refused self-approval: %s", list.Raw)
		}
		// ben approves: ann is an auditor now.
		mustOK(t, "second admin approves", raw(t, "POST", e1+"role_grants/"+id+"/approve", ben.AccessToken, nil))
		if got := rolesOf(ann); got != `"admin","auditor"` {
			t.Fatalf("roles after approval: %s", got)
		}
		mustOK(t, "auditor reads", raw(t, "GET", srv.URL+"/_enclave/audit/v1/entries", ann.AccessToken, nil))
		raw(t, "POST", e1+"role_grants/"+id+"/approve", cat.AccessToken, nil).wantErr(t, "approved twice", 404, "M_NOT_FOUND")

		// ann asks for ben: ben (the receiver) cannot approve; a cancelled
		// request cannot be approved either.
		req = raw(t, "PUT", e1+"users/"+ben.UserID+"/roles", ann.AccessToken, map[string]any{"roles": []string{"admin", "auditor"}})
		id, _ = req.Body["pending"].(map[string]any)["id"].(string)
		raw(t, "POST", e1+"role_grants/"+id+"/approve", ben.AccessToken, nil).wantErr(t, "receiver approves", 403, "M_FORBIDDEN")
		mustOK(t, "cancel", raw(t, "DELETE", e1+"role_grants/"+id, cat.AccessToken, nil))
		raw(t, "POST", e1+"role_grants/"+id+"/approve", cat.AccessToken, nil).wantErr(t, "approve cancelled", 404, "M_NOT_FOUND")
		if got := rolesOf(ben); got != `"admin"` {
			t.Fatalf("ben's roles after a cancelled grant: %s", got)
		}
		// A role that watches nobody needs no second admin.
		mustOK(t, "operator grant", raw(t, "PUT", e1+"users/"+cat.UserID+"/roles", ann.AccessToken, map[string]any{"roles": []string{"admin", "operator"}}))

		ops := map[string]bool{}
		for _, r := range auditRows(t, srv) {
			if r.Action == "rbac.role_grant" {
				op, _ := details(t, r)["op"].(string)
				ops[op] = true
			}
		}
		if !ops["requested"] || !ops["approved"] || !ops["cancelled"] {
			t.Fatalf("audited grant steps %v, want requested, approved and cancelled", ops)
		}
	})
}

// TestOperatorCannotLiftLegalHold: operators place holds (manage_rooms)
// but lifting one needs lift_legal_hold, which only admin holds by default.
func TestOperatorCannotLiftLegalHold(t *testing.T) {
	EachStore(t, func(t *testing.T, d storage.Dialect) {
		srv := Start(t, d, Options{})
		e1 := srv.URL + "/_enclave/admin/v1/"
		admin := Register(t, srv.URL, "root", "root-pw", true)
		op := Register(t, srv.URL, "olga", "olga-pw", false)
		mustOK(t, "make operator", raw(t, "PUT", e1+"users/"+op.UserID+"/roles", admin.AccessToken, map[string]any{"roles": []string{"operator"}}))
		room := "!held:localhost"
		mustOK(t, "operator holds", raw(t, "PUT", e1+"legal_holds/room/"+room, op.AccessToken, map[string]any{"reason": "inquiry"}))
		resp := raw(t, "DELETE", e1+"legal_holds/room/"+room, op.AccessToken, nil)
		resp.wantErr(t, "operator lifts", 403, "M_FORBIDDEN")
		if msg, _ := resp.Body["error"].(string); !strings.Contains(msg, "lift_legal_hold") {
			t.Fatalf("refusal does not name lift_legal_hold: %s", resp.Raw)
		}
		if l := mustOK(t, "list", raw(t, "GET", e1+"legal_holds", op.AccessToken, nil)); !strings.Contains(string(l.Raw), room) {
			t.Fatalf("hold gone after a refused lift: %s", l.Raw)
		}
		mustOK(t, "admin lifts", raw(t, "DELETE", e1+"legal_holds/room/"+room, admin.AccessToken, nil))
	})
}
