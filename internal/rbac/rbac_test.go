package rbac

import (
	"slices"
	"strings"
	"testing"

	"enclave/internal/perm"
)

func TestParseRoles(t *testing.T) {
	defs, err := ParseRoles([]string{"moderator=create_room manage_rooms", "user=create_room,upload_media"})
	if err != nil {
		t.Fatal(err)
	}
	if got := defs.Permissions("moderator"); !slices.Equal(got, []perm.Permission{perm.CreateRoom, perm.ManageRooms}) {
		t.Fatalf("moderator: %v", got)
	}
	if got := defs.Permissions("user"); !slices.Equal(got, []perm.Permission{perm.CreateRoom, perm.UploadMedia}) {
		t.Fatalf("redefined user: %v", got)
	}
	// Separation of duties in the fixed roles.
	if defs[RoleAdmin][perm.ReadAudit] || defs[RoleAdmin][perm.ExportAudit] {
		t.Fatal("admin can read the audit trail")
	}
	if len(defs[RoleAuditor]) != 2 || !defs[RoleAuditor][perm.ReadAudit] || !defs[RoleAuditor][perm.ExportAudit] {
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
