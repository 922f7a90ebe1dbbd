package clientapi

import (
	"errors"
	"net/http"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// maxDeviceIDLen and maxDeviceNameLen bound device IDs and display names from clients.
const (
	maxDeviceIDLen   = 255
	maxDeviceNameLen = 1024
)

func (ac *accounts) getLoginFlows(r *http.Request) httpapi.Response {
	return httpapi.JSON(http.StatusOK, map[string]any{"flows": []map[string]any{
		{"type": "m.login.password"},
		{"type": "m.login.token"},
	}})
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"` // deprecated
	Password                 string          `json:"password"`
	Token                    string          `json:"token"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

// sessionResponse is the body of a successful login or registration.
type sessionResponse struct {
	UserID       string         `json:"user_id"`
	AccessToken  string         `json:"access_token,omitempty"`
	DeviceID     string         `json:"device_id,omitempty"`
	HomeServer   string         `json:"home_server"`
	ExpiresInMs  int64          `json:"expires_in_ms,omitempty"`
	RefreshToken string         `json:"refresh_token,omitempty"`
	WellKnown    map[string]any `json:"well_known,omitempty"`
}

func checkDeviceFields(deviceID, displayName string) (httpapi.Response, bool) {
	if len(deviceID) > maxDeviceIDLen {
		return httpapi.InvalidParam("device_id may not be longer than %d bytes", maxDeviceIDLen), false
	}
	if len(displayName) > maxDeviceNameLen {
		return httpapi.InvalidParam("initial_device_display_name may not be longer than %d bytes", maxDeviceNameLen), false
	}
	return httpapi.Response{}, true
}

func (ac *accounts) postLogin(r *http.Request) httpapi.Response {
	if wait, ok := ac.guard.allowIP(requestIP(r)); !ok {
		return limitExceeded(wait, "too many login attempts from this address")
	}
	var req loginRequest
	if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
		return resp
	}
	if resp, ok := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); !ok {
		return resp
	}
	ctx := actorContext(r)
	var userID string
	switch req.Type {
	case "m.login.password":
		who := req.User
		if req.Identifier != nil {
			if req.Identifier.Type != "m.id.user" {
				return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "unsupported identifier type %q", req.Identifier.Type)
			}
			who = req.Identifier.User
		}
		if who == "" {
			return httpapi.MissingParam("identifier is required")
		}
		if req.Password == "" {
			return httpapi.MissingParam("password is required")
		}
		uid, valid := ac.resolveLocalUser(who)
		if !valid {
			uid = "" // still hashes, against the dummy
		}
		guardKey := uid
		if guardKey == "" {
			guardKey = "?" + clipString(who, 255) // guesses at unknown names are paced too
		}
		if wait, locked, ok := ac.guard.allowAccount(guardKey); !ok {
			if locked {
				return ac.loginFailed(r, uid, who, "locked_out", limitExceeded(wait, "too many failed logins: the account is locked for a while"))
			}
			return limitExceeded(wait, "too many login attempts for this account")
		}
		acc, ok, err := ac.verifyUserPassword(ctx, uid, req.Password)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if !ok || acc == nil {
			if resp, locked := ac.lockoutAfterFailure(r, uid); locked {
				return resp
			}
			return ac.loginFailed(r, uid, who, "invalid_credentials", httpapi.Forbidden("invalid username or password"))
		}
		ac.guard.succeeded(uid)
		if acc.Deactivated {
			return ac.loginFailed(r, acc.UserID, who, "deactivated", httpapi.Errf(http.StatusForbidden, "M_USER_DEACTIVATED", "this account has been deactivated"))
		}
		userID = acc.UserID
	case "m.login.token":
		if req.Token == "" {
			return httpapi.MissingParam("token is required")
		}
		uid, err := storage.ConsumeLoginToken(ctx, ac.db, hashToken(req.Token), time.Now().UnixMilli())
		if errors.Is(err, storage.ErrNotFound) {
			return ac.loginFailed(r, "", "", "invalid_token", httpapi.Forbidden("invalid or expired login token"))
		}
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		acc, err := storage.GetAccount(ctx, ac.db, uid)
		if errors.Is(err, storage.ErrNotFound) {
			return ac.loginFailed(r, uid, "", "invalid_token", httpapi.Forbidden("invalid or expired login token"))
		}
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if acc.Deactivated {
			return ac.loginFailed(r, acc.UserID, "", "deactivated", httpapi.Errf(http.StatusForbidden, "M_USER_DEACTIVATED", "this account has been deactivated"))
		}
		userID = acc.UserID
	case "":
		return httpapi.MissingParam("type is required")
	default:
		return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "unknown login type %q", req.Type)
	}

	var sess *issuedSession
	err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		sess, err = ac.issueSession(ctx, tx, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken, time.Now())
		if err != nil {
			return err
		}
		return ac.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: userID, DeviceID: sess.DeviceID}, Action: auditapi.ActionLogin,
			Target: userID, Details: map[string]any{"type": req.Type, "device_id": sess.DeviceID}})
	})
	if req.DeviceID != "" {
		ac.invalidateUserTokens(userID) // the device's old tokens were revoked
	}
	if errors.Is(err, errDehydratedDeviceID) {
		return httpapi.InvalidParam("device_id %s is your dehydrated device; log in with another", req.DeviceID)
	}
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	ac.maintain()
	return httpapi.JSON(http.StatusOK, ac.sessionBody(userID, sess))
}

func (ac *accounts) sessionBody(userID string, s *issuedSession) *sessionResponse {
	out := &sessionResponse{UserID: userID, HomeServer: ac.opts.ServerName}
	if s != nil {
		out.AccessToken, out.DeviceID, out.RefreshToken, out.ExpiresInMs = s.AccessToken, s.DeviceID, s.RefreshToken, s.ExpiresInMs
	}
	if ac.opts.BaseURL != "" {
		out.WellKnown = map[string]any{"m.homeserver": map[string]any{"base_url": ac.opts.BaseURL}}
	}
	return out
}
