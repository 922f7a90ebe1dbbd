package rbac

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// Rule says what an endpoint needs. Path is a route template with the
// client API's /_matrix/client/{v3,r0,v1} prefix removed, or a prefix
// ending in '*'. Perms are always needed; Dynamic adds permissions that
// depend on the request (a public room, a remote user or room).
type Rule struct {
	Method  string // "" matches every method
	Path    string
	Perms   []Permission
	Dynamic func(z *RBAC, r *http.Request, dev *httpapi.Device) []Permission
}

// Rules is the endpoint → permission table, most specific first. An
// endpoint that matches no rule needs no permission beyond a valid token.
var Rules = []Rule{
	// Rooms.
	{Method: "POST", Path: "/createRoom", Perms: []Permission{CreateRoom}, Dynamic: createRoomPerms},
	{Method: "POST", Path: "/join/{roomIdOrAlias}", Dynamic: joinPerms("roomIdOrAlias")},
	{Method: "POST", Path: "/knock/{roomIdOrAlias}", Dynamic: joinPerms("roomIdOrAlias")},
	{Method: "POST", Path: "/rooms/{roomId}/join", Dynamic: joinPerms("roomId")},
	{Method: "POST", Path: "/rooms/{roomId}/invite", Dynamic: invitePerms},
	{Method: "PUT", Path: "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", Dynamic: memberStatePerms},
	{Method: "GET", Path: "/publicRooms", Dynamic: serverParamPerms},
	{Method: "POST", Path: "/publicRooms", Dynamic: serverParamPerms},
	{Method: "GET", Path: "/profile/{userId}", Dynamic: remoteUserPerms},
	{Method: "GET", Path: "/profile/{userId}/{field}", Dynamic: remoteUserPerms},

	// Media uploads (raw routes reach Authorize through
	// the client listener's Authenticate).
	{Method: "POST", Path: "/_matrix/media/v3/upload", Perms: []Permission{UploadMedia}},
	{Method: "POST", Path: "/_matrix/media/r0/upload", Perms: []Permission{UploadMedia}},
	{Method: "PUT", Path: "/_matrix/media/v3/upload/{serverName}/{mediaId}", Perms: []Permission{UploadMedia}},
	{Method: "POST", Path: "/_matrix/media/v1/create", Perms: []Permission{UploadMedia}},

	// Audit trail: auditors only.
	{Path: "/_enclave/audit/v1/export", Perms: []Permission{ExportAudit}},
	{Path: "/_enclave/audit/v1/*", Perms: []Permission{ReadAudit}},

	// Enclave admin extensions.
	{Path: "/_enclave/admin/v1/roles", Perms: []Permission{UseAdminAPI, ManageRoles}},
	{Path: "/_enclave/admin/v1/users/*", Perms: []Permission{UseAdminAPI, ManageRoles}},
	{Path: "/_enclave/admin/v1/*", Perms: []Permission{UseAdminAPI, ManageRooms}},

	// Synapse-compatible admin API.
	{Path: "/_synapse/admin/v1/server_version", Perms: []Permission{UseAdminAPI}},
	{Path: "/_synapse/admin/v2/users*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/users/*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/deactivate/*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/reset_password/*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/whois/*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/registration_tokens*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/send_server_notice*", Perms: []Permission{UseAdminAPI, ManageUsers}},
	{Path: "/_synapse/admin/v1/rooms*", Perms: []Permission{UseAdminAPI, ManageRooms}},
	{Path: "/_synapse/admin/v2/rooms*", Perms: []Permission{UseAdminAPI, ManageRooms}},
	{Path: "/_synapse/admin/v1/room/*", Perms: []Permission{UseAdminAPI, ManageRooms}},
	{Path: "/_synapse/admin/v1/media*", Perms: []Permission{UseAdminAPI, ManageRooms}},
	{Path: "/_synapse/admin/v1/purge_media_cache", Perms: []Permission{UseAdminAPI, ManageRooms}},
	{Path: "/_synapse/admin/*", Perms: []Permission{UseAdminAPI}},
}

var clientPrefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/v1", "/_matrix/client/unstable"}

// normalize strips the client API version prefix from a route template.
func normalize(tmpl string) string {
	for _, p := range clientPrefixes {
		if rest, ok := strings.CutPrefix(tmpl, p); ok && strings.HasPrefix(rest, "/") {
			return rest
		}
	}
	return tmpl
}

// RuleFor finds the rule for a method and route template (nil if none).
// Required memoises it per RBAC (z.rules), as it runs on every
// authenticated request.
func RuleFor(method, tmpl string) *Rule { return findRule(method, tmpl) }

// ruleFor is RuleFor through z's cache of route templates.
func (z *RBAC) ruleFor(method, tmpl string) *Rule {
	key := method + " " + tmpl
	if v, ok := z.rules.Load(key); ok {
		return v.(*Rule)
	}
	rl := findRule(method, tmpl)
	z.rules.Store(key, rl)
	return rl
}

func findRule(method, tmpl string) *Rule {
	path := normalize(tmpl)
	for i := range Rules {
		rl := &Rules[i]
		if rl.Method != "" && rl.Method != method {
			continue
		}
		if p, ok := strings.CutSuffix(rl.Path, "*"); ok {
			if strings.HasPrefix(path, p) {
				return rl
			}
		} else if rl.Path == path {
			return rl
		}
	}
	return nil
}

func routeTemplate(r *http.Request) string {
	if rt := mux.CurrentRoute(r); rt != nil {
		if t, err := rt.GetPathTemplate(); err == nil {
			return t
		}
	}
	return r.URL.Path
}

// Required lists the permissions the request needs.
func (z *RBAC) Required(r *http.Request, dev *httpapi.Device) []Permission {
	rl := z.ruleFor(r.Method, routeTemplate(r))
	if rl == nil {
		return nil
	}
	perms := append([]Permission(nil), rl.Perms...)
	if rl.Dynamic != nil {
		perms = append(perms, rl.Dynamic(z, r, dev)...)
	}
	return perms
}

// Forbidden is the answer to a request lacking a permission: 403
// M_FORBIDDEN naming it.
func Forbidden(p Permission, roles []string) httpapi.Response {
	return httpapi.Forbidden("this action needs the %s permission, which your roles (%s) do not grant", p, strings.Join(roles, ", "))
}

// Authorize is the client API's authorizer (installed by the assembly): it
// checks the permissions the route needs and refuses use of blocked rooms.
// Denials are recorded in the audit trail.
func (z *RBAC) Authorize(r *http.Request, dev *httpapi.Device, _ string) (httpapi.Response, bool) {
	if resp, ok := z.checkBlocked(r); !ok {
		return resp, false
	}
	perms := z.Required(r, dev)
	if len(perms) == 0 {
		return httpapi.Response{}, true
	}
	ctx := r.Context()
	c, err := z.load(ctx, dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err), false
	}
	for _, p := range perms {
		if c.perms[p] {
			continue
		}
		err := z.audit(ctx, z.db, AuditEntry{
			Action: AuditAccessDenied, UserID: dev.UserID, DeviceID: dev.DeviceID,
			Target:  r.URL.Path,
			Details: map[string]any{"permission": string(p), "method": r.Method, "route": routeTemplate(r), "roles": c.roles},
		})
		if err != nil {
			logrus.WithError(err).Error("rbac: recording a denial")
			return httpapi.InternalError(r, err), false
		}
		return Forbidden(p, c.roles), false
	}
	return httpapi.Response{}, true
}

