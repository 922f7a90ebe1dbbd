package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Extra listeners and start hooks that components add while being wired
// (the federation listener, …). Start opens them after the client and
// metrics listeners. They live beside Server, not in it, so components add
// listeners without touching server.go.

type extraListener struct {
	addr  string
	h     http.Handler
	tls   *tls.Config
	bound string
}

type startState struct {
	mu        sync.Mutex
	listeners []*extraListener
	hooks     []func() error
}

var startStates sync.Map // *Server → *startState

func (s *Server) startState() *startState {
	v, _ := startStates.LoadOrStore(s, &startState{})
	return v.(*startState)
}

// AddListener has Start serve h on addr, with TLS when tc is non-nil.
// Call it while wiring; Shutdown drains it with the others.
func (s *Server) AddListener(addr string, h http.Handler, tc *tls.Config) {
	st := s.startState()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.listeners = append(st.listeners, &extraListener{addr: addr, h: h, tls: tc})
}

// OnStart has Start run fn once the listeners are open (e.g. to begin
// background delivery only when the server really runs). An error fails
// Start.
func (s *Server) OnStart(fn func() error) {
	st := s.startState()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hooks = append(st.hooks, fn)
}

// ListenerAddr returns the address an added listener is bound to (useful
// when addr had port 0), or "" if it is not listening.
func (s *Server) ListenerAddr(addr string) string {
	st := s.startState()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, l := range st.listeners {
		if l.addr == addr {
			return l.bound
		}
	}
	return ""
}

// startExtra opens the added listeners and runs the start hooks.
func (s *Server) startExtra() error {
	st := s.startState()
	st.mu.Lock()
	listeners := st.listeners
	hooks := st.hooks
	st.mu.Unlock()
	s.OnShutdown(func() { startStates.Delete(s) })
	for _, el := range listeners {
		l, err := net.Listen("tcp", el.addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", el.addr, err)
		}
		st.mu.Lock()
		el.bound = l.Addr().String()
		st.mu.Unlock()
		srv := &http.Server{Handler: el.h, TLSConfig: el.tls, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
		s.mu.Lock()
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
