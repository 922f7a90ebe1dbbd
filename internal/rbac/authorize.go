package rbac

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/storage"
)

func routeTemplate(r *http.Request) string {
	if rt := mux.CurrentRoute(r); rt != nil {
		if t, err := rt.GetPathTemplate(); err == nil {
			return t
		}
	}
	return r.URL.Path
}

// Forbidden is the answer to a request lacking a permission: 403
// M_FORBIDDEN naming it.
func Forbidden(p perm.Permission, roles []string) httpapi.Response {
	return httpapi.Forbidden("this action needs the %s permission, which your roles (%s) do not grant", p, strings.Join(roles, ", "))
}

// Authorize is the client API's authorizer (installed by the assembly): it
// checks the permissions the route's requirement asks for this request and
// refuses use of blocked rooms. A requirement that cannot be decided is a
// refusal. Denials are recorded in the audit trail.
func (z *RBAC) Authorize(r *http.Request, dev *httpapi.Device, need perm.Requirement) (httpapi.Response, bool) {
	if resp, ok := z.checkBlocked(r); !ok {
		return resp, false
	}
	perms, err := need.For(r)
	if err != nil {
		logrus.WithError(err).WithField("route", routeTemplate(r)).Warn("rbac: refusing a request whose permissions cannot be decided")
		if err := z.recordDenial(r, dev, "", nil, err.Error()); err != nil {
			return httpapi.InternalError(r, err), false
		}
		return httpapi.Forbidden("the permissions this request needs cannot be decided, so it is refused"), false
	}
	if len(perms) == 0 {
		return httpapi.Response{}, true
	}
	c, err := z.load(r.Context(), dev.UserID)
	if err != nil {
		return httpapi.InternalError(r, err), false
	}
	for _, p := range perms {
		if c.perms[p] {
			continue
		}
		if err := z.recordDenial(r, dev, p, c.roles, ""); err != nil {
			return httpapi.InternalError(r, err), false
		}
		return Forbidden(p, c.roles), false
	}
	return httpapi.Response{}, true
}

// recordDenial writes a refusal to the audit trail.
func (z *RBAC) recordDenial(r *http.Request, dev *httpapi.Device, p perm.Permission, roles []string, reason string) error {
	details := map[string]any{"method": r.Method, "route": routeTemplate(r)}
	if p != "" {
		details["permission"] = string(p)
		details["roles"] = roles
	}
	if reason != "" {
		details["reason"] = reason
	}
	err := z.audit(r.Context(), z.db, AuditEntry{
		Action: AuditAccessDenied, UserID: dev.UserID, DeviceID: dev.DeviceID,
		Target:  r.URL.Path,
		Details: details,
	})
	if err != nil {
		logrus.WithError(err).Error("rbac: recording a denial")
	}
	return err
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
	if roomID == "" || strings.HasPrefix(routeTemplate(r), "/_synapse/admin") {
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
