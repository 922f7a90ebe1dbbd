package clientapi

import (
	"net"
	"net/http"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
)

// The exported face of the client API's HTTP plumbing, for components that
// live in their own packages (media, admin, audit) but share its listener,
// authentication, rate limiting and metrics: *API is their httpapi.Routes.

// HandleAuthed registers an endpoint that needs a valid access token and
// the permissions need asks. Like the client API's own table, a route
// without a requirement is an error.
func (a *API) HandleAuthed(method, path, group string, need perm.Requirement, h func(r *http.Request, dev *httpapi.Device) httpapi.Response) error {
	return a.add(route{method: method, path: path, group: group, need: need, authed: h})
}

// HandleOpen registers an endpoint that needs no access token.
func (a *API) HandleOpen(method, path, group string, h func(r *http.Request) httpapi.Response) error {
	return a.add(route{method: method, path: path, group: group, need: perm.Public, open: h})
}

// HandleRaw registers a handler that writes its own response (streaming
// media): it still gets CORS, request IDs and metrics. A route that takes
// a token authenticates with Authenticate, which checks need; perm.Public
// marks one that takes none.
func (a *API) HandleRaw(method, path, group string, need perm.Requirement, h http.HandlerFunc) error {
	return a.add(route{method: method, path: path, group: group, need: need, raw: h})
}

// Authenticate does for a raw handler what authed routes get: it resolves
// the access token to its device, applies the rate limit and the role check
// (RBAC) against the route's requirement and records the device as seen.
// On failure resp is the spec's error to send. A handler not registered
// with HandleRaw has no requirement and is refused.
func (a *API) Authenticate(r *http.Request) (dev *httpapi.Device, resp httpapi.Response, ok bool) {
	if dev, resp, ok = a.accounts.authenticate(r); !ok {
		return nil, resp, false
	}
	noteUser(r, dev.UserID)
	if a.accounts.rateLimited(dev) {
		if resp, limited := a.limiter.check(r, dev.UserID); limited {
			return nil, resp, false
		}
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	a.accounts.touchDevice(dev.UserID, dev.DeviceID, ip, r.UserAgent())
	need, _ := r.Context().Value(ctxNeed).(perm.Requirement)
	if resp, ok := a.authorize(r, dev, need); !ok {
		return nil, resp, false
	}
	return dev, httpapi.Response{}, true
}
