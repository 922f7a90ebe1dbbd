package federationapi

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are created with the component and registered later (see
// RegisterMetrics), so a Federation works without a registry in tests.
type metrics struct {
	refused             *prometheus.CounterVec // direction
	inboundRequests     *prometheus.CounterVec // code
	inboundAuthFailures prometheus.Counter
	inboundPDUs         *prometheus.CounterVec // result
	queueDepth          *prometheus.GaugeVec   // destination
	lastSuccess         *prometheus.GaugeVec   // destination
	txnsSent            *prometheus.CounterVec // destination, result
}

func newMetrics() *metrics {
	const ns, sub = "enclave", "federation"
	return &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Federation requests refused by the federation policy, by direction (outbound refusals make no connection).",
		}, []string{"direction"}),
		inboundRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "inbound_requests_total",
			Help: "Requests served on the federation listener, by status code.",
		}, []string{"code"}),
		inboundAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "inbound_auth_failures_total",
			Help: "Inbound federation requests whose X-Matrix signature did not verify.",
		}),
		inboundPDUs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "inbound_pdus_total",
			Help: "PDUs received in /send transactions, by result (accepted or rejected).",
		}, []string{"result"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "queue_depth",
			Help: "PDUs and EDUs queued for a destination.",
		}, []string{"destination"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "last_success_timestamp_seconds",
			Help: "When a transaction to the destination last succeeded (Unix seconds).",
		}, []string{"destination"}),
		txnsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "transactions_sent_total",
			Help: "Outbound transaction attempts, by destination and result (ok or error).",
		}, []string{"destination", "result"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.refused, m.inboundRequests, m.inboundAuthFailures, m.inboundPDUs, m.queueDepth, m.lastSuccess, m.txnsSent}
}

// RegisterMetrics registers the federation metrics (refusals, inbound
// requests, per-destination queue depth and last success) on reg.
func (f *Federation) RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range f.metrics.collectors() {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}
