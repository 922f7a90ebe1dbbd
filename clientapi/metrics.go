package clientapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics counts requests and their latency per endpoint group, and
// what operators watch for attacks: refused logins, lockouts and rate
// limiting.
type httpMetrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	rateLimited   *prometheus.CounterVec
	loginFailures *prometheus.CounterVec
	lockouts      prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "enclave", Subsystem: "clientapi", Name: "requests_total",
			Help: "Client-Server API requests by endpoint group, method and status.",
		}, []string{"group", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "enclave", Subsystem: "clientapi", Name: "request_duration_seconds",
			Help:    "Client-Server API request latency by endpoint group.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"group"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "enclave", Subsystem: "clientapi", Name: "rate_limited_total",
			Help: "Client-Server API requests refused with 429 M_LIMIT_EXCEEDED, by endpoint group.",
		}, []string{"group"}),
		loginFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "enclave", Name: "login_failures_total",
			Help: "Refused logins by reason (invalid_credentials, locked_out, rate_limited, deactivated, ...).",
		}, []string{"reason"}),
		lockouts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "enclave", Name: "login_lockouts_total",
			Help: "Accounts locked after consecutive failed logins (auth.lockout_*).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.rateLimited, m.loginFailures, m.lockouts)
	}
	return m
}

func (m *httpMetrics) observe(group, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(group, method, strconv.Itoa(code)).Inc()
	if code == 429 {
		m.rateLimited.WithLabelValues(group).Inc()
	}
	if group != "sync" { // long-polls would swamp the histogram
		m.latency.WithLabelValues(group).Observe(d.Seconds())
	}
}
