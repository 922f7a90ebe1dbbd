package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"time"

	"enclave/auditapi"
	acct "enclave/internal/accounts"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// Registration modes (config registration.mode).
const (
	regModeClosed = "closed"
	regModeOpen   = "open"
	regModeToken  = "token"
)

// registrationFlows returns the UIA flows for /register; ok is false when
// registration is closed.
func (ac *accounts) registrationFlows() ([][]string, bool) {
	switch ac.opts.RegistrationMode {
	case regModeOpen:
		return [][]string{{stageDummy}}, true
	case regModeToken:
		return [][]string{{stageRegToken}}, true
	}
	return nil, false
}

type registerRequest struct {
	Username                 string  `json:"username"`
	Password                 *string `json:"password"`
	DeviceID                 string  `json:"device_id"`
	InitialDeviceDisplayName string  `json:"initial_device_display_name"`
	InhibitLogin             bool    `json:"inhibit_login"`
	RefreshToken             bool    `json:"refresh_token"`
	// Type is the legacy top-level login type, which appservices still
	// send for m.login.application_service; Auth.Type the current one.
	Type string `json:"type"`
	Auth struct {
		Type string `json:"type"`
	} `json:"auth"`
}

var (
	errRegUserInUse   = errors.New("user ID in use")
	errRegSessionUsed = errors.New("auth session already used")
)

func userInUse() httpapi.Response {
	return httpapi.Errf(http.StatusBadRequest, "M_USER_IN_USE", "user ID already taken")
}

// POST /register
func (ac *accounts) postRegister(r *http.Request) httpapi.Response {
	if asID, ok := ac.appServiceToken(r); ok {
		var req registerRequest
		if resp, ok := httpapi.DecodeJSON(r, &req); !ok {
			return resp
		}
		if req.Type != appServiceLoginType && req.Auth.Type != appServiceLoginType {
			return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "an application service registers with %s", appServiceLoginType)
		}
		return ac.registerAppServiceUser(r, asID, req)
	}
	if wait, ok := ac.guard.allowIP(requestIP(r)); !ok {
		return limitExceeded(wait, "too many registration attempts from this address")
	}
	switch r.URL.Query().Get("kind") {
	case "", "user":
	case "guest":
		return httpapi.Errf(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "guest access is not enabled on this server")
	default:
		return httpapi.InvalidParam("kind must be user or guest")
	}
	flows, open := ac.registrationFlows()
	if !open {
		return httpapi.Forbidden("registration is closed")
	}
	body, resp, ok := httpapi.ReadBody(r)
	if !ok {
		return resp
	}
	var req registerRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("request body has the wrong shape: %v", err)
	}
	if resp, ok := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); !ok {
		return resp
	}
	ctx := r.Context()
	username := strings.ToLower(req.Username)
	if username != "" {
		if resp, ok := ac.checkNewLocalpart(username); !ok {
			return resp
		}
		if resp, ok := ac.userReserved(ac.userID(username)); !ok {
			return resp
		}
		taken, err := storage.AccountExists(ctx, ac.db, ac.userID(username))
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		if taken {
			return userInUse()
		}
	}
	password := ""
	if req.Password != nil {
		password = *req.Password
		if len(password) > acct.MaxPasswordBytes {
			return httpapi.Errf(http.StatusBadRequest, "M_WEAK_PASSWORD", "password may not be longer than %d bytes", acct.MaxPasswordBytes)
		}
	}

	sess, resp, done := ac.runUIA(r, body, nil, flows)
	if !done {
		if sess != nil {
			// Remember the username and password, for clients that do not
			// resend them with the final stage.
			changed := false
			if username != "" && sess.Data[uiaDataUsername] != username {
				sess.Data[uiaDataUsername] = username
				changed = true
			}
			if password != "" && sess.Data[uiaDataPasswordHash] == "" {
				h, err := acct.HashPassword(ctx, password)
				if err != nil {
					return httpapi.InternalError(r, err)
				}
				sess.Data[uiaDataPasswordHash] = h
				changed = true
			}
			if changed {
				if err := storage.UpdateUIASession(ctx, ac.db, sess); err != nil {
					return httpapi.InternalError(r, err)
				}
			}
		}
		return resp
	}

	// Auth is complete. Missing details leave the session (and its
	// completed stages) in place so the client can retry.
	if username == "" {
		username = sess.Data[uiaDataUsername]
	}
	var hash string
	switch {
	case password != "":
		h, err := acct.HashPassword(ctx, password)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		hash = h
	case sess.Data[uiaDataPasswordHash] != "":
		hash = sess.Data[uiaDataPasswordHash]
	default:
		return httpapi.MissingParam("password is required")
	}
	if username == "" {
		u, err := ac.generateLocalpart(ctx)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		username = u
	}
	userID := ac.userID(username)
	var issued *issuedSession
	now := time.Now()
	actx := actorContext(r)
	err := ac.db.WithTx(ctx, func(tx *storage.Tx) error {
		consumed, err := storage.DeleteUIASession(ctx, tx, sess.ID)
		if err != nil {
			return err
		}
		if !consumed {
			return errRegSessionUsed
		}
		if tok := sess.Data[uiaDataRegToken]; tok != "" {
			if err := storage.CompleteRegistrationToken(ctx, tx, tok); err != nil {
				return err
			}
		}
		taken, err := storage.AccountExists(ctx, tx, userID)
		if err != nil {
			return err
		}
		if taken {
			return errRegUserInUse
		}
		created, err := storage.CreateAccount(ctx, tx, &storage.Account{UserID: userID, Localpart: username, PasswordHash: hash, CreatedTS: now.UnixMilli(), DisplayName: username})
		if err != nil {
			return err
		}
		if !created {
			return errRegUserInUse
		}
		if err := ac.opts.Audit.Record(actx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: userID}, Action: auditapi.ActionRegister, Target: userID,
			Details: map[string]any{"kind": "user", "registration_token": sess.Data[uiaDataRegToken] != ""}}); err != nil {
			return err
		}
		if req.InhibitLogin {
			return nil
		}
		issued, err = ac.issueSession(actx, tx, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken, now)
		return err
	})
	switch {
	case errors.Is(err, errRegUserInUse):
		return userInUse()
	case errors.Is(err, errRegSessionUsed):
		return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "auth session was already used")
	case err != nil:
		return httpapi.InternalError(r, err)
	}
	out := &sessionResponse{UserID: userID, HomeServer: ac.opts.ServerName}
	if issued != nil {
		out.AccessToken, out.DeviceID, out.RefreshToken, out.ExpiresInMs = issued.AccessToken, issued.DeviceID, issued.RefreshToken, issued.ExpiresInMs
	}
	return httpapi.JSON(http.StatusOK, out)
}

