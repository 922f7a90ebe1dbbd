package server

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"enclave/adminapi"
	"enclave/appservice"
	"enclave/auditapi"
	"enclave/auditapi/siem"
	"enclave/clientapi"
	"enclave/config"
	"enclave/federationapi"
	importsvc "enclave/importer/service"
	pushnotify "enclave/internal/pushrules/notifier"
	"enclave/internal/rbac"
	"enclave/mediaapi"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// Version is the server version (semantic: RELEASE-dev+COMMIT between
// releases), set at build time with -ldflags by the Makefile; a plain
// go build reports the release with -dev.
var Version = "0.1.0-dev"

// Server is one running homeserver process. It holds every component as a
// field; New builds them in one ordered sequence (assembly.go).
type Server struct {
	Config   *config.Config
	DB       *storage.DB
	Rooms    *roomserver.RoomServer
	Sync     *syncapi.Syncer
	Client   *clientapi.API
	Registry *prometheus.Registry

	// AppServices are the registered application services (always
	// present, possibly with none).
	AppServices *appservice.Service
	// Media is the media repository (always present).
	Media *mediaapi.Repo
	// Import is the admin endpoint importing Slack and Mattermost exports.
	Import *importsvc.Service
	// Federation is the federation component, nil when
	// federation.enabled is false. cmd/enclave's SIGHUP reload calls its
	// ReloadPolicy.
	Federation *federationapi.Federation
	// RBAC is the role-based access control of every authenticated
	// client-API request.
	RBAC *rbac.RBAC
	// Admin is the admin API (and the retention purge job).
	Admin *adminapi.API
	// Audit is the audit trail.
	Audit *auditapi.Log
	// SIEM streams audit entries to the configured syslog collector and
	// file (nil when audit.siem configures neither).
	SIEM *siem.Streamer
	// Push evaluates push rules after each event and wakes /sync once the
	// event's unread counts are stored.
	Push *pushnotify.Notifier

	KeyID string
	Key   ed25519.PrivateKey
	// signingKeyCreated: New generated the key; keyOps are the key
	// operations of this start, recorded once the log is open.
	signingKeyCreated bool
	keyOps            []auditapi.Entry

	// fedEphemeral sends local typing, receipts and presence to other
	// servers (and times typing out towards them).
	fedEphemeral *federationapi.EphemeralSender

	mu        sync.Mutex
	servers   []*http.Server
	listeners []net.Listener
	closers   []func()
	// unlock releases the store's serving lock (storage.LockForServing),
	// taken before anything else touches the store.
	unlock func()
	// guard caps the connections of all listeners (guard.go).
	guard *connGuard
	// extra are the component listeners Start opens after the client and
	// metrics ones; startHooks run once all listeners are open.
	extra      []*extraListener
	startHooks []func() error
}

// New opens the store and builds the components (see build for the
// order). It does not listen yet.
func New(ctx context.Context, cfg *config.Config) (*Server, error) {
	keyID, key, created, err := config.LoadOrCreateSigningKey(cfg.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if created {
		logrus.WithField("path", cfg.SigningKey).WithField("key_id", keyID).Info("generated a new server signing key")
	}
	db, err := storage.Open(ctx, cfg.Database.URL, storage.Options{
		MaxOpenConns:    cfg.Database.MaxOpenConns,
		MaxIdleConns:    cfg.Database.MaxIdleConns,
		ConnMaxLifetime: cfg.Database.ConnMaxLifetime.Duration,
	})
	if err != nil {
		return nil, err
	}
	unlock, err := db.LockForServing(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Server{Config: cfg, DB: db, KeyID: keyID, Key: key, Registry: prometheus.NewRegistry(), unlock: unlock, signingKeyCreated: created}
	if err := s.build(ctx); err != nil {
		if s.Audit != nil {
			s.Audit.Close() // stops its sealer before the store closes
		}
		unlock()
		db.Close()
		return nil, err
	}
	return s, nil
}

// OnShutdown has Shutdown run fn after the listeners drain, before the
// store closes; closers run in the order they were added.
func (s *Server) OnShutdown(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, fn)
}

// ClientOptions maps config to the client API's options.
func ClientOptions(cfg *config.Config) clientapi.Options {
	return clientapi.Options{
		ServerName:          cfg.ServerName,
		BaseURL:             cfg.ClientBaseURL(),
		RegistrationMode:    cfg.Registration.Mode,
		SharedSecret:        cfg.Registration.SharedSecret,
		RegistrationTokens:  cfg.Registration.Tokens,
		MaxRequestBytes:     cfg.Limits.MaxRequestBytes,
		AccessTokenLifetime: cfg.Auth.AccessTokenLifetime.Duration,
		RefreshTokenAccess:  cfg.Auth.RefreshAccessTokenLifetime.Duration,
		LoginTokenLifetime:  cfg.Auth.LoginTokenLifetime.Duration,
		RateLimit: clientapi.RateLimit{
			Enabled:     cfg.RateLimits.Enabled,
			PerSecond:   cfg.RateLimits.PerSecond,
			Burst:       cfg.RateLimits.Burst,
			ExemptUsers: cfg.RateLimits.ExemptUsers,
		},
		LoginGuard: clientapi.LoginGuard{
			RateLimited:  cfg.RateLimits.Enabled,
			PerSecond:    cfg.RateLimits.LoginPerSecond,
			Burst:        cfg.RateLimits.LoginBurst,
			LockoutAfter: cfg.Auth.LockoutAfterFailures,
			Lockout:      cfg.Auth.Lockout.Duration,
			LockoutMax:   cfg.Auth.LockoutMax.Duration,
		},
		TURN: clientapi.TURNOptions{
			URIs:         cfg.TURN.URIs,
			SharedSecret: cfg.TURN.SharedSecret,
			TTL:          cfg.TURN.TTL.Duration,
		},
		Version: Version,
	}
}

func (s *Server) registerMetrics() {
	reg := s.Registry
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "enclave", Name: "stream_position", Help: "Highest visible position of the sync stream.",
	}, func() float64 { return float64(s.DB.Stream.Current()) }))
	for kind, name := range map[syncapi.WaiterKind]string{syncapi.SyncWaiter: "sync", syncapi.SlidingWaiter: "sliding"} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "enclave", Name: "sync_waiters", Help: "Long-polls waiting now, by kind: sync (/sync) or sliding (MSC4186).",
			ConstLabels: prometheus.Labels{"kind": name},
		}, func() float64 { return float64(s.Sync.Waiters(kind)) }))
	}
	if err := errors.Join(s.Rooms.RegisterMetrics(reg), s.Audit.RegisterMetrics(reg)); err != nil {
		panic(err) // a name registered twice: a programming error, as MustRegister treats it
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "enclave", Subsystem: "store", Name: "open_connections", Help: "Open store connections.",
	}, func() float64 { return float64(s.DB.Stats().OpenConnections) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "enclave", Subsystem: "store", Name: "in_use_connections", Help: "Store connections in use.",
	}, func() float64 { return float64(s.DB.Stats().InUse) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "enclave", Subsystem: "store", Name: "wait_seconds_total", Help: "Time spent waiting for a store connection.",
	}, func() float64 { return s.DB.Stats().WaitDuration.Seconds() }))
}

