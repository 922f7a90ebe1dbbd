package adminapi

import (
	"context"
	"net/http"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/storage"
)

// Synapse's login-as-user and shadow-ban admin APIs.

type userOps struct {
	db       *storage.DB
	client   ClientAPI
	can      func(ctx context.Context, userID string, p perm.Permission) (bool, error)
	loadUser func(r *http.Request) (*storage.Account, httpapi.Response, bool)
	record   func(ctx context.Context, tx *storage.Tx, dev *httpapi.Device, e auditapi.Entry) error
}

// POST /_synapse/admin/v1/users/{userId}/login {"valid_until_ms"}: an
// access token for the user, on a new device named after the
// administrator (it shows in the user's device list, unlike Synapse's
// device-less token, so the user can see and end the session). It needs
// login_as_user. Unlike Synapse, Enclave refuses a target who may use the
// admin API: one administrator acting as another would blur who did what
// in the audit trail. Logging in as oneself is refused, as in Synapse.
func (uo *userOps) login(r *http.Request, dev *httpapi.Device) httpapi.Response {
	acc, resp, ok := uo.loadUser(r)
	if !ok {
		return resp
	}
	var req struct {
		ValidUntilMS int64 `json:"valid_until_ms"`
	}
	if r.ContentLength != 0 {
		if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
			return resp
		}
	}
	if req.ValidUntilMS < 0 {
		return badParam("valid_until_ms must be a timestamp in milliseconds")
	}
	if acc.UserID == dev.UserID {
		return badParam("cannot use the admin API to log in as yourself")
	}
	if acc.Deactivated {
		return badParam("the user is deactivated")
	}
	admin, err := uo.can(r.Context(), acc.UserID, perm.UseAdminAPI)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if admin || acc.IsAdmin {
		return httpapi.Forbidden("%s may use the admin API: administrators cannot log in as each other", acc.UserID)
	}
	token, _, err := uo.client.IssueAdminToken(r.Context(), acc.UserID, "admin login by "+dev.UserID, req.ValidUntilMS, func(tx *storage.Tx, deviceID string) error {
		return uo.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionLoginAsUser, Target: acc.UserID,
			Details: map[string]any{"device_id": deviceID, "valid_until_ms": req.ValidUntilMS}})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"access_token": token})
}

// POST /_synapse/admin/v1/users/{userId}/shadow_ban (and DELETE to lift):
// the user's sends, state changes and redactions answer 200 with an event
// ID that names nothing, invites answer {}, and nothing is stored or
// relayed.
func (uo *userOps) shadowBan(ban bool) handler {
	return func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		acc, resp, ok := uo.loadUser(r)
		if !ok {
			return resp
		}
		err := uo.db.WithTx(r.Context(), func(tx *storage.Tx) error {
			if err := storage.SetShadowBanned(r.Context(), tx, acc.UserID, ban); err != nil {
				return err
			}
			return uo.record(r.Context(), tx, dev, auditapi.Entry{Action: auditapi.ActionShadowBan, Target: acc.UserID, Details: map[string]any{"banned": ban}})
		})
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		uo.client.InvalidateUserTokens(acc.UserID) // the flag rides on cached tokens
		return httpapi.JSON(http.StatusOK, struct{}{})
	}
}
