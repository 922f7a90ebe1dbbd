package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/lru"
	"enclave/internal/perm"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// Options are the settings the client API needs from config.
type Options struct {
	ServerName          string
	BaseURL             string // advertised in /.well-known/matrix/client
	RegistrationMode    string // closed, open or token
	SharedSecret        string
	RegistrationTokens  []string
	MaxRequestBytes     int64
	AccessTokenLifetime time.Duration // 0: tokens do not expire unless refresh tokens are used
	RefreshTokenAccess  time.Duration // lifetime of access tokens that come with a refresh token
	LoginTokenLifetime  time.Duration
	RateLimit           RateLimit
	LoginGuard          LoginGuard
	TURN                TURNOptions
	Version             string
	// Audit is the process's audit log (nil: entries are written detached,
	// as by a command-line tool).
	Audit *auditapi.Log
}

// TURNOptions configures /voip/turnServer.
type TURNOptions struct {
	URIs         []string
	SharedSecret string
	TTL          time.Duration
}

// API is the client API. Build it with New and serve Handler().
type API struct {
	opts        Options
	db          *storage.DB
	rs          roomserver.API
	sync        *syncapi.Syncer
	router      *mux.Router
	limiter     *limiter
	metrics     *httpMetrics
	accounts    *accounts
	rooms       *rooms
	keys        *keys
	accountData *accountData
	delayed     *delayedEvents
	threadSubs  *threadSubs
	social      *social
	events      *events
	directory   *directory
	devices     *devices
	syncing     *syncing
	// authorizer, when set (RBAC), decides per request whether the
	// authenticated device may call the route; see SetAuthorizer.
	authorizer Authorizer
	// table lists the registered routes in order (Routes).
	table []RouteInfo
}

// Authorizer decides whether the authenticated device may make request r
// on a route that asks need; on refusal it returns the response to send.
type Authorizer func(r *http.Request, dev *httpapi.Device, need perm.Requirement) (httpapi.Response, bool)

// SetAuthorizer installs the role check (RBAC) run on every authenticated
// request after the token is verified and before the handler. Until one is
// installed, routes that need a permission are refused.
func (a *API) SetAuthorizer(fn Authorizer) {
	a.authorizer = fn
}

// SetAppServices installs the registered application services: their
// as_tokens authenticate, and their exclusive namespaces are closed to
// everyone else. Called before the listeners open.
func (a *API) SetAppServices(as AppServices) {
	a.accounts.appservices = as
	a.directory.appservices = as
	a.social.appservices = as
}

// New wires the client API over the store, the room server and the syncer.
// It fails if a route of the table carries no permission requirement.
func New(opts Options, db *storage.DB, rs roomserver.API, syncer *syncapi.Syncer, reg prometheus.Registerer) (*API, error) {
	a := &API{opts: opts, db: db, rs: rs, sync: syncer, router: newRouter(), limiter: newLimiter(opts.RateLimit), metrics: newHTTPMetrics(reg)}
	a.accounts = newAccounts(opts, db, rs)
	a.accounts.metrics = a.metrics
	a.rooms = &rooms{opts: opts, db: db, rs: rs, accounts: a.accounts}
	a.keys = &keys{opts: opts, db: db, sync: syncer, accounts: a.accounts}
	a.accountData = &accountData{db: db, sync: syncer}
	a.rooms.accountData = a.accountData
	a.accounts.accountData = a.accountData
	a.delayed = &delayedEvents{db: db, rs: rs, wake: make(chan struct{}, 1)}
	a.rooms.delayed = a.delayed
	a.threadSubs = &threadSubs{db: db, rs: rs, sync: syncer}
	a.social = &social{opts: opts, db: db, rs: rs, sync: syncer, accounts: a.accounts, authorize: a.authorize}
	a.events = &events{opts: opts, db: db, rs: rs, sync: syncer}
	a.directory = &directory{opts: opts, db: db, rs: rs, events: a.events}
	a.devices = &devices{opts: opts, db: db, accounts: a.accounts}
	a.syncing = &syncing{opts: opts, db: db, sync: syncer, social: a.social, filters: lru.New[string, *syncapi.Filter](4096)}
	a.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every authenticated-media path needs a token: without one the
		// answer is the spec's 401 even for a path no route matches (a
		// media ID with an escaped slash, say), so clients learn to log
		// in rather than that the media is gone.
		if strings.HasPrefix(r.URL.Path, "/_matrix/client/v1/media/") {
			if _, resp, ok := a.accounts.authenticate(r); !ok {
				httpapi.WriteResponse(w, resp)
				return
			}
		}
		httpapi.WriteResponse(w, httpapi.Unrecognized(http.StatusNotFound, "unrecognized request: %s %s", r.Method, r.URL.Path))
	})
	a.router.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteResponse(w, httpapi.Unrecognized(http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
	})
	for _, rows := range a.routes() {
		for _, rt := range rows {
			if err := a.add(rt); err != nil {
				return nil, err
			}
		}
	}
	a.router.Use(limitPathVars, a.devices.lastSeenMiddleware)
	return a, nil
}

// RouteInfo describes a registered route, for the route-table tests and
// documentation.
type RouteInfo struct {
	Method, Path, Group string
	Need                perm.Requirement
}

// Routes lists every route registered on the router, in order: the client
// API's table and those of the components mounted on it.
func (a *API) Routes() []RouteInfo { return slices.Clone(a.table) }

