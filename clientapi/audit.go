package clientapi

// Audit plumbing for the client API. Account actions record their audit
// entry inside their own transaction with opts.Audit.Record(ctx, tx, e): if the
// record cannot be written the transaction, and so the action, fails.
//
// Every authenticated request carries its actor (user, device, IP, user
// agent) in its context once AttachActor has run (the server's authorizer
// does it), so entries recorded deeper down (room events) name the device
// and address the request came from. Open endpoints (login, register) use
// actorContext.
//
// This file also exports the few account helpers the admin API (package
// adminapi) needs.

import (
	"context"
	"net"
	"net/http"
	"time"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

// RequestActor describes who sent r: the device when authenticated, and
// always the peer address and user agent.
func RequestActor(r *http.Request, dev *httpapi.Device) auditapi.Actor {
	ip := r.RemoteAddr
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	act := auditapi.Actor{IP: ip, UserAgent: r.UserAgent()}
	if dev != nil {
		act.UserID, act.DeviceID, act.AppService = dev.UserID, dev.DeviceID, dev.AppService
	}
	return act
}

// AttachActor puts the request's actor into r's context in place, so the
// handler that runs next (and everything it calls) records it. It is meant
// for the authorizer hook, which runs on the very *http.Request the
// handler then receives.
func AttachActor(r *http.Request, dev *httpapi.Device) {
	*r = *r.WithContext(auditapi.WithActor(r.Context(), RequestActor(r, dev)))
}

// actorContext is r's context with the (unauthenticated) requester's
// address attached, for open endpoints.
func actorContext(r *http.Request) context.Context {
	if _, ok := auditapi.ActorFrom(r.Context()); ok {
		return r.Context()
	}
	return auditapi.WithActor(r.Context(), RequestActor(r, nil))
}

// loginFailed records a failed login attempt and returns resp (or a 500 if
// the attempt could not be recorded: unrecorded attempts are not allowed).
func (ac *accounts) loginFailed(r *http.Request, userID, identifier, reason string, resp httpapi.Response) httpapi.Response {
	ac.metrics.loginFailures.WithLabelValues(reason).Inc()
	details := map[string]any{"reason": reason}
	if identifier != "" {
		details["identifier"] = clipString(identifier, 255)
	}
	err := ac.opts.Audit.Record(actorContext(r), ac.db, auditapi.Entry{
		Actor: auditapi.Actor{UserID: userID}, Action: auditapi.ActionLogin, Target: userID,
		Outcome: auditapi.OutcomeFailure, Details: details,
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return resp
}

// lockoutAfterFailure counts a wrong password for userID and, when it
// locks the account, records the lockout (with the failure itself).
func (ac *accounts) lockoutAfterFailure(r *http.Request, userID string) (httpapi.Response, bool) {
	lockout, count := ac.guard.failed(userID)
	if lockout == 0 {
		return httpapi.Response{}, false
	}
	ac.metrics.lockouts.Inc()
	err := ac.opts.Audit.Record(actorContext(r), ac.db, auditapi.Entry{
		Actor: auditapi.Actor{UserID: userID}, Action: auditapi.ActionLoginLockout, Target: userID,
		Outcome: auditapi.OutcomeDenied, Details: map[string]any{"failures": count, "lockout_seconds": int64(lockout.Seconds())},
	})
	if err != nil {
		return httpapi.InternalError(r, err), true
	}
	return ac.loginFailed(r, userID, "", "invalid_credentials", httpapi.Forbidden("invalid username or password")), true
}

// auditDevicesRemoved records one device.remove entry per device.
func (ac *accounts) auditDevicesRemoved(ctx context.Context, q storage.Querier, userID string, deviceIDs []string, reason string) error {
	for _, id := range deviceIDs {
		err := ac.opts.Audit.Record(ctx, q, auditapi.Entry{
			Actor: auditapi.Actor{UserID: userID}, Action: auditapi.ActionDeviceRemove, Target: id,
			Details: map[string]any{"user_id": userID, "reason": reason},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ---------------------------------------------------------------------------
// Helpers for the admin API.

// InvalidateUserTokens drops the user's cached access tokens after their
// tokens were revoked in the store.
func (a *API) InvalidateUserTokens(userID string) { a.accounts.invalidateUserTokens(userID) }

// IssueAdminToken mints an access token for userID on a new device named
// displayName: an administrator logging in as the user (Synapse's
// POST /_synapse/admin/v1/users/{id}/login). The device shows in the
// user's device list, so the user can see and end the session. validUntil
// (ms, 0: the server's token lifetime) bounds the token; inTx runs in the
// same transaction, for the audit entry.
func (a *API) IssueAdminToken(ctx context.Context, userID, displayName string, validUntil int64, inTx func(tx *storage.Tx, deviceID string) error) (token, deviceID string, err error) {
	err = a.accounts.db.WithTx(ctx, func(tx *storage.Tx) error {
		s, err := a.accounts.issueSession(ctx, tx, userID, "", displayName, false, time.Now())
		if err != nil {
			return err
		}
		if validUntil > 0 {
			if err := storage.SetAccessTokenExpiry(ctx, tx, hashToken(s.AccessToken), validUntil); err != nil {
				return err
			}
		}
		token, deviceID = s.AccessToken, s.DeviceID
		return inTx(tx, s.DeviceID)
	})
	return token, deviceID, err
}

// LeaveAllRooms makes a (deactivated) user leave or reject every room.
func (a *API) LeaveAllRooms(ctx context.Context, userID string) {
	a.accounts.leaveAllRooms(ctx, userID)
}

// ServerName is the server's name.
func (a *API) ServerName() string { return a.opts.ServerName }
