package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// The listeners' defences against a client that holds connections open
// (issue: 3,100 trickling bodies exhausted a 3,000-descriptor limit):
// headers must arrive within headerTimeout, bodies at a minimum average
// rate (bodyGuard), one remote address holds at most a configured number
// of connections, and all listeners together stay below the descriptor
// limit with fdHeadroom descriptors left for the store, media and logs.

const (
	headerTimeout = 10 * time.Second
	idleTimeout   = 120 * time.Second
	// fdHeadroom descriptors are kept free for everything but client
	// connections (database, media files, key files, outbound federation).
	fdHeadroom = 512
)

// newHTTPServer is the http.Server every listener runs: bounded header
// reads and idle keep-alives, bodies under bodyGuard. No ReadTimeout or
// WriteTimeout: a /sync long-poll and a large download legitimately
// outlive any fixed bound, and a read deadline on a request without a body
// would cancel it.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	l := s.Config.Listen
	return &http.Server{Handler: bodyGuard(h, l.BodyTimeout.Duration, l.BodyMinRate), ReadHeaderTimeout: headerTimeout, IdleTimeout: idleTimeout, ErrorLog: httpErrorLog()}
}

// raiseFileLimit lifts the soft descriptor limit to the hard one (an
// unprivileged process may) and returns the limit now in force.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		} else {
			logrus.WithError(err).Warn("could not raise the open-file limit")
		}
	}
	return lim.Cur
}

// connGuard counts the open connections of every listener of the process,
// in total and per remote IP.
type connGuard struct {
	mu       sync.Mutex
	perIP    map[string]int
	total    int
	maxPerIP int // 0: no per-IP cap
	maxTotal int // 0: no total cap
	refused  int
}

func newConnGuard(maxPerIP int, fdLimit uint64) *connGuard {
	g := &connGuard{perIP: map[string]int{}, maxPerIP: maxPerIP}
	if fdLimit > 2*fdHeadroom {
		g.maxTotal = int(fdLimit) - fdHeadroom
	}
	return g
}

func (g *connGuard) take(ip string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if (g.maxPerIP > 0 && g.perIP[ip] >= g.maxPerIP) || (g.maxTotal > 0 && g.total >= g.maxTotal) {
		g.refused++
		if g.refused == 1 || g.refused%1000 == 0 {
			logrus.WithField("remote_ip", ip).WithField("refused", g.refused).Warn("connection limit reached: closing new connections")
		}
		return false
	}
	g.perIP[ip]++
	g.total++
	return true
}

func (g *connGuard) put(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// listen wraps l so that connections over the guard's caps are closed as
// soon as they are accepted.
func (g *connGuard) listen(l net.Listener) net.Listener { return &guardedListener{Listener: l, g: g} }

type guardedListener struct {
	net.Listener
	g *connGuard
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if !l.g.take(ip) {
			c.Close()
			continue
		}
		return &guardedConn{Conn: c, release: sync.OnceFunc(func() { l.g.put(ip) })}, nil
	}
}

func remoteIP(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type guardedConn struct {
	net.Conn
	release func()
}

func (c *guardedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// bodyGuard closes the connection of a request whose body arrives slower
// than minRate bytes per second on average once grace has passed: each
// read of the body gets the read deadline start + grace + read/minRate.
// Requests without a body are left alone (see newHTTPServer).
func bodyGuard(next http.Handler, grace time.Duration, minRate int64) http.Handler {
	if grace <= 0 || minRate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			// The first deadline is set before the handler runs: a handler
			// that never reads the body (an unknown route, a refused token)
			// leaves the server to discard it, under the same bound.
			b := &rateBody{ReadCloser: r.Body, rc: http.NewResponseController(w), start: time.Now(), grace: grace, minRate: minRate}
			_ = b.rc.SetReadDeadline(b.start.Add(grace))
			r.Body = b
		}
		next.ServeHTTP(w, r)
	})
}

type rateBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	start   time.Time
	grace   time.Duration
	minRate int64
	read    int64
	done    bool
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	allowed := b.grace + time.Duration(b.read*int64(time.Second)/b.minRate)
	_ = b.rc.SetReadDeadline(b.start.Add(allowed))
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if errors.Is(err, io.EOF) {
		// At the end of the body the connection goes back to the server's
		// own deadlines: a deadline left behind would cancel the request
		// while its handler still runs. After any other error the deadline
		// stays, so that the server's discard of an unread rest cannot
		// block on a trickle either.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
