package clientapi

import (
	"enclave/internal/httpapi"
	"net"
	"net/http"
	"sync"
	"time"
)

// RateLimit configures the per-user (or per-IP when unauthenticated) token
// bucket. Exempt users (bots, bridges) skip it.
type RateLimit struct {
	Enabled     bool
	PerSecond   float64
	Burst       int
	ExemptUsers []string
}

type bucket struct {
	tokens float64
	last   time.Time
}

type limiter struct {
	cfg     RateLimit
	exempt  map[string]bool
	mu      sync.Mutex
	buckets map[string]*bucket
}

func newLimiter(cfg RateLimit) *limiter {
	l := &limiter{cfg: cfg, exempt: map[string]bool{}, buckets: map[string]*bucket{}}
	for _, u := range cfg.ExemptUsers {
		l.exempt[u] = true
	}
	return l
}

// check takes a token for the caller; limited reports M_LIMIT_EXCEEDED.
func (l *limiter) check(r *http.Request, userID string) (httpapi.Response, bool) {
	// Only writes are limited: reads (and /sync long-polls) cost the server
	// little and clients poll them by design.
	if !l.cfg.Enabled || l.cfg.PerSecond <= 0 || l.exempt[userID] || r.Method == http.MethodGet {
		return httpapi.Response{}, false
	}
	key := userID
	if key == "" {
		key, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > 100000 { // bound memory under a flood of distinct callers
		l.buckets = map[string]*bucket{}
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * l.cfg.PerSecond
	if b.tokens > float64(l.cfg.Burst) {
		b.tokens = float64(l.cfg.Burst)
	}
	b.last = now
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.cfg.PerSecond * float64(time.Second))
		resp := httpapi.Errf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "too many requests")
		resp.Body.(*httpapi.MatrixError).RetryAfterMs = wait.Milliseconds() + 1
		return resp, true
	}
	b.tokens--
	return httpapi.Response{}, false
}
