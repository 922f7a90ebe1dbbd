package roomserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// persistLatency is how long an event's transaction takes, from its
// begin to its commit (hooks included: audit, indexes, queues), by where
// the event came from. It is what a send waits for before its 200.
func newPersistLatency() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "enclave", Subsystem: "roomserver", Name: "event_persist_seconds",
		Help:    "Time to store one event (its transaction, hooks and commit), by origin: local or federation.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"origin"})
}

// observePersist records a stored event's transaction time.
func (s *RoomServer) observePersist(origin string, start time.Time) {
	s.persist.WithLabelValues(origin).Observe(time.Since(start).Seconds())
}

// RegisterMetrics registers the room server's metrics on reg.
func (s *RoomServer) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(s.persist)
}