// checkBlocked refuses requests on rooms the administrator blocked (no
// joins, invites or sends) or purged (nothing at all).
func (z *RBAC) checkBlocked(r *http.Request) (httpapi.Response, bool) {
	z.blockedMu.RLock()
	none := len(z.blocked) == 0
	z.blockedMu.RUnlock()
	if none {
		return httpapi.Response{}, true
	}
	v := mux.Vars(r)
	roomID := v["roomId"]
	if roomID == "" {
		target := v["roomIdOrAlias"]
		if strings.HasPrefix(target, "#") {
			if id, _, err := storage.GetAlias(r.Context(), z.db, target); err == nil {
				target = id
			}
		}
		roomID = target
	}
	if roomID == "" || strings.HasPrefix(normalize(routeTemplate(r)), "/_synapse/admin") {
		return httpapi.Response{}, true
	}
	blocked, purged := z.RoomBlocked(roomID)
	switch {
	case purged:
		return httpapi.NotFound("room %s was purged by the server administrator", roomID), false
	case blocked && r.Method != http.MethodGet:
		return httpapi.Forbidden("room %s has been blocked by the server administrator", roomID), false
	}
	return httpapi.Response{}, true
}

// ---------------------------------------------------------------------------
// Dynamic rules.

// peekBody reads the JSON body and puts it back for the handler.
func peekBody(r *http.Request, v any) bool {
	if r.Body == nil {
		return false
	}
	b, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

func (z *RBAC) remoteUser(userID string) bool {
	_, domain, ok := strings.Cut(userID, ":")
	return ok && domain != "" && !strings.EqualFold(domain, z.serverName)
}

func createRoomPerms(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
	var body struct {
		Visibility string   `json:"visibility"`
		Invite     []string `json:"invite"`
	}
	if !peekBody(r, &body) {
		return nil
	}
	var out []Permission
	if body.Visibility == "public" {
		out = append(out, CreatePublicRoom)
	}
	for _, u := range body.Invite {
		if z.remoteUser(u) {
			return append(out, InviteRemoteUsers, Federate)
		}
	}
	return out
}

// joinPerms needs join_remote_rooms and federate when the room is one this
// server does not have (or an alias of another server).
func joinPerms(param string) func(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
	return func(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
		target := mux.Vars(r)[param]
		if strings.HasPrefix(target, "#") {
			if _, domain, ok := strings.Cut(target, ":"); ok && !strings.EqualFold(domain, z.serverName) {
				return []Permission{JoinRemoteRooms, Federate}
			}
			return nil
		}
		if !z.roomKnown(r.Context(), target) {
			return []Permission{JoinRemoteRooms, Federate}
		}
		return nil
	}
}

func (z *RBAC) roomKnown(ctx context.Context, roomID string) bool {
	_, err := storage.GetRoom(ctx, z.db, roomID)
	return err == nil || !errors.Is(err, storage.ErrNotFound)
}

func invitePerms(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
	var body struct {
		UserID string `json:"user_id"`
	}
	if peekBody(r, &body) && z.remoteUser(body.UserID) {
		return []Permission{InviteRemoteUsers, Federate}
	}
	return nil
}

func memberStatePerms(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
	v := mux.Vars(r)
	if v["eventType"] != "m.room.member" || !z.remoteUser(v["stateKey"]) {
		return nil
	}
	var body struct {
		Membership string `json:"membership"`
	}
	if peekBody(r, &body) && body.Membership == "invite" {
		return []Permission{InviteRemoteUsers, Federate}
	}
	return nil
}

func serverParamPerms(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
	if s := r.URL.Query().Get("server"); s != "" && !strings.EqualFold(s, z.serverName) {
		return []Permission{Federate}
	}
	return nil
}

func remoteUserPerms(z *RBAC, r *http.Request, _ *httpapi.Device) []Permission {
	if z.remoteUser(mux.Vars(r)["userId"]) {
		return []Permission{Federate}
	}
	return nil
}

// Describe renders a rule for documentation and error messages.
func (rl *Rule) Describe() string {
	m := rl.Method
	if m == "" {
		m = "*"
	}
	return fmt.Sprintf("%s %s", m, rl.Path)
}
