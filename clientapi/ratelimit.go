package clientapi

import (
	"net"
	"net/http"
	"sync"
	"time"

	"enclave/internal/httpapi"
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

// buckets is a set of token buckets keyed by caller, all with one rate.
type buckets struct {
	rate  float64
	burst int
	mu    sync.Mutex
	m     map[string]*bucket
}

func newBuckets(rate float64, burst int) *buckets {
	return &buckets{rate: rate, burst: burst, m: map[string]*bucket{}}
}

// take spends one token of key's bucket; when it is empty it reports how
// long until the next token instead.
func (bs *buckets) take(key string) (wait time.Duration, ok bool) {
	now := time.Now()
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if len(bs.m) > 100000 { // bound memory under a flood of distinct callers
		bs.m = map[string]*bucket{}
	}
	b := bs.m[key]
	if b == nil {
		b = &bucket{tokens: float64(bs.burst), last: now}
		bs.m[key] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * bs.rate
	if b.tokens > float64(bs.burst) {
		b.tokens = float64(bs.burst)
	}
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / bs.rate * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

// limitExceeded is the spec's 429 with the wait in retry_after_ms.
func limitExceeded(wait time.Duration, msg string) httpapi.Response {
	resp := httpapi.Errf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "%s", msg)
	resp.Body.(*httpapi.MatrixError).RetryAfterMs = wait.Milliseconds() + 1
	return resp
}

type limiter struct {
	cfg     RateLimit
	exempt  map[string]bool
	buckets *buckets
}

func newLimiter(cfg RateLimit) *limiter {
	l := &limiter{cfg: cfg, exempt: map[string]bool{}, buckets: newBuckets(cfg.PerSecond, cfg.Burst)}
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
		key = requestIP(r)
	}
	if wait, ok := l.buckets.take(key); !ok {
		return limitExceeded(wait, "too many requests"), true
	}
	return httpapi.Response{}, false
}

// requestIP is the caller's address without the port.
func requestIP(r *http.Request) string {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return ip
}
