package httpapi

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"
)

// Device is the authenticated caller of an endpoint.
type Device struct {
	UserID        string
	DeviceID      string
	AccessTokenID int64
	IsAdmin       bool
	IsGuest       bool
}

// Routes is the client listener as the components that mount endpoints on
// it see it (media, admin, audit): registration with the listener's
// authentication, rate limiting and metrics, and Authenticate for raw
// handlers that write their own answer.
type Routes interface {
	// HandleAuthed registers an endpoint that needs a valid access token.
	HandleAuthed(method, path, group string, h func(r *http.Request, dev *Device) Response)
	// HandleOpen registers an endpoint that needs no access token.
	HandleOpen(method, path, group string, h func(r *http.Request) Response)
	// HandleRaw registers a handler that writes its own response.
	HandleRaw(method, path, group string, h http.HandlerFunc)
	// Authenticate resolves the request's access token to its device and
	// applies the checks authed routes get; on failure resp is the error.
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
