package rbac

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRoles(t *testing.T) {
	defs, err := ParseRoles([]string{"moderator=create_room manage_rooms", "user=create_room,upload_media"})
	if err != nil {
		t.Fatal(err)
	}
	if got := defs.Permissions("moderator"); !slices.Equal(got, []Permission{CreateRoom, ManageRooms}) {
		t.Fatalf("moderator: %v", got)
	}
	if got := defs.Permissions("user"); !slices.Equal(got, []Permission{CreateRoom, UploadMedia}) {
		t.Fatalf("redefined user: %v", got)
	}
	// Separation of duties in the fixed roles.
	if defs[RoleAdmin][ReadAudit] || defs[RoleAdmin][ExportAudit] {
		t.Fatal("admin can read the audit trail")
	}
	if len(defs[RoleAuditor]) != 2 || !defs[RoleAuditor][ReadAudit] || !defs[RoleAuditor][ExportAudit] {
		t.Fatalf("auditor: %v", defs.Permissions(RoleAuditor))
	}
	for _, bad := range []string{"admin=read_audit", "auditor=use_admin_api", "x=fly", "noequals", "Bad Name=create_room"} {
		if _, err := ParseRoles([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEffectiveRoles(t *testing.T) {
	for _, c := range []struct {
		explicit     []string
		admin, guest bool
		want         string
	}{
		{nil, false, false, "user"},
		{nil, false, true, "guest"},
		{nil, true, false, "admin"},
		{[]string{"auditor"}, true, false, "admin,auditor"},
		{[]string{"operator"}, false, false, "operator"},
	} {
		if got := strings.Join(EffectiveRoles(c.explicit, c.admin, c.guest, "user"), ","); got != c.want {
			t.Errorf("%v admin=%v guest=%v: %s, want %s", c.explicit, c.admin, c.guest, got, c.want)
		}
	}
}

// Every permission guards at least one endpoint.
func TestEveryPermissionIsRequiredSomewhere(t *testing.T) {
	used := map[Permission]bool{}
	for _, r := range Rules {
		for _, p := range r.Perms {
			used[p] = true
		}
	}
	// Dynamic-only permissions.
	used[CreatePublicRoom], used[InviteRemoteUsers], used[JoinRemoteRooms], used[Federate] = true, true, true, true
	for _, p := range AllPermissions {
		if !used[p] {
			t.Errorf("no endpoint needs %s", p)
		}
	}
	for tmpl, want := range map[string]string{
		"/_matrix/client/v3/createRoom":            "POST /createRoom",
		"/_matrix/client/r0/rooms/{roomId}/invite": "POST /rooms/{roomId}/invite",
		"/_synapse/admin/v2/users/{userId}":        "* /_synapse/admin/v2/users*",
		"/_synapse/admin/v1/some_new_thing":        "* /_synapse/admin/*",
		"/_enclave/admin/v1/users/{userId}/roles":  "* /_enclave/admin/v1/users/*",
		"/_enclave/audit/v1/export":                "* /_enclave/audit/v1/export",
		"/_enclave/audit/v1/entries":               "* /_enclave/audit/v1/*",
	} {
		method := "GET"
		if strings.HasPrefix(want, "POST") {
			method = "POST"
		}
		rl := RuleFor(method, tmpl)
		if rl == nil || rl.Describe() != want {
			t.Errorf("%s %s: rule %v, want %s", method, tmpl, rl, want)
		}
	}
	if RuleFor("GET", "/_matrix/client/v3/sync") != nil {
		t.Error("sync needs a permission")
	}
}
