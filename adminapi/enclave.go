package adminapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/internal/rbac"
	"enclave/storage"
)

// GET /_enclave/admin/v1/roles: the role definitions.
func (a *API) listRoles(r *http.Request, _ *httpapi.Device) httpapi.Response {
	defs := a.RBAC.Definitions()
	roles := map[string][]perm.Permission{}
	for _, n := range defs.Names() {
		perms := defs.Permissions(n)
		if perms == nil {
			perms = []perm.Permission{}
		}
		roles[n] = perms
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"roles": roles, "default_role": a.RBAC.DefaultRole(), "permissions": perm.All})
}

func (a *API) rolesBody(r *http.Request, userID string) httpapi.Response {
	a.RBAC.Invalidate(userID)
	roles, err := a.RBAC.UserRoles(r.Context(), userID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	explicit, err := storage.UserRoles(r.Context(), a.DB, userID)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if explicit == nil {
		explicit = []string{}
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"user_id": userID, "roles": roles, "assigned": explicit})
}

// GET /_enclave/admin/v1/users/{userId}/roles
func (a *API) getUserRoles(r *http.Request, _ *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	return a.rolesBody(r, acc.UserID)
}

// PUT /_enclave/admin/v1/users/{userId}/roles {"roles": [...]}: replace
// the user's roles ("admin" included: it sets the admin flag).
func (a *API) putUserRoles(r *http.Request, dev *httpapi.Device) httpapi.Response {
	acc, resp, ok := a.loadUser(r)
	if !ok {
		return resp
	}
	var req struct {
		Roles *[]string `json:"roles"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if req.Roles == nil {
		return httpapi.MissingParam("roles is required")
	}
	if acc.UserID == dev.UserID && acc.IsAdmin && !contains(*req.Roles, rbac.RoleAdmin) {
		return badParam("you may not remove your own admin role")
	}
	watchful, err := a.RBAC.WatchfulAdded(r.Context(), a.DB, acc.UserID, *req.Roles)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if len(watchful) > 0 {
		return a.grants.request(r, dev, acc.UserID, *req.Roles, watchful)
	}
	err = a.DB.WithTx(r.Context(), func(tx *storage.Tx) error {
		_, _, err := a.RBAC.SetRoles(r.Context(), tx, acc.UserID, *req.Roles, dev.UserID)
		return err
	})
	if errors.Is(err, rbac.ErrUnknownRole) {
		return badParam("%v", err)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return a.rolesBody(r, acc.UserID)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// GET /_enclave/admin/v1/legal_holds
func (a *API) listLegalHolds(r *http.Request, _ *httpapi.Device) httpapi.Response {
	holds, err := storage.ListLegalHolds(r.Context(), a.DB)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"legal_holds": holds})
}

func holdTarget(r *http.Request) (scope, target string, resp httpapi.Response, ok bool) {
	scope, target = vars(r, "scope"), vars(r, "target")
	switch {
	case scope == storage.HoldRoom && strings.HasPrefix(target, "!"):
	case scope == storage.HoldUser && strings.HasPrefix(target, "@") && strings.Contains(target, ":"):
	default:
		return "", "", badParam("legal holds are on room/!room_id or user/@user:server"), false
	}
	return scope, target, httpapi.Response{}, true
}

// PUT /_enclave/admin/v1/legal_holds/{scope}/{target} {"reason": "..."}:
// while held, the room's (or user's rooms') history cannot be purged.
func (a *API) putLegalHold(r *http.Request, dev *httpapi.Device) httpapi.Response {
	scope, target, resp, ok := holdTarget(r)
	if !ok {
		return resp
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	h := storage.LegalHold{Scope: scope, Target: target, Reason: req.Reason, CreatedBy: dev.UserID, CreatedTS: time.Now().UnixMilli()}
	err := a.DB.WithTx(r.Context(), func(tx *storage.Tx) error {
		if err := storage.PutLegalHold(r.Context(), tx, h); err != nil {
			return err
		}
		return a.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionLegalHold, Target: target,
			Details: map[string]any{"scope": scope, "held": true, "reason": req.Reason}})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, h)
}

// DELETE /_enclave/admin/v1/legal_holds/{scope}/{target}
func (a *API) deleteLegalHold(r *http.Request, dev *httpapi.Device) httpapi.Response {
	scope, target, resp, ok := holdTarget(r)
	if !ok {
		return resp
	}
	err := a.DB.WithTx(r.Context(), func(tx *storage.Tx) error {
		ok, err := storage.DeleteLegalHold(r.Context(), tx, scope, target)
		if err != nil {
			return err
		}
		if !ok {
			return storage.ErrNotFound
		}
		return a.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionLegalHold, Target: target, Details: map[string]any{"scope": scope, "held": false}})
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such legal hold")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}
