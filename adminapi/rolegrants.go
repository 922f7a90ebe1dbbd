package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/rbac"
	"enclave/storage"
)

// roleGrants holds the grants of watchful roles that wait for a second
// admin (the two-person rule, docs/ROLES.md).
type roleGrants struct {
	db        *storage.DB
	rbac      *rbac.RBAC
	record    func(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, e auditapi.Entry) error
	rolesBody func(r *http.Request, userID string) httpapi.Response
}

// request stores a grant of watchful roles (they oversee the
// other admins: audit, legal holds) to wait for a second admin, and answers
// 202 with its ID. Nothing changes until another admin — neither the one
// who asked nor the user receiving the roles — approves it; the host's
// command line (enclave user role) remains the other way.
func (rg *roleGrants) request(r *http.Request, dev *httpapi.Device, userID string, roles, watchful []string) httpapi.Response {
	if _, err := rbac.ValidRoles(rg.rbac.Definitions(), roles); err != nil {
		return badParam("%v", err)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	g := storage.RoleGrantRequest{ID: hex.EncodeToString(b), UserID: userID, Roles: roles, RequestedBy: dev.UserID, RequestedTS: time.Now().UnixMilli()}
	err := rg.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		if err := storage.InsertRoleGrantRequest(r.Context(), tx, g); err != nil {
			return err
		}
		return rg.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionRoleGrant, Target: userID,
			Details: map[string]any{"op": "requested", "grant_id": g.ID, "roles": roles, "watchful": watchful}})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusAccepted, map[string]any{
		"pending": g, "watchful_roles": watchful,
		"approve": "POST /_enclave/admin/v1/role_grants/" + g.ID + "/approve by another admin",
	})
}

// GET /_enclave/admin/v1/role_grants: grants waiting for a second admin.
func (rg *roleGrants) list(r *http.Request, _ *httpapi.Device) httpapi.Response {
	grants, err := storage.ListRoleGrantRequests(r.Context(), rg.db)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"role_grants": grants})
}

// errSelfApproval refuses an approval by the admin who asked or by the
// user who would receive the roles.
var errSelfApproval = errors.New("self approval")

// POST /_enclave/admin/v1/role_grants/{grantId}/approve: a second admin
// applies the pending grant.
func (rg *roleGrants) approve(r *http.Request, dev *httpapi.Device) httpapi.Response {
	var g *storage.RoleGrantRequest
	err := rg.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		var err error
		if g, err = storage.TakeRoleGrantRequest(r.Context(), tx, vars(r, "grantId")); err != nil {
			return err
		}
		if g.RequestedBy == dev.UserID || g.UserID == dev.UserID {
			return errSelfApproval
		}
		if _, _, err := rg.rbac.SetRoles(r.Context(), tx, g.UserID, g.Roles, dev.UserID); err != nil {
			return err
		}
		return rg.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionRoleGrant, Target: g.UserID,
			Details: map[string]any{"op": "approved", "grant_id": g.ID, "roles": g.Roles, "requested_by": g.RequestedBy}})
	})
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return httpapi.NotFound("no such pending role grant")
	case errors.Is(err, errSelfApproval):
		return httpapi.Forbidden("a role grant must be approved by an admin other than the one who asked and the one who receives it")
	case errors.Is(err, rbac.ErrUnknownRole):
		return badParam("%v", err)
	case err != nil:
		return httpapi.InternalError(r, err)
	}
	return rg.rolesBody(r, g.UserID)
}

// DELETE /_enclave/admin/v1/role_grants/{grantId}: withdraw a pending grant.
func (rg *roleGrants) cancel(r *http.Request, dev *httpapi.Device) httpapi.Response {
	err := rg.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		g, err := storage.TakeRoleGrantRequest(r.Context(), tx, vars(r, "grantId"))
		if err != nil {
			return err
		}
		return rg.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionRoleGrant, Target: g.UserID,
			Details: map[string]any{"op": "cancelled", "grant_id": g.ID, "requested_by": g.RequestedBy}})
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("no such pending role grant")
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}
