// Package rbac is Enclave's role-based access control: server roles, the
// permissions they grant, which permission each client-API and admin
// endpoint needs, and the authorizer that checks every authenticated
// request against them.
//
// Separation of duties is built into the fixed roles: admin administers
// but cannot read the audit trail; auditor reads and exports it but holds
// no other permission. Nobody can edit or delete audit entries: no
// permission exists for it because no endpoint does it.
package rbac

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Permission is one capability a role can grant.
type Permission string

// The permissions.
const (
	CreateRoom        Permission = "create_room"
	CreatePublicRoom  Permission = "create_public_room"
	InviteRemoteUsers Permission = "invite_remote_users"
	JoinRemoteRooms   Permission = "join_remote_rooms"
	Federate          Permission = "federate"
	UploadMedia       Permission = "upload_media"
	UseAdminAPI       Permission = "use_admin_api"
	ManageUsers       Permission = "manage_users"
	ManageRooms       Permission = "manage_rooms"
	ReadAudit         Permission = "read_audit"
	ExportAudit       Permission = "export_audit"
	ManageRoles       Permission = "manage_roles"
)

// AllPermissions lists every permission.
var AllPermissions = []Permission{CreateRoom, CreatePublicRoom, InviteRemoteUsers, JoinRemoteRooms, Federate, UploadMedia,
	UseAdminAPI, ManageUsers, ManageRooms, ReadAudit, ExportAudit, ManageRoles}

// Built-in role names.
const (
	RoleAdmin    = "admin"
	RoleAuditor  = "auditor"
	RoleOperator = "operator"
	RoleUser     = "user"
	RoleGuest    = "guest"
)

var userPerms = []Permission{CreateRoom, CreatePublicRoom, InviteRemoteUsers, JoinRemoteRooms, Federate, UploadMedia}

// builtin are the default role definitions. admin and auditor are fixed;
// config may redefine the others.
func builtin() map[string][]Permission {
	return map[string][]Permission{
		RoleAdmin:    append(append([]Permission{}, userPerms...), UseAdminAPI, ManageUsers, ManageRooms, ManageRoles),
		RoleAuditor:  {ReadAudit, ExportAudit},
		RoleOperator: append(append([]Permission{}, userPerms...), UseAdminAPI, ManageRooms),
		RoleUser:     append([]Permission{}, userPerms...),
		RoleGuest:    {},
	}
}

// Roles is a set of role definitions.
type Roles map[string]map[Permission]bool

// ParseRoles builds the role definitions: the built-in roles, then custom
// ones from config, each "name=perm perm ...".
func ParseRoles(custom []string) (Roles, error) {
	defs := builtin()
	for _, spec := range custom {
		name, list, ok := strings.Cut(spec, "=")
		name = strings.TrimSpace(name)
		if !ok || !validRoleName(name) {
			return nil, fmt.Errorf("rbac.roles: %q: want name=permission permission ... (name of a-z, 0-9, _ and -)", spec)
		}
		if name == RoleAdmin || name == RoleAuditor {
			return nil, fmt.Errorf("rbac.roles: the %s role is fixed and cannot be redefined", name)
		}
		perms := []Permission{}
		for _, f := range strings.Fields(strings.ReplaceAll(list, ",", " ")) {
			p := Permission(f)
			if !slices.Contains(AllPermissions, p) {
				return nil, fmt.Errorf("rbac.roles: %s: unknown permission %q", name, f)
			}
			perms = append(perms, p)
		}
		defs[name] = perms
	}
	out := Roles{}
	for name, perms := range defs {
		set := map[Permission]bool{}
		for _, p := range perms {
			set[p] = true
		}
		out[name] = set
	}
	return out, nil
}

func validRoleName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Names lists the defined roles, sorted.
func (r Roles) Names() []string {
	out := make([]string, 0, len(r))
	for n := range r {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Permissions lists a role's permissions, sorted.
func (r Roles) Permissions(role string) []Permission {
	var out []Permission
	for p := range r[role] {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
