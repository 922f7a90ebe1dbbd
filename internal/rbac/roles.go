package rbac

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"enclave/internal/perm"
)

// Built-in role names.
const (
	RoleAdmin    = "admin"
	RoleAuditor  = "auditor"
	RoleOperator = "operator"
	RoleUser     = "user"
	RoleGuest    = "guest"
)

var userPerms = []perm.Permission{perm.CreateRoom, perm.CreatePublicRoom, perm.InviteRemoteUsers, perm.JoinRemoteRooms, perm.Federate, perm.UploadMedia}

// builtin are the default role definitions. admin and auditor are fixed;
// config may redefine the others.
func builtin() map[string][]perm.Permission {
	return map[string][]perm.Permission{
		RoleAdmin:    append(append([]perm.Permission{}, userPerms...), perm.UseAdminAPI, perm.ManageUsers, perm.ManageRooms, perm.ManageRoles, perm.LiftLegalHold, perm.LoginAsUser, perm.ManageAppServices),
		RoleAuditor:  {perm.ReadAudit, perm.ExportAudit},
		RoleOperator: append(append([]perm.Permission{}, userPerms...), perm.UseAdminAPI, perm.ManageRooms, perm.ManageAppServices),
		RoleUser:     append([]perm.Permission{}, userPerms...),
		RoleGuest:    {},
	}
}

// Roles is a set of role definitions.
type Roles map[string]map[perm.Permission]bool

// ParseRoles builds the role definitions: the built-in roles, then custom
// ones from config, each "name=perm perm ...".
func ParseRoles(custom []string) (Roles, error) {
	defs := builtin()
	for _, spec := range custom {
		name, list, ok := strings.Cut(spec, "=")
		name = strings.TrimSpace(name)
		if !ok || !validRoleName(name) {
			return nil, fmt.Errorf("rbac.roles: %q: want name=permission permission ... (name of a-z, 0-9, _, - and .)", spec)
		}
		if name == RoleAdmin || name == RoleAuditor {
			return nil, fmt.Errorf("rbac.roles: the %s role is fixed and cannot be redefined", name)
		}
		perms := []perm.Permission{}
		for _, f := range strings.Fields(strings.ReplaceAll(list, ",", " ")) {
			p := perm.Permission(f)
			if !slices.Contains(perm.All, p) {
				return nil, fmt.Errorf("rbac.roles: %s: unknown permission %q", name, f)
			}
			perms = append(perms, p)
		}
		defs[name] = perms
	}
	out := Roles{}
	for name, perms := range defs {
		set := map[perm.Permission]bool{}
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
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
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
func (r Roles) Permissions(role string) []perm.Permission {
	var out []perm.Permission
	for p := range r[role] {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