// add registers one route after checking its requirement: every route has
// one, an open route is perm.Public and an authenticated one is not.
func (a *API) add(rt route) error {
	handlers := 0
	for _, set := range []bool{rt.open != nil, rt.authed != nil, rt.raw != nil} {
		if set {
			handlers++
		}
	}
	switch {
	case handlers != 1:
		return fmt.Errorf("clientapi: route %s %s needs exactly one handler", rt.method, rt.path)
	case !rt.need.Valid():
		return fmt.Errorf("clientapi: route %s %s has no permission requirement (use perm.Public, perm.AnyUser, perm.Needs or perm.Dynamic)", rt.method, rt.path)
	case rt.open != nil && !rt.need.IsPublic():
		return fmt.Errorf("clientapi: route %s %s takes no token, so it cannot need %s: authenticate it or mark it perm.Public", rt.method, rt.path, rt.need)
	case rt.authed != nil && rt.need.IsPublic():
		return fmt.Errorf("clientapi: route %s %s takes a token: mark it perm.AnyUser rather than perm.Public", rt.method, rt.path)
	}
	for _, ri := range a.table {
		if ri.Method == rt.method && ri.Path == rt.path {
			return fmt.Errorf("clientapi: route %s %s registered twice", rt.method, rt.path)
		}
	}
	var h http.HandlerFunc
	switch {
	case rt.open != nil:
		h = a.serveOpen(rt.open)
	case rt.authed != nil:
		h = a.serveAuthed(rt.need, rt.authed)
	default:
		need, raw := rt.need, rt.raw
		h = func(w http.ResponseWriter, r *http.Request) {
			raw(w, r.WithContext(context.WithValue(r.Context(), ctxNeed, need)))
		}
	}
	a.router.Handle(rt.path, a.instrument(rt.group, h)).Methods(rt.method)
	a.table = append(a.table, RouteInfo{Method: rt.method, Path: rt.path, Group: rt.group, Need: rt.need})
	return nil
}

// Handler returns the HTTP handler with CORS, request IDs, body limits and
// metrics around every route.
func (a *API) Handler() http.Handler {
	return a.middleware(a.router)
}

// Router exposes the mux so other components (media, admin, federation
// on a shared listener) can mount their routes.
func (a *API) Router() *mux.Router { return a.router }

type ctxKey int

const (
	ctxDevice ctxKey = iota
	ctxNeed          // a raw route's requirement, for Authenticate
	ctxAccess        // the request's *accessNote, for the access log
)

func (a *API) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// CORS: browser clients (Element Web) call from another origin.
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
		h.Set("Access-Control-Expose-Headers", "Content-Disposition")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		rid := hex.EncodeToString(b)
		r = r.WithContext(httpapi.WithRequestID(r.Context(), rid))
		if a.opts.MaxRequestBytes > 0 && !strings.Contains(r.URL.Path, "/media/") {
			r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxRequestBytes)
		}
		withAccessLog(w, r, next)
	})
}

// handler is the shape of an endpoint that needs no access token.
type handler func(r *http.Request) httpapi.Response

// authedHandler is the shape of an endpoint that needs a valid access token.
type authedHandler func(r *http.Request, dev *httpapi.Device) httpapi.Response

// serveOpen serves an endpoint that needs no access token.
func (a *API) serveOpen(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if resp, limited := a.limiter.check(r, ""); limited {
			httpapi.WriteResponse(w, resp)
			return
		}
		httpapi.WriteResponse(w, a.readYourWrites(r, h))
	}
}

// readYourWrites runs a handler that may write and answers once every
// stream position its transactions took is visible (storage.TrackWrites),
// so the client's next read sees the write. Reads (GET, HEAD) skip it.
func (a *API) readYourWrites(r *http.Request, h handler) httpapi.Response {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return h(r)
	}
	ctx, written := storage.TrackWrites(r.Context())
	resp := h(r.WithContext(ctx))
	if p := written(); p > 0 {
		_ = a.db.Stream.Wait(r.Context(), p)
	}
	return resp
}

// serveAuthed serves an endpoint that needs a valid access token and
// whatever permissions need asks.
func (a *API) serveAuthed(need perm.Requirement, h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dev, resp, ok := a.accounts.authenticate(r)
		if !ok {
			httpapi.WriteResponse(w, resp)
			return
		}
		if a.accounts.rateLimited(dev) {
			if resp, limited := a.limiter.check(r, dev.UserID); limited {
				httpapi.WriteResponse(w, resp)
				return
			}
		}
		noteUser(r, dev.UserID)
		r = r.WithContext(context.WithValue(r.Context(), ctxDevice, dev))
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		if dev.DeviceID != "" {
			a.accounts.touchDevice(dev.UserID, dev.DeviceID, ip, r.UserAgent())
		}
		if resp, ok := a.authorize(r, dev, need); !ok {
			httpapi.WriteResponse(w, resp)
			return
		}
		httpapi.WriteResponse(w, a.readYourWrites(r, func(r *http.Request) httpapi.Response { return h(r, dev) }))
	}
}

// authorize runs the installed authorizer. Without one only routes that
// need no permission are served: nothing is open by omission.
func (a *API) authorize(r *http.Request, dev *httpapi.Device, need perm.Requirement) (httpapi.Response, bool) {
	if a.authorizer != nil {
		return a.authorizer(r, dev, need)
	}
	if !need.Valid() {
		return httpapi.Forbidden("this route has no permission requirement"), false
	}
	if len(need.Possible()) > 0 {
		return httpapi.Forbidden("no role check is installed, so routes that need a permission are refused"), false
	}
	return httpapi.Response{}, true
}

func (a *API) instrument(group string, fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		fn(sw, r)
		d := time.Since(start)
		a.metrics.observe(group, r.Method, sw.code, d)
	})
}

// newRouter is the client API's mux, with the route noted for the access log.
func newRouter() *mux.Router {
	r := mux.NewRouter()
	r.Use(noteRoute)
	return r
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
