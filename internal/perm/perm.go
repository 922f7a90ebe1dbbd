package perm

import (
	"fmt"
	"net/http"
	"slices"
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
	// LiftLegalHold is apart from manage_rooms so that whoever purges
	// rooms (operators) cannot also lift the hold that protects them.
	LiftLegalHold Permission = "lift_legal_hold"
	// LoginAsUser lets an administrator obtain an access token for a user
	// (the admin login API): apart from manage_users because it lets its
	// holder act, and read, as someone else.
	LoginAsUser Permission = "login_as_user"
	// ManageAppServices is the operators' view of the bridges: their
	// namespaces, the rooms they see, their queues.
	ManageAppServices Permission = "appservice.manage"
)

// All lists every permission.
var All = []Permission{CreateRoom, CreatePublicRoom, InviteRemoteUsers, JoinRemoteRooms, Federate, UploadMedia,
	UseAdminAPI, ManageUsers, ManageRooms, ReadAudit, ExportAudit, ManageRoles, LiftLegalHold, LoginAsUser, ManageAppServices}

// Watchful are the permissions of the roles that oversee the others (the
// audit trail, legal holds): granting a role that holds one through the
// admin API needs a second admin's approval (see rbac.RBAC.WatchfulAdded).
var Watchful = []Permission{ReadAudit, ExportAudit, LiftLegalHold}

type kind uint8

const (
	invalid kind = iota
	public       // no access token
	anyUser      // a valid access token, no permission
	perms        // fixed permissions, maybe more depending on the request
)

// Requirement is what a route asks of its caller. Build one with Public,
// AnyUser, Needs or Dynamic; the zero value is no decision and is refused.
type Requirement struct {
	kind  kind
	fixed []Permission
	// Request-dependent part: name for docs and errors, the permissions
	// it can add, and the function that picks them for a request.
	name    string
	may     []Permission
	dynamic func(r *http.Request) ([]Permission, error)
}

// Public marks a route that needs no access token (login, discovery, the
// public room list): nobody is known, so no permission can be checked.
var Public = Requirement{kind: public}

// AnyUser marks a route that any holder of a valid access token may call:
// the decision that the route needs no permission.
var AnyUser = Requirement{kind: anyUser}

// Needs is a requirement of fixed permissions (at least one).
func Needs(p ...Permission) Requirement {
	if len(p) == 0 {
		return Requirement{}
	}
	return Requirement{kind: perms, fixed: slices.Clone(p)}
}

// Dynamic is a requirement that depends on the request (a public room, a
// remote user or room): fn returns the permissions this request needs on
// top of base, each one of may. An error from fn refuses the request.
func Dynamic(name string, may []Permission, fn func(r *http.Request) ([]Permission, error), base ...Permission) Requirement {
	if name == "" || len(may) == 0 || fn == nil {
		return Requirement{}
	}
	return Requirement{kind: perms, fixed: slices.Clone(base), name: name, may: slices.Clone(may), dynamic: fn}
}

// Valid reports whether a decision was made for the route.
func (q Requirement) Valid() bool { return q.kind != invalid }

// IsPublic reports whether the route needs no access token.
func (q Requirement) IsPublic() bool { return q.kind == public }

// Fixed lists the permissions needed by every request.
func (q Requirement) Fixed() []Permission { return slices.Clone(q.fixed) }

// Possible lists every permission a request can need: the fixed ones and
// those the dynamic part may add.
func (q Requirement) Possible() []Permission {
	out := slices.Clone(q.fixed)
	for _, p := range q.may {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// DynamicName names the request-dependent part ("" if none).
func (q Requirement) DynamicName() string { return q.name }

// For lists the permissions request r needs. It fails for an invalid
// requirement and when the dynamic part cannot decide, so that the caller
// refuses the request rather than letting it through.
func (q Requirement) For(r *http.Request) ([]Permission, error) {
	switch q.kind {
	case public, anyUser:
		return nil, nil
	case perms:
	default:
		return nil, fmt.Errorf("route has no permission requirement")
	}
	out := slices.Clone(q.fixed)
	if q.dynamic == nil {
		return out, nil
	}
	extra, err := q.dynamic(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q.name, err)
	}
	for _, p := range extra {
		if !slices.Contains(q.may, p) {
			return nil, fmt.Errorf("%s asked for %s, which it does not declare", q.name, p)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// String renders the requirement for docs and test failures.
func (q Requirement) String() string {
	switch q.kind {
	case public:
		return "public"
	case anyUser:
		return "any user"
	case perms:
		var b strings.Builder
		for i, p := range q.fixed {
			if i > 0 {
				b.WriteString(" + ")
			}
			b.WriteString(string(p))
		}
		if q.name != "" {
			if len(q.fixed) > 0 {
				b.WriteString(" + ")
			}
			fmt.Fprintf(&b, "%s(%v)", q.name, q.may)
		}
		return b.String()
	}
	return "NONE"
}
