package clientapi

import (
	"net"
	"net/http"
)

// The exported face of the client API's HTTP plumbing, for components that
// live in their own packages (media, admin, audit) but share its listener,
// authentication, rate limiting and metrics.

// HandleAuthed registers an endpoint that needs a valid access token.
func (a *API) HandleAuthed(method, path, group string, h func(r *http.Request, dev *Device) Response) {
	a.authed(method, path, group, h)
}

// HandleOpen registers an endpoint that needs no access token.
func (a *API) HandleOpen(method, path, group string, h func(r *http.Request) Response) {
	a.open(method, path, group, h)
}

// HandleRaw registers a handler that writes its own response (streaming
// media): it still gets CORS, request IDs and metrics; authentication is
// up to the handler via Authenticate.
func (a *API) HandleRaw(method, path, group string, h http.HandlerFunc) {
	a.router.Handle(path, a.instrument(group, h)).Methods(method)
}

// Authenticate does for a raw handler what authed routes get: it resolves
// the access token to its device, applies the rate limit and the role check
// (RBAC) and records the device as seen. On failure resp is the spec's
// error to send.
func (a *API) Authenticate(r *http.Request) (dev *Device, resp Response, ok bool) {
	if dev, resp, ok = a.accounts.authenticate(r); !ok {
		return nil, resp, false
	}
	if resp, limited := a.limiter.check(r, dev.UserID); limited {
		return nil, resp, false
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	a.accounts.touchDevice(dev.UserID, dev.DeviceID, ip, r.UserAgent())
	if a.authorizer != nil {
		if resp, ok := a.authorizer(r, dev, "media"); !ok {
			return nil, resp, false
		}
	}
	return dev, Response{}, true
}

// WriteResponse writes resp as JSON.
func WriteResponse(w http.ResponseWriter, resp Response) { writeResponse(w, resp) }

// DecodeJSON reads a JSON body into v (see decodeJSON).
func DecodeJSON(r *http.Request, v any) (Response, bool) { return decodeJSON(r, v) }

// ReadJSONObject reads a body that must be a JSON object.
func ReadJSONObject(r *http.Request) ([]byte, Response, bool) { return readJSONObject(r) }

// Vars returns the route's path variables.
func Vars(r *http.Request) map[string]string { return vars(r) }
