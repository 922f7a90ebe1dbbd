package clientapi

import (
	"sync"
	"time"
)

// LoginGuard configures the defences of /login and /register against
// password guessing: token buckets per client IP and per target account
// (rate_limits.login_*), and an exponential lockout of an account after
// consecutive failed logins (auth.lockout_*), which holds even when rate
// limits are off.
type LoginGuard struct {
	RateLimited  bool
	PerSecond    float64
	Burst        int
	LockoutAfter int           // consecutive failures that lock the account (0: never)
	Lockout      time.Duration // first lockout; each further failure doubles it
	LockoutMax   time.Duration
}

// loginGuard holds the guard's state. It is in memory: a restart forgives
// failures, which an attacker cannot cause from outside.
type loginGuard struct {
	cfg      LoginGuard
	ip       *buckets
	account  *buckets
	mu       sync.Mutex
	failures map[string]*failures // user ID -> consecutive failures
}

type failures struct {
	count int
	until time.Time // locked until then
}

func newLoginGuard(cfg LoginGuard) *loginGuard {
	g := &loginGuard{cfg: cfg, failures: map[string]*failures{}}
	if cfg.RateLimited && cfg.PerSecond > 0 {
		g.ip, g.account = newBuckets(cfg.PerSecond, cfg.Burst), newBuckets(cfg.PerSecond, cfg.Burst)
	}
	return g
}

// allowIP spends one attempt of the client's address.
func (g *loginGuard) allowIP(ip string) (time.Duration, bool) {
	if g.ip == nil {
		return 0, true
	}
	return g.ip.take(ip)
}

// allowAccount reports whether an attempt on userID may be checked at all:
// not while the account is locked out, nor beyond its own rate.
func (g *loginGuard) allowAccount(userID string) (wait time.Duration, locked, ok bool) {
	g.mu.Lock()
	if f := g.failures[userID]; f != nil && time.Now().Before(f.until) {
		g.mu.Unlock()
		return time.Until(f.until), true, false
	}
	g.mu.Unlock()
	if g.account == nil {
		return 0, false, true
	}
	wait, ok = g.account.take(userID)
	return wait, false, ok
}

// failed counts a wrong password for userID. It returns the lockout that
// this failure starts (0: none): after LockoutAfter failures in a row,
// Lockout, doubled for each failure after that, at most LockoutMax.
func (g *loginGuard) failed(userID string) (lockout time.Duration, count int) {
	if g.cfg.LockoutAfter <= 0 || userID == "" {
		return 0, 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.failures) > 100000 {
		g.failures = map[string]*failures{} // bound memory; forgets, never locks more
	}
	f := g.failures[userID]
	if f == nil {
		f = &failures{}
		g.failures[userID] = f
	}
	f.count++
	if f.count < g.cfg.LockoutAfter {
		return 0, f.count
	}
	lockout = g.cfg.Lockout
	for i := g.cfg.LockoutAfter; i < f.count && lockout < g.cfg.LockoutMax; i++ {
		lockout *= 2
	}
	lockout = min(lockout, g.cfg.LockoutMax)
	f.until = time.Now().Add(lockout)
	return lockout, f.count
}

// succeeded forgets userID's failures.
func (g *loginGuard) succeeded(userID string) {
	g.mu.Lock()
	delete(g.failures, userID)
	g.mu.Unlock()
}