// Handler is the client listener's handler: the client API plus /health.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.clientHealth)
	mux.Handle("/", s.Client.Handler())
	// Federation is served on its own listener; here its paths only get
	// the spec's unknown-endpoint and wrong-method answers.
	mux.Handle("/_matrix/federation/", federationapi.ClientListenerHandler())
	mux.Handle("/_matrix/key/", federationapi.ClientListenerHandler())
	return mux
}

// clientHealth is /health on the client listener, which anyone can reach:
// just up or not, so it tells a scanner nothing about the store behind it.
// The metrics listener's /health (health) has the details.
func (s *Server) clientHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	if err := s.DB.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"unavailable"}`))
		return
	}
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}

// health answers liveness and store readiness, for the operator, with the
// version and store kind a monitoring check wants to see.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	body := map[string]any{"status": "ok", "store": "ok", "database": s.Config.DatabaseDialect(), "version": Version}
	if err := s.DB.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		body["status"], body["store"] = "unavailable", "unreachable"
	}
	_ = json.NewEncoder(w).Encode(body)
}

// Serve listens on l with h until Shutdown.
func (s *Server) serve(l net.Listener, h http.Handler, tlsOn bool) {
	srv := s.newHTTPServer(h)
	l = s.guard.listen(l)
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	go func() {
		var err error
		if tlsOn {
			tc, terr := s.Config.ClientTLSConfig()
			if terr != nil {
				logrus.WithError(terr).Error("client TLS")
				return
			}
			srv.TLSConfig = tc
			err = srv.ServeTLS(l, "", "")
		} else {
			err = srv.Serve(l)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logrus.WithError(err).Error("listener stopped")
		}
	}()
}

// Start opens the configured listeners (client, metrics) and returns the
// client listener's address.
func (s *Server) Start() (string, error) {
	s.guard = newConnGuard(s.Config.Listen.MaxConnectionsPerIP, raiseFileLimit())
	l, err := net.Listen("tcp", s.Config.Listen.Client)
	if err != nil {
		return "", fmt.Errorf("listen.client: %w", err)
	}
	s.serve(l, s.Handler(), s.Config.Listen.ClientTLS)
	if s.Config.Listen.Metrics != "" {
		ml, err := net.Listen("tcp", s.Config.Listen.Metrics)
		if err != nil {
			return "", fmt.Errorf("listen.metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/health", s.health)
		// Profiles for performance work, on the operator-only listener.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.serve(ml, mux, false)
	}
	if err := s.startExtra(); err != nil { // listeners.go: components' listeners and start hooks
		return "", err
	}
	return l.Addr().String(), nil
}

// Shutdown drains in-flight requests (up to ctx's deadline) and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	closers := s.closers
	s.mu.Unlock()
	for _, c := range closers {
		c()
	}
	s.unlock()
	errs = append(errs, s.DB.Close())
	return errors.Join(errs...)
}
