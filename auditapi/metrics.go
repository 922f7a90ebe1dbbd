package auditapi

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// logMetrics tell an operator the trail keeps up: entries chained,
// checkpoints signed, and how far behind the sealer runs (an entry is
// committed with its action but chained and signed a moment later).
type logMetrics struct {
	sealed      prometheus.Counter
	checkpoints prometheus.Counter
	lag         prometheus.Gauge
}

func newLogMetrics() *logMetrics {
	const ns, sub = "enclave", "audit"
	return &logMetrics{
		sealed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "entries_total",
			Help: "Audit entries written and chained into the hash chain.",
		}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "checkpoints_total",
			Help: "Signed audit checkpoints written.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "sealer_lag_seconds",
			Help: "Age of the oldest entry the last sealing pass chained (0: nothing was waiting).",
		}),
	}
}

// RegisterMetrics registers the audit trail's metrics on reg.
func (l *Log) RegisterMetrics(reg prometheus.Registerer) error {
	return errors.Join(reg.Register(l.metrics.sealed), reg.Register(l.metrics.checkpoints), reg.Register(l.metrics.lag))
}
