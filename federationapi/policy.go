package federationapi

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
)

// policy is the federation policy in force: whether federation is on, which
// servers we talk to, and how fast each may talk to us. It is a snapshot of
// the config taken at start and on ReloadPolicy, so the running config can
// be swapped on SIGHUP without racing the request paths that consult it.
type policy struct {
	cfg  config.Config // only Federation is set
	self spec.ServerName
}

// ErrRefused is returned (wrapped) for outbound requests the policy forbids;
// no connection is attempted.
var ErrRefused = errors.New("federation: destination refused by policy")

func newPolicy(self spec.ServerName, fc config.FederationConfig) *policy {
	p := &policy{self: self}
	p.cfg.Federation = fc
	p.cfg.Federation.AllowedServers = append([]string(nil), fc.AllowedServers...)
	p.cfg.Federation.DeniedServers = append([]string(nil), fc.DeniedServers...)
	return p
}

func (p *policy) enabled() bool { return p.cfg.Federation.Enabled }

// allowedPeer reports whether we federate with server at all (inbound or
// outbound): federation enabled, a valid server name, not denied, and on
// the allow-list when there is one.
func (p *policy) allowedPeer(server spec.ServerName) bool {
	if _, _, ok := spec.ParseAndValidateServerName(server); !ok {
		return false
	}
	return p.cfg.FederationAllowed(string(server))
}

// checkDestination is the outbound rule: an allowed peer that is not this
// server (our own requests are answered locally, never sent).
func (p *policy) checkDestination(dest spec.ServerName) error {
	switch {
	case !p.enabled():
		return fmt.Errorf("%w: federation is disabled", ErrRefused)
	case dest == p.self:
		return fmt.Errorf("%w: %s is this server", ErrRefused, dest)
	case !p.allowedPeer(dest):
		return fmt.Errorf("%w: %s is not an allowed server", ErrRefused, dest)
	}
	return nil
}

// ReloadPolicy applies a new config's federation policy (enabled, allowed
// and denied servers, rate limits) without a restart. Destinations that
// became allowed resume sending and catch up on the rooms whose events
// they were refused meanwhile; ones that became refused keep their queue
// until they are allowed again. Key notaries are fixed at start.
func (f *Federation) ReloadPolicy(cfg *config.Config) error {
	if cfg.ServerName != string(f.serverName) {
		return errors.New("federation: server_name cannot change without a restart")
	}
	f.policy.Store(newPolicy(f.serverName, cfg.Federation))
	f.limiter.configure(cfg.Federation.RequestsPerSecond, cfg.Federation.RequestBurst)
	if f.queue != nil {
		f.queue.policyChanged()
	}
	return nil
}

func (f *Federation) pol() *policy { return f.policy.Load() }

// originLimiter is a token bucket per remote server for inbound requests.
type originLimiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	buckets map[spec.ServerName]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

func newOriginLimiter(rate float64, burst int) *originLimiter {
	l := &originLimiter{buckets: map[spec.ServerName]*tokenBucket{}}
	l.configure(rate, burst)
	return l
}

func (l *originLimiter) configure(rate float64, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = rate
	l.burst = float64(max(burst, 1))
}

// take spends one token of origin's bucket. When none is left it returns
// false and how long until one is.
func (l *originLimiter) take(origin spec.ServerName, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate <= 0 {
		return true, 0
	}
	if len(l.buckets) > 10000 { // bound memory; the allow-list normally bounds origins
		l.buckets = map[spec.ServerName]*tokenBucket{}
	}
	b := l.buckets[origin]
	if b == nil {
		b = &tokenBucket{tokens: l.burst, last: now}
		l.buckets[origin] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// AuditFunc receives federation policy decisions for the audit log:
// action is "federation.inbound_refused" or "federation.outbound_refused",
// server the remote server concerned, detail a short reason.
type AuditFunc func(action string, server spec.ServerName, detail string)

// SetAuditHook installs fn to record refused federation traffic.
func (f *Federation) SetAuditHook(fn AuditFunc) { f.audit.Store(&fn) }

func (f *Federation) auditRefusal(action string, server spec.ServerName, detail string) {
	if p := f.audit.Load(); p != nil && *p != nil {
		(*p)(action, server, detail)
	}
}

// refuseOutbound counts and audits a refused outbound request.
func (f *Federation) refuseOutbound(dest spec.ServerName, err error) {
	f.metrics.refused.WithLabelValues("outbound").Inc()
	f.auditRefusal("federation.outbound_refused", dest, err.Error())
}

// refuseInbound counts and audits a refused inbound request.
func (f *Federation) refuseInbound(origin spec.ServerName, r *http.Request, reason string) {
	f.metrics.refused.WithLabelValues("inbound").Inc()
	f.auditRefusal("federation.inbound_refused", origin, reason+": "+r.Method+" "+r.URL.Path)
}
