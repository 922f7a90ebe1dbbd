package httpapi

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"

	"enclave/internal/perm"
)

// Device is the authenticated caller of an endpoint.
type Device struct {
	UserID        string
	DeviceID      string
	AccessTokenID int64
	IsAdmin       bool
	IsGuest       bool
	// ShadowBanned: the user's sends answer as if they worked and reach
	// no one (the admin shadow ban).
	ShadowBanned bool
	// AppService is the id of the application service whose as_token
	// made the request (the device is then none: DeviceID is empty).
	AppService string
}

// Routes is the client listener as the components that mount endpoints on
// it see it (media, admin, audit): registration with the listener's
// authentication, rate limiting and metrics, and Authenticate for raw
// handlers that write their own answer. Every route states its permission
// requirement; registering one without is an error.
type Routes interface {
	// HandleAuthed registers an endpoint that needs a valid access token
	// and what need asks.
	HandleAuthed(method, path, group string, need perm.Requirement, h func(r *http.Request, dev *Device) Response) error
	// HandleOpen registers an endpoint that needs no access token.
	HandleOpen(method, path, group string, h func(r *http.Request) Response) error
	// HandleRaw registers a handler that writes its own response; need is
	// what Authenticate checks (perm.Public for one that takes no token).
	HandleRaw(method, path, group string, need perm.Requirement, h http.HandlerFunc) error
	// Authenticate resolves the request's access token to its device and
	// applies the checks authed routes get, the route's requirement
	// included; on failure resp is the error.
	Authenticate(r *http.Request) (dev *Device, resp Response, ok bool)
}

// Vars returns the route's path variables.
func Vars(r *http.Request) map[string]string { return mux.Vars(r) }

type ctxKey int

const ctxRequestID ctxKey = iota

// WithRequestID returns ctx carrying the ID given to the request, for the
// logs of everything that serves it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxRequestID, id)
}

// RequestID returns the ID given to the request being served.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(ctxRequestID).(string)
	return s
}
