// Package clientapi is the Client-Server API: a thin HTTP face that checks
// who is asking and what they sent, then hands the work to the room server,
// the sync stream and the store.
package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/lru"
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
	social      *social
	events      *events
	directory   *directory
	devices     *devices
	syncing     *syncing
	// authorizer, when set (RBAC), decides per request whether the
	// authenticated device may call the route; see SetAuthorizer.
	authorizer func(r *http.Request, dev *httpapi.Device, group string) (httpapi.Response, bool)
}

// SetAuthorizer installs the role check run on every authenticated request
// after the token is verified and before the handler. The route's path
// template is available through mux.CurrentRoute(r).
func (a *API) SetAuthorizer(fn func(r *http.Request, dev *httpapi.Device, group string) (httpapi.Response, bool)) {
	a.authorizer = fn
}

// New wires the client API over the store, the room server and the syncer.
func New(opts Options, db *storage.DB, rs roomserver.API, syncer *syncapi.Syncer, reg prometheus.Registerer) *API {
	a := &API{opts: opts, db: db, rs: rs, sync: syncer, router: mux.NewRouter(), limiter: newLimiter(opts.RateLimit), metrics: newHTTPMetrics(reg)}
	a.accounts = newAccounts(opts, db, rs)
	a.rooms = &rooms{opts: opts, db: db, rs: rs, accounts: a.accounts}
	a.keys = &keys{opts: opts, db: db, sync: syncer, accounts: a.accounts}
	a.accountData = &accountData{db: db, sync: syncer}
	a.social = &social{opts: opts, db: db, rs: rs, sync: syncer, accounts: a.accounts}
	a.events = &events{opts: opts, db: db, rs: rs, sync: syncer}
	a.directory = &directory{opts: opts, db: db, rs: rs, events: a.events}
	a.devices = &devices{opts: opts, db: db, accounts: a.accounts}
	a.syncing = &syncing{opts: opts, db: db, sync: syncer, social: a.social, filters: lru.New[string, *syncapi.Filter](4096)}
	a.router.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteResponse(w, httpapi.Unrecognized(http.StatusNotFound, "unrecognized request: %s %s", r.Method, r.URL.Path))
	})
	a.router.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteResponse(w, httpapi.Unrecognized(http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
	})
	a.routes()
	return a
}

// routes registers every Client-Server API endpoint group, each a method
// in the file of its handlers. The order is behaviour: gorilla/mux serves
// the first route that matches.
func (a *API) routes() {
	a.discoveryRoutes()
	a.accountRoutes()
	a.roomRoutes()
	a.syncRoutes()
	a.accountDataRoutes()
	a.deviceRoutes()
	a.hierarchyRoutes()
	a.keyBackupRoutes()
	a.keysRoutes()
	a.knockRoutes()
	a.notificationRoutes()
	a.openIDRoutes()
	a.presenceRoutes()
	a.profileRoutes()
	a.publicRoomsRoutes()
	a.pushRuleRoutes()
	a.receiptRoutes()
	a.relationsRoutes()
	a.reportRoutes()
	a.searchRoutes()
	a.slidingRoutes()
	a.summaryRoutes()
	a.tagRoutes()
	a.thirdPartyRoutes()
	a.toDeviceRoutes()
	a.typingRoutes()
	a.upgradeRoutes()
	a.userDirectoryRoutes()
	a.voipRoutes()
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

const ctxDevice ctxKey = iota

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
		next.ServeHTTP(w, r)
	})
}

// handler is the shape of an endpoint that needs no access token.
type handler func(r *http.Request) httpapi.Response

// authedHandler is the shape of an endpoint that needs a valid access token.
type authedHandler func(r *http.Request, dev *httpapi.Device) httpapi.Response

// open registers an endpoint that needs no access token.
func (a *API) open(method, path, group string, h handler) {
	a.router.Handle(path, a.instrument(group, func(w http.ResponseWriter, r *http.Request) {
		if resp, limited := a.limiter.check(r, ""); limited {
			httpapi.WriteResponse(w, resp)
			return
		}
		httpapi.WriteResponse(w, h(r))
	})).Methods(method)
}

// authed registers an endpoint that needs a valid access token.
func (a *API) authed(method, path, group string, h authedHandler) {
	a.router.Handle(path, a.instrument(group, func(w http.ResponseWriter, r *http.Request) {
		dev, resp, ok := a.accounts.authenticate(r)
		if !ok {
			httpapi.WriteResponse(w, resp)
			return
		}
		if resp, limited := a.limiter.check(r, dev.UserID); limited {
			httpapi.WriteResponse(w, resp)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxDevice, dev))
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		a.accounts.touchDevice(dev.UserID, dev.DeviceID, ip, r.UserAgent())
		if a.authorizer != nil {
			if resp, ok := a.authorizer(r, dev, group); !ok {
				httpapi.WriteResponse(w, resp)
				return
			}
		}
		httpapi.WriteResponse(w, h(r, dev))
	})).Methods(method)
}

func (a *API) instrument(group string, fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		fn(sw, r)
		d := time.Since(start)
		a.metrics.observe(group, r.Method, sw.code, d)
		logrus.WithFields(logrus.Fields{
			"request_id": httpapi.RequestID(r.Context()),
			"method":     r.Method,
			"path":       r.URL.Path,
			"status":     sw.code,
			"ms":         d.Milliseconds(),
		}).Debug("request")
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

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
