package clientapi

// User-Interactive Authentication (spec: "User-Interactive Authentication
// API"). Sessions live in the store (uia_sessions) so they survive restarts
// and work across processes.
//
// Using it from an endpoint (device deletion, cross-signing upload, …):
//
//	body, resp, ok := httpapi.ReadBody(r)
//	if !ok {
//		return resp
//	}
//	// parse and validate body first: bad input must fail before auth
//	if resp, ok := a.requireUIA(r, body, dev, [][]string{{"m.login.password"}}); !ok {
//		return resp // 401 with flows/session, or an error
//	}
//	// authenticated: perform the operation
//
// A session is bound to the user and to the request (method and path, with
// the /v3 or /r0 prefix ignored), and is consumed once a flow completes, so
// it cannot authorise a second operation.

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"enclave/internal/httpapi"
	"enclave/storage"
)

// Stage types we implement.
const (
	stagePassword = "m.login.password"
	stageDummy    = "m.login.dummy"
	stageRegToken = "m.login.registration_token"
)

// uiaSessionLifetime is how long an unfinished session is kept.
const uiaSessionLifetime = time.Hour

// Keys of UIASession.Data used by this package.
const (
	uiaDataRegToken     = "registration_token" // a reserved (pending) DB registration token
	uiaDataUsername     = "username"
	uiaDataPasswordHash = "password_hash"
)

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// uiaBody is the spec's 401 body: flows, params, session, completed, and
// an errcode/error when the last stage failed.
type uiaBody struct {
	ErrCode   string          `json:"errcode,omitempty"`
	Err       string          `json:"error,omitempty"`
	Flows     []uiaFlow       `json:"flows"`
	Params    json.RawMessage `json:"params"`
	Session   string          `json:"session"`
	Completed []string        `json:"completed"`
}

// authDict is the request's "auth" object, for every stage we know.
type authDict struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	// m.login.password
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"` // deprecated form
	Password   string          `json:"password"`
	// m.login.registration_token
	Token string `json:"token"`
}

// userIdentifier is the spec's identifier object (login and UIA).
type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// requireUIA runs User-Interactive Auth for an endpoint.
//
//   - body is the raw request body (its "auth" object is read).
//   - dev is the authenticated caller, or nil for unauthenticated endpoints;
//     m.login.password authenticates as dev's user and needs dev.
//   - flows lists acceptable flows, each a list of stage types, e.g.
//     [][]string{{"m.login.password"}}.
//
// It returns ok=true once a flow is complete (the session is then
// consumed). Otherwise resp is what the handler must return: 401 with
// {flows, params, session, completed} (plus errcode/error after a failed
// stage), or a 4xx error.
func (ac *accounts) requireUIA(r *http.Request, body []byte, dev *httpapi.Device, flows [][]string) (httpapi.Response, bool) {
	sess, resp, ok := ac.runUIA(r, body, dev, flows)
	if !ok {
		return resp, false
	}
	consumed, err := storage.DeleteUIASession(r.Context(), ac.db, sess.ID)
	if err != nil {
		return httpapi.InternalError(r, err), false
	}
	if !consumed {
		return httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "auth session was already used"), false
	}
	return httpapi.Response{}, true
}

// runUIA is requireUIA without consuming the completed session: the caller
// must delete it (storage.DeleteUIASession, ideally in the same
// transaction as the operation). When ok is false, sess is the session the
// challenge names (nil if none was established), so the caller may keep
// request data in sess.Data for the next round.
func (ac *accounts) runUIA(r *http.Request, body []byte, dev *httpapi.Device, flows [][]string) (sess *storage.UIASession, resp httpapi.Response, ok bool) {
	ctx := r.Context()
	var env struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, httpapi.BadJSON("request body has the wrong shape: %v", err), false
	}
	var auth *authDict
	if len(env.Auth) > 0 && string(env.Auth) != "null" {
		auth = &authDict{}
		if err := json.Unmarshal(env.Auth, auth); err != nil {
			return nil, httpapi.BadJSON("auth has the wrong shape: %v", err), false
		}
	}
	userID := ""
	if dev != nil {
		userID = dev.UserID
	}
	op := uiaOp(r)

	if auth != nil && auth.Session != "" {
		s, err := storage.GetUIASession(ctx, ac.db, auth.Session)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && time.Since(time.UnixMilli(s.CreatedTS)) > uiaSessionLifetime) {
			return nil, httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "unknown auth session"), false
		}
		if err != nil {
			return nil, httpapi.InternalError(r, err), false
		}
		if s.UserID != userID {
			// Another user's session never authorises this user's request.
			return nil, httpapi.Forbidden("the auth session belongs to another user"), false
		}
		if s.Op != op {
			return nil, httpapi.Forbidden("the auth session was started for another request"), false
		}
		sess = s
	} else {
		// No session yet: start one. An auth dict without a session is
		// processed in the new session (clients may send the password
		// straight away).
		sess = &storage.UIASession{ID: randomHex(16), CreatedTS: time.Now().UnixMilli(), UserID: userID, Op: op,
			Completed: []string{}, Params: json.RawMessage(`{}`), Data: map[string]string{}}
		if err := storage.CreateUIASession(ctx, ac.db, sess); err != nil {
			return nil, httpapi.InternalError(r, err), false
		}
		ac.maintain()
	}

	if auth == nil || auth.Type == "" || slices.Contains(sess.Completed, auth.Type) {
		if flowDone(flows, sess.Completed) {
			return sess, httpapi.Response{}, true
		}
		return sess, uiaChallenge(flows, sess, "", ""), false
	}
	if !stageOffered(flows, auth.Type) {
		return sess, uiaChallenge(flows, sess, "M_UNRECOGNIZED", "auth type "+auth.Type+" is not offered here"), false
	}
	errcode, msg, err := ac.runStage(ctx, auth, dev, sess)
	if err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	if errcode == errcodeOtherUser {
		// Credentials of another user: the spec's 403, not a retry.
		return sess, httpapi.Forbidden("%s", msg), false
	}
	if errcode != "" {
		return sess, uiaChallenge(flows, sess, errcode, msg), false
	}
	sess.Completed = append(sess.Completed, auth.Type)
	if err := storage.UpdateUIASession(ctx, ac.db, sess); err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	if flowDone(flows, sess.Completed) {
		return sess, httpapi.Response{}, true
	}
	return sess, uiaChallenge(flows, sess, "", ""), false
}

