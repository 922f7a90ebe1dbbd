package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/sirupsen/logrus"
)

// Extra listeners and start hooks that the assembly adds while building
// components (the federation listener, …). Start opens them after the
// client and metrics listeners.

type extraListener struct {
	addr  string
	h     http.Handler
	tls   *tls.Config
	bound string
}

// AddListener has Start serve h on addr, with TLS when tc is non-nil.
// Call it while building; Shutdown drains it with the others.
func (s *Server) AddListener(addr string, h http.Handler, tc *tls.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = append(s.extra, &extraListener{addr: addr, h: h, tls: tc})
}

// OnStart has Start run fn once the listeners are open (e.g. to begin
// background delivery only when the server really runs). An error fails
// Start.
func (s *Server) OnStart(fn func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startHooks = append(s.startHooks, fn)
}

// ListenerAddr returns the address an added listener is bound to (useful
// when addr had port 0), or "" if it is not listening.
func (s *Server) ListenerAddr(addr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.extra {
		if l.addr == addr {
			return l.bound
		}
	}
	return ""
}

// startExtra opens the added listeners and runs the start hooks.
func (s *Server) startExtra() error {
	s.mu.Lock()
	listeners := s.extra
	hooks := s.startHooks
	s.mu.Unlock()
	for _, el := range listeners {
		l, err := net.Listen("tcp", el.addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", el.addr, err)
		}
		srv := s.newHTTPServer(el.h)
		srv.TLSConfig = el.tls
		l = s.guard.listen(l)
		s.mu.Lock()
		el.bound = l.Addr().String()
		s.servers = append(s.servers, srv)
		s.listeners = append(s.listeners, l)
		s.mu.Unlock()
		go func() {
			var err error
			if el.tls != nil {
				err = srv.ServeTLS(l, "", "")
			} else {
				err = srv.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				logrus.WithError(err).WithField("addr", el.addr).Error("listener stopped")
			}
		}()
	}
	for _, fn := range hooks {
		if err := fn(); err != nil {
			return err
		}
	}
	return nil
}
