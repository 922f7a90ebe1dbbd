package clientapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics counts requests and their latency per endpoint group.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
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
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency)
	}
	return m
}

func (m *httpMetrics) observe(group, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(group, method, strconv.Itoa(code)).Inc()
	if group != "sync" { // long-polls would swamp the histogram
		m.latency.WithLabelValues(group).Observe(d.Seconds())
	}
}
