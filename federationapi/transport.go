package federationapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"
)

// maxSignedBody bounds the body of a signed federation request. The
// largest legitimate one is a /send transaction: 50 PDUs of at most 64 KiB
// plus 100 EDUs (to-device batches can be large).
const maxSignedBody = 8 << 20

// MatrixError is the spec's error body.
type MatrixError struct {
	ErrCode      string `json:"errcode"`
	Err          string `json:"error"`
	RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
}

func (e *MatrixError) Error() string { return e.ErrCode + ": " + e.Err }

// errResp builds a handler result carrying a Matrix error.
func errResp(code int, errcode, format string, args ...any) (int, any) {
	return code, &MatrixError{ErrCode: errcode, Err: fmt.Sprintf(format, args...)}
}

// Shorthands for the errors handlers return most.
func forbidden(format string, args ...any) (int, any) {
	return errResp(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func notFound(format string, args ...any) (int, any) {
	return errResp(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func badJSON(format string, args ...any) (int, any) {
	return errResp(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func invalidParam(format string, args ...any) (int, any) {
	return errResp(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}

// internalError logs err and answers 500 M_UNKNOWN without detail.
func internalError(r *http.Request, err error) (int, any) {
	logrus.WithError(err).WithField("path", r.URL.Path).Error("federation: internal error")
	return errResp(http.StatusInternalServerError, "M_UNKNOWN", "internal server error")
}

// writeJSON writes a handler result.
func writeJSON(w http.ResponseWriter, code int, body any) {
	var b []byte
	switch v := body.(type) {
	case nil:
		b = []byte("{}")
	case json.RawMessage:
		b = v
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			logrus.WithError(err).Error("federation: encoding response")
			code, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"internal server error"}`)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// SignedHandler serves an authenticated federation request: origin is the
// verified requesting server and body the request's JSON (nil if empty).
// It returns the status and the body to encode as JSON.
type SignedHandler func(r *http.Request, origin spec.ServerName, body []byte) (int, any)

// signedHandler serves an AccessSigned route. Before h runs, the request must pass, in order: the
// policy (federation on, origin allowed: else 403 M_FORBIDDEN, audited),
// the body size limit (413), the X-Matrix signature check against the key
// ring (401 M_UNAUTHORIZED) and the origin's rate limit (429). A verified
// request also tells the outbound queue the origin is reachable again.
// Room-level checks (m.room.server_acl, membership) are the handler's.
func (f *Federation) signedHandler(h SignedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin, body, code, resp := f.authenticate(r)
		if code != 0 {
			writeJSON(w, code, resp)
			return
		}
		code, resp = h(r, origin, body)
		writeJSON(w, code, resp)
	}
}

// signedRawHandler is signedHandler for a handler that writes its own
// answer (multipart media); the body it is given has been read and checked.
func (f *Federation) signedRawHandler(h func(http.ResponseWriter, *http.Request, spec.ServerName)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin, _, code, resp := f.authenticate(r)
		if code != 0 {
			writeJSON(w, code, resp)
			return
		}
		h(w, r, origin)
	}
}

// openHandler serves an AccessOpen route: no X-Matrix authentication, a
// bounded body. The Handler still refuses everything while federation is
// disabled.
func openHandler(h func(r *http.Request) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxSignedBody)
		code, resp := h(r)
		writeJSON(w, code, resp)
	}
}

// authenticate runs the checks of signedHandler. A non-zero code is the
// error response to send.
func (f *Federation) authenticate(r *http.Request) (spec.ServerName, []byte, int, any) {
	claimed := claimedOrigin(r)
	if claimed == "" {
		code, resp := errResp(http.StatusUnauthorized, "M_UNAUTHORIZED", "missing or malformed X-Matrix authorization")
		return "", nil, code, resp
	}
	// The policy is checked on the claimed origin before any signature work:
	// verifying would mean fetching keys from a server we must not contact.
	if !f.pol().allowedPeer(claimed) {
		f.refuseInbound(claimed, r, "origin not allowed")
		code, resp := forbidden("federation with %s is not allowed", claimed)
		return "", nil, code, resp
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
	if err != nil {
		code, resp := badJSON("could not read body")
		return "", nil, code, resp
	}
	if len(body) > maxSignedBody {
		code, resp := errResp(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body exceeds %d bytes", maxSignedBody)
		return "", nil, code, resp
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	req, res := fclient.VerifyHTTPRequest(r, time.Now(), f.serverName, nil, f.keys)
	if req == nil {
		msg := "invalid request signature"
		var m struct {
			Message string `json:"message"`
		}
		if b, err := json.Marshal(res.JSON); err == nil && json.Unmarshal(b, &m) == nil && m.Message != "" {
			msg = m.Message
		}
		if res.Code >= 500 {
			code, resp := errResp(http.StatusInternalServerError, "M_UNKNOWN", "could not verify the request signature")
			return "", nil, code, resp
		}
		// Bad signatures, unknown keys, a malformed X-Matrix header, a
		// destination other than us: all mean the request is not
		// authenticated.
		f.metrics.inboundAuthFailures.Inc()
		code, resp := errResp(http.StatusUnauthorized, "M_UNAUTHORIZED", "%s", msg)
		return "", nil, code, resp
	}
	origin := req.Origin()
	if ok, wait := f.limiter.take(origin, time.Now()); !ok {
		return "", nil, http.StatusTooManyRequests, &MatrixError{ErrCode: "M_LIMIT_EXCEEDED", Err: "too many requests", RetryAfterMs: wait.Milliseconds() + 1}
	}
	if f.queue != nil {
		f.queue.peerAlive(origin)
	}
	if len(body) == 0 {
		body = nil
	}
	return origin, body, 0, nil
}

// claimedOrigin returns the origin named by the request's X-Matrix
// header(s), or "" if there is none or they disagree.
func claimedOrigin(r *http.Request) spec.ServerName {
	var origin spec.ServerName
	for _, h := range r.Header.Values("Authorization") {
		scheme, o, _, _, _ := fclient.ParseAuthorization(h)
		if scheme != "X-Matrix" {
			continue
		}
		if o == "" || (origin != "" && o != origin) {
			return ""
		}
		origin = o
	}
	return origin
}

// Handler is the federation listener's handler. While federation is
// disabled (federation.enabled false, e.g. after a reload) it refuses
// every request.
func (f *Federation) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.pol().enabled() {
			f.metrics.refused.WithLabelValues("inbound").Inc()
			code, resp := forbidden("federation is disabled on this server")
			writeJSON(w, code, resp)
			return
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		f.router.ServeHTTP(sw, r)
		f.metrics.inboundRequests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// setFallbackHandlers make unknown routes answer Matrix errors.
func (f *Federation) setFallbackHandlers() {
	f.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, resp := errResp(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request: %s %s", r.Method, r.URL.Path)
		writeJSON(w, code, resp)
	})
	f.router.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, resp := errResp(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method %s not allowed on %s", r.Method, r.URL.Path)
		writeJSON(w, code, resp)
	})
}