// generateLocalpart picks an unused numeric localpart for registrations
// that did not ask for a username.
func (ac *accounts) generateLocalpart(ctx context.Context) (string, error) {
	for range 20 {
		n, err := rand.Int(rand.Reader, big.NewInt(9_000_000_000))
		if err != nil {
			return "", err
		}
		local := n.Add(n, big.NewInt(1_000_000_000)).String()
		taken, err := storage.AccountExists(ctx, ac.db, ac.userID(local))
		if err != nil {
			return "", err
		}
		if !taken {
			return local, nil
		}
	}
	return "", errors.New("could not find a free user ID")
}

// GET /register/available?username=
func (ac *accounts) getRegisterAvailable(r *http.Request) httpapi.Response {
	if _, open := ac.registrationFlows(); !open {
		return httpapi.Forbidden("registration is closed")
	}
	username := strings.ToLower(r.URL.Query().Get("username"))
	if username == "" {
		return httpapi.MissingParam("username is required")
	}
	if resp, ok := ac.checkNewLocalpart(username); !ok {
		return resp
	}
	if resp, ok := ac.userReserved(ac.userID(username)); !ok {
		return resp
	}
	taken, err := storage.AccountExists(r.Context(), ac.db, ac.userID(username))
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if taken {
		return userInUse()
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"available": true})
}

// GET /_matrix/client/v1/register/m.login.registration_token/validity?token=
func (ac *accounts) getRegistrationTokenValidity(r *http.Request) httpapi.Response {
	if ac.opts.RegistrationMode != regModeToken {
		return httpapi.Forbidden("registration tokens are not in use on this server")
	}
	tok, present := r.URL.Query()["token"]
	if !present || len(tok) == 0 || tok[0] == "" {
		return httpapi.MissingParam("token is required")
	}
	valid := ac.staticRegistrationToken(tok[0])
	if !valid && validRegTokenSyntax(tok[0]) {
		v, err := storage.RegistrationTokenValid(r.Context(), ac.db, tok[0], time.Now().UnixMilli())
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		valid = v
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"valid": valid})
}
