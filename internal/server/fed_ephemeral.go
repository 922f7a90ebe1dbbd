package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"enclave/federationapi"
	"enclave/syncapi"
)

// Typing, receipts and presence over federation, as the client API's
// requests cause them: a client-API middleware sees a successful PUT
// …/typing and sends the typing EDU; a receipt or presence change kicks
// federation's tailer, which reads them back from the stream.

// Route kinds the middleware acts on.
const (
	routeOther = iota
	routeTyping
	routeReceipt
	routePresence
)

func classifyRoute(method, tmpl string) int {
	switch {
	case method == http.MethodPut && strings.HasSuffix(tmpl, "/rooms/{roomId}/typing/{userId}"):
		return routeTyping
	case method == http.MethodPost && (strings.HasSuffix(tmpl, "/rooms/{roomId}/receipt/{receiptType}/{eventId}") || strings.HasSuffix(tmpl, "/rooms/{roomId}/read_markers")):
		return routeReceipt
	case method == http.MethodPut && strings.HasSuffix(tmpl, "/presence/{userId}/status"):
		return routePresence
	}
	return routeOther
}

// Typing timeouts as the client API applies them.
const (
	typingDefaultTimeout = 30 * time.Second
	typingMaxTimeout     = 2 * time.Minute
	typingBodyLimit      = 4 << 10
)

// fedEphemeralMiddleware watches the client API's typing, receipt and
// presence requests; after a successful one it tells federation.
func fedEphemeralMiddleware(f *federationapi.Federation, timers *typingTimers) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPut && r.Method != http.MethodPost {
				next.ServeHTTP(w, r)
				return
			}
			tmpl := ""
			if route := mux.CurrentRoute(r); route != nil {
				tmpl, _ = route.GetPathTemplate()
			}
			kind := classifyRoute(r.Method, tmpl)
			if kind == routeOther {
				next.ServeHTTP(w, r)
				return
			}
			var body bytes.Buffer
			if kind == routeTyping && r.Body != nil {
				r.Body = teeBody{io.TeeReader(r.Body, &capWriter{&body, typingBodyLimit}), r.Body}
			}
			sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
			next.ServeHTTP(sw, r)
			if sw.code != http.StatusOK {
				return
			}
			switch kind {
			case routeReceipt, routePresence:
				f.KickEphemeral()
			case routeTyping:
				var req struct {
					Typing  bool   `json:"typing"`
					Timeout *int64 `json:"timeout"`
				}
				if json.Unmarshal(body.Bytes(), &req) != nil {
					return
				}
				v := mux.Vars(r)
				roomID, userID := v["roomId"], v["userId"]
				timeout := typingDefaultTimeout
				if req.Timeout != nil {
					timeout = min(time.Duration(*req.Timeout)*time.Millisecond, typingMaxTimeout)
				}
				timers.set(roomID, userID, req.Typing, timeout)
				ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
				defer cancel()
				if err := f.SendTyping(ctx, roomID, userID, req.Typing); err != nil {
					logrus.WithError(err).WithField("room_id", roomID).Warn("federation: sending typing")
				}
			}
		})
	}
}

// typingTimers tells other servers when a local user's typing times out
// here without an explicit stop (they would otherwise wait for their own,
// longer, timeout).
type typingTimers struct {
	f      *federationapi.Federation
	typing *syncapi.Typing
	mu     sync.Mutex
	timers map[string]*time.Timer
}

func (t *typingTimers) set(roomID, userID string, typing bool, timeout time.Duration) {
	key := roomID + "|" + userID
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.timers[key]; old != nil {
		old.Stop()
		delete(t.timers, key)
	}
	if !typing {
		return
	}
	var timer *time.Timer
	timer = time.AfterFunc(timeout+500*time.Millisecond, func() {
		t.mu.Lock()
		current := t.timers[key] == timer
		if current {
			delete(t.timers, key)
		}
		t.mu.Unlock()
		if !current {
			return
		}
		for _, u := range t.typing.Users(roomID) {
			if u == userID {
				return // typing again
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := t.f.SendTyping(ctx, roomID, userID, false); err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Debug("federation: sending typing timeout")
		}
	})
	t.timers[key] = timer
}

func (t *typingTimers) stopAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, timer := range t.timers {
		timer.Stop()
		delete(t.timers, k)
	}
}

type teeBody struct {
	io.Reader
	io.Closer
}

// capWriter keeps the first max bytes written to it.
type capWriter struct {
	buf *bytes.Buffer
	max int
}

func (c *capWriter) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}
