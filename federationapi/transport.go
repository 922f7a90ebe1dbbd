package federationapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"enclave/internal/httpapi"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// maxSignedBody bounds the body of a signed federation request. The
// largest legitimate one is a /send transaction: 50 PDUs of at most 64 KiB
// plus 100 EDUs (to-device batches can be large).
const maxSignedBody = 8 << 20

// SignedHandler serves an authenticated federation request: origin is the
// verified requesting server and body the request's JSON (nil if empty).
// It returns the response to write.
type SignedHandler func(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response

// signedHandler serves an AccessSigned route. Before h runs, the request must pass, in order: the
// policy (federation on, origin allowed: else 403 M_FORBIDDEN, audited),
// the body size limit (413), the X-Matrix signature check against the key
// ring (401 M_UNAUTHORIZED) and the origin's rate limit (429). A verified
// request also tells the outbound queue the origin is reachable again.
// Room-level checks (m.room.server_acl, membership) are the handler's.
func (f *Federation) signedHandler(h SignedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin, body, resp, ok := f.authenticate(r)
		if !ok {
			httpapi.WriteResponse(w, resp)
			return
		}
		httpapi.WriteResponse(w, h(r, origin, body))
	}
}

// signedRawHandler is signedHandler for a handler that writes its own
// answer (multipart media); the body it is given has been read and checked.
func (f *Federation) signedRawHandler(h func(http.ResponseWriter, *http.Request, spec.ServerName)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin, _, resp, ok := f.authenticate(r)
		if !ok {
			httpapi.WriteResponse(w, resp)
			return
		}
		h(w, r, origin)
	}
}

// openHandler serves an AccessOpen route: no X-Matrix authentication, a
// bounded body. The Handler still refuses everything while federation is
// disabled.
func openHandler(h func(r *http.Request) httpapi.Response) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxSignedBody)
		httpapi.WriteResponse(w, h(r))
	}
}

// authenticate runs the checks of signedHandler: the verified origin and
// body, or false and the error response to send.
func (f *Federation) authenticate(r *http.Request) (spec.ServerName, []byte, httpapi.Response, bool) {
	claimed := claimedOrigin(r)
	if claimed == "" {
		return "", nil, httpapi.Errf(http.StatusUnauthorized, "M_UNAUTHORIZED", "missing or malformed X-Matrix authorization"), false
	}
	// The policy is checked on the claimed origin before any signature work:
	// verifying would mean fetching keys from a server we must not contact.
	if !f.pol().allowedPeer(claimed) {
		f.refuseInbound(claimed, r, "origin not allowed")
		return "", nil, httpapi.Forbidden("federation with %s is not allowed", claimed), false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
	if err != nil {
		return "", nil, httpapi.BadJSON("could not read body"), false
	}
	if len(body) > maxSignedBody {
		return "", nil, httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body exceeds %d bytes", maxSignedBody), false
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
			return "", nil, httpapi.Errf(http.StatusInternalServerError, "M_UNKNOWN", "could not verify the request signature"), false
		}
		// Bad signatures, unknown keys, a malformed X-Matrix header, a
		// destination other than us: all mean the request is not
		// authenticated.
		f.metrics.inboundAuthFailures.Inc()
		return "", nil, httpapi.Errf(http.StatusUnauthorized, "M_UNAUTHORIZED", "%s", msg), false
	}
	origin := req.Origin()
	if ok, wait := f.limiter.take(origin, time.Now()); !ok {
		return "", nil, httpapi.JSON(http.StatusTooManyRequests, &httpapi.MatrixError{ErrCode: "M_LIMIT_EXCEEDED", Err: "too many requests", RetryAfterMs: wait.Milliseconds() + 1}), false
	}
	if f.queue != nil {
		f.queue.peerAlive(origin)
	}
	if len(body) == 0 {
		body = nil
	}
	return origin, body, httpapi.Response{}, true
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
			httpapi.WriteResponse(w, httpapi.Forbidden("federation is disabled on this server"))
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
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request: %s %s", r.Method, r.URL.Path))
	})
	f.router.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method %s not allowed on %s", r.Method, r.URL.Path))
	})
}

// ClientListenerHandler answers federation and key paths that reach the
// client listener. They are served only on the federation listener, but a
// client (or a conformance suite) probing them must still get the spec's
// codes: 405 M_UNRECOGNIZED for a known path with a wrong method, 404
// M_UNRECOGNIZED otherwise. The route table is read from a Federation with
// no services: only its methods and paths are used, no handler runs.
func ClientListenerHandler() http.Handler {
	f := &Federation{router: mux.NewRouter()}
	f.setFallbackHandlers()
	for _, rt := range f.routes() {
		f.router.Handle(rt.path, f.router.NotFoundHandler).Methods(rt.method)
	}
	return f.router
}
