package clientapi

import (
	"enclave/internal/httpapi"
	"net"
	"net/http"
)

// The exported face of the client API's HTTP plumbing, for components that
// live in their own packages (media, admin, audit) but share its listener,
// authentication, rate limiting and metrics: *API is their httpapi.Routes.

// HandleAuthed registers an endpoint that needs a valid access token.
func (a *API) HandleAuthed(method, path, group string, h func(r *http.Request, dev *httpapi.Device) httpapi.Response) {
	a.authed(method, path, group, h)
}

// HandleOpen registers an endpoint that needs no access token.
func (a *API) HandleOpen(method, path, group string, h func(r *http.Request) httpapi.Response) {
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
func (a *API) Authenticate(r *http.Request) (dev *httpapi.Device, resp httpapi.Response, ok bool) {
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
	return dev, httpapi.Response{}, true
}