// errcodeOtherUser is runStage's answer to a stage completed as another
// user; runUIA answers it 403 M_FORBIDDEN instead of a new challenge.
const errcodeOtherUser = "other_user"

// runStage checks one stage. A non-empty errcode is a failed attempt.
func (ac *accounts) runStage(ctx context.Context, auth *authDict, dev *httpapi.Device, sess *storage.UIASession) (errcode, msg string, err error) {
	switch auth.Type {
	case stageDummy:
		return "", "", nil
	case stagePassword:
		if dev == nil {
			return "M_UNRECOGNIZED", "m.login.password is only for authenticated requests", nil
		}
		who := auth.User
		if auth.Identifier != nil {
			if auth.Identifier.Type != "m.id.user" {
				return "M_UNRECOGNIZED", "only m.id.user identifiers are supported", nil
			}
			who = auth.Identifier.User
		}
		if who != "" {
			if uid, ok := ac.resolveLocalUser(who); !ok || uid != dev.UserID {
				return errcodeOtherUser, "you can only authenticate as yourself", nil
			}
		}
		acc, ok, err := ac.verifyUserPassword(ctx, dev.UserID, auth.Password)
		if err != nil {
			return "", "", err
		}
		if !ok || acc == nil {
			return "M_FORBIDDEN", "invalid password", nil
		}
		return "", "", nil
	case stageRegToken:
		tok := auth.Token
		if tok == "" {
			return "M_MISSING_PARAM", "token is required", nil
		}
		if ac.staticRegistrationToken(tok) {
			return "", "", nil
		}
		if !validRegTokenSyntax(tok) {
			return "M_FORBIDDEN", "invalid registration token", nil
		}
		reserved, err := storage.ReserveRegistrationToken(ctx, ac.db, tok, time.Now().UnixMilli())
		if err != nil {
			return "", "", err
		}
		if !reserved {
			return "M_FORBIDDEN", "invalid registration token", nil
		}
		if prev := sess.Data[uiaDataRegToken]; prev != "" {
			_ = storage.ReleaseRegistrationToken(ctx, ac.db, prev)
		}
		sess.Data[uiaDataRegToken] = tok
		return "", "", nil
	}
	return "M_UNRECOGNIZED", "unsupported auth type", nil
}

// staticRegistrationToken reports whether tok is one of the configured
// tokens (compared in constant time).
func (ac *accounts) staticRegistrationToken(tok string) bool {
	found := 0
	for _, t := range ac.opts.RegistrationTokens {
		if t != "" {
			found |= subtle.ConstantTimeCompare([]byte(t), []byte(tok))
		}
	}
	return found == 1
}

// validRegTokenSyntax is the spec's token grammar: 1-64 of [A-Za-z0-9._~-].
func validRegTokenSyntax(tok string) bool {
	if tok == "" || len(tok) > 64 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

func uiaChallenge(flows [][]string, sess *storage.UIASession, errcode, msg string) httpapi.Response {
	fl := make([]uiaFlow, len(flows))
	for i, f := range flows {
		fl[i] = uiaFlow{Stages: f}
	}
	params := sess.Params
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	completed := sess.Completed
	if completed == nil {
		completed = []string{}
	}
	return httpapi.JSON(http.StatusUnauthorized, &uiaBody{ErrCode: errcode, Err: msg, Flows: fl, Params: params, Session: sess.ID, Completed: completed})
}

func flowDone(flows [][]string, completed []string) bool {
	for _, f := range flows {
		done := true
		for _, s := range f {
			if !slices.Contains(completed, s) {
				done = false
				break
			}
		}
		if done {
			return true
		}
	}
	return false
}

func stageOffered(flows [][]string, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f, stage) {
			return true
		}
	}
	return false
}

// uiaOp names the request a session authorises: method and path without
// the API version prefix, so /r0 and /v3 share sessions.
func uiaOp(r *http.Request) string {
	p := r.URL.Path
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/v1", "/_matrix/client/unstable"} {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			p = rest
			break
		}
	}
	return r.Method + " " + p
}
