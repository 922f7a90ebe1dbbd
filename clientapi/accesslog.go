package clientapi

import (
	"context"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
)

// The access log: one info line per client-listener request, for
// operators and SIEMs. It carries the route template, never the raw path
// or query (an access_token may ride in the query string, and room
// aliases or user IDs in a path are the operator's data, not the log's),
// and never a header or body.

// accessNote is filled in while a request is served: the router sets the
// matched route, authentication the user.
type accessNote struct {
	route string
	user  string
}

// noteUser records the authenticated user for the access log.
func noteUser(r *http.Request, userID string) {
	if n, ok := r.Context().Value(ctxAccess).(*accessNote); ok {
		n.user = userID
	}
}

// noteRoute is a router middleware: it runs after matching, so the route
// template is known.
func noteRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, ok := r.Context().Value(ctxAccess).(*accessNote); ok {
			if rt := mux.CurrentRoute(r); rt != nil {
				n.route, _ = rt.GetPathTemplate()
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withAccessLog serves r through next and logs the outcome.
func withAccessLog(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if !logrus.IsLevelEnabled(logrus.InfoLevel) {
		next.ServeHTTP(w, r) // no line to write: no note, no fields, no wrapper
		return
	}
	start := time.Now()
	n := &accessNote{}
	r = r.WithContext(context.WithValue(r.Context(), ctxAccess, n))
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	next.ServeHTTP(sw, r)
	route := n.route
	if route == "" {
		route = "unmatched"
	}
	f := logrus.Fields{
		"request_id":  httpapi.RequestID(r.Context()),
		"method":      r.Method,
		"route":       route,
		"status":      sw.code,
		"duration_ms": time.Since(start).Milliseconds(),
	}
	if n.user != "" {
		f["user"] = n.user
	}
	logrus.WithFields(f).Info("access")
}
