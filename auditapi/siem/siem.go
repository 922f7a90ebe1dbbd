package siem

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/storage"
)

// Formats of the records.
const (
	FormatJSONL = auditapi.FormatJSONL
	FormatCEF   = auditapi.FormatCEF
)

// Options configure a Streamer (from config audit.siem).
type Options struct {
	ServerName string
	Version    string // product version, in CEF headers
	Format     string // FormatJSONL or FormatCEF
	// Syslog is the collector; nil: no syslog sink.
	Syslog *SyslogOptions
	// File is the local file sink; nil: none.
	File *FileOptions
	// Poll is how often a sink looks for new entries (default 500ms).
	Poll time.Duration
}

// SyslogOptions locate the syslog collector.
type SyslogOptions struct {
	Address string      // HOST:PORT (TCP)
	TLS     *tls.Config // nil: plain TCP
}

// FileOptions configure the file sink.
type FileOptions struct {
	Path     string
	MaxBytes int64 // rotate before a record would take the file past this
	MaxFiles int   // rotated files kept besides Path
}

// sink delivers records; an error means the batch may not have arrived
// (the cursor stays, the batch is sent again).
type sink interface {
	name() string
	deliver(ctx context.Context, rows []*storage.AuditRow, recs [][]byte) error
	close()
}

// Streamer runs one delivery loop per configured sink.
type Streamer struct {
	db    storage.Querier
	opts  Options
	sinks []sink
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once

	streamed *prometheus.CounterVec
	failures *prometheus.CounterVec
	mu       sync.Mutex
	cursors  map[string]int64 // sink -> last delivered n
}

// New builds a streamer over db; it sends nothing until Start. With no
// sink configured it returns nil (and a nil Streamer's methods do nothing).
func New(db storage.Querier, o Options) (*Streamer, error) {
	if o.Format == "" {
		o.Format = FormatJSONL
	}
	if o.Format != FormatJSONL && o.Format != FormatCEF {
		return nil, fmt.Errorf("siem: unknown format %q (jsonl or cef)", o.Format)
	}
	if o.Poll <= 0 {
		o.Poll = 500 * time.Millisecond
	}
	s := &Streamer{db: db, opts: o, done: make(chan struct{}), cursors: map[string]int64{},
		streamed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "enclave", Subsystem: "audit_siem", Name: "streamed_total",
			Help: "Audit entries delivered to a SIEM sink (at least once: redeliveries after an outage count again)."}, []string{"sink"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "enclave", Subsystem: "audit_siem", Name: "delivery_failures_total",
			Help: "Failed deliveries to a SIEM sink (the entries wait in the store and are sent again)."}, []string{"sink"}),
	}
	if o.Syslog != nil {
		s.sinks = append(s.sinks, &syslogSink{addr: o.Syslog.Address, tlsConf: o.Syslog.TLS, host: o.ServerName})
	}
	if o.File != nil {
		if o.File.MaxFiles < 1 || o.File.MaxBytes <= 0 {
			return nil, errors.New("siem: file sink needs a positive size and at least one rotated file")
		}
		s.sinks = append(s.sinks, &fileSink{path: o.File.Path, maxBytes: o.File.MaxBytes, keep: o.File.MaxFiles})
	}
	if len(s.sinks) == 0 {
		return nil, nil
	}
	return s, nil
}

// Sinks names the configured sinks (for the server.start entry).
func (s *Streamer) Sinks() []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, k := range s.sinks {
		out = append(out, k.name())
	}
	return out
}

// RegisterMetrics adds the streamer's metrics: entries streamed and
// delivery failures per sink, and each sink's lag (sealed entries not yet
// delivered).
func (s *Streamer) RegisterMetrics(reg prometheus.Registerer) error {
	if s == nil {
		return nil
	}
	if err := reg.Register(s.streamed); err != nil {
		return err
	}
	if err := reg.Register(s.failures); err != nil {
		return err
	}
	for _, k := range s.sinks {
		name := k.name()
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "enclave", Subsystem: "audit_siem", Name: "lag_entries",
			Help: "Sealed audit entries a SIEM sink has not delivered yet.", ConstLabels: prometheus.Labels{"sink": name}},
			func() float64 { return float64(s.Lag(context.Background(), name)) })
		if err := reg.Register(g); err != nil {
			return err
		}
	}
	return nil
}

// Lag is how many sealed entries the sink has not delivered.
func (s *Streamer) Lag(ctx context.Context, sinkName string) int64 {
	head, err := storage.AuditSealedMax(ctx, s.db)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	c, ok := s.cursors[sinkName]
	s.mu.Unlock()
	if !ok {
		if c, err = storage.AuditSIEMCursor(ctx, s.db, sinkName); err != nil {
			return 0
		}
	}
	return max(head-c, 0)
}

// Start runs the sinks' delivery loops.
func (s *Streamer) Start() {
	if s == nil {
		return
	}
	for _, k := range s.sinks {
		s.wg.Add(1)
		go s.run(k)
	}
}

// stopDrain bounds the last delivery pass at Stop, which sends what the
// audit log's last seal (server.stop, the final checkpoint) added.
const stopDrain = 3 * time.Second

// Stop ends the loops after a last, bounded delivery pass; what remains
// is sent at the next start.
func (s *Streamer) Stop() {
	if s == nil {
		return
	}
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
	for _, k := range s.sinks {
		k.close()
	}
}

const (
	batchSize  = 500
	backoffMin = 250 * time.Millisecond
	backoffMax = 10 * time.Second
)

func (s *Streamer) run(k sink) {
	defer s.wg.Done()
	log := logrus.WithField("sink", k.name())
	var cursor int64
	loaded := false
	backoff := backoffMin
	failing := false
	var drainUntil time.Time
	for {
		stopping := !drainUntil.IsZero()
		if stopping && time.Now().After(drainUntil) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if stopping {
			ctx, cancel = context.WithDeadline(context.Background(), drainUntil)
		}
		sent, err := s.pass(ctx, k, &cursor, &loaded)
		cancel()
		wait := s.opts.Poll
		switch {
		case err != nil:
			s.failures.WithLabelValues(k.name()).Inc()
			if !failing {
				log.WithError(err).Warn("audit siem: delivery failed; entries wait in the store and are sent when the sink is back")
				failing = true
			}
			if stopping {
				return
			}
			wait, backoff = backoff, min(2*backoff, backoffMax)
		case sent > 0:
			if failing {
				log.WithField("cursor", cursor).Info("audit siem: delivering again")
				failing = false
			}
			backoff = backoffMin
			wait = 0 // more may be waiting
		case stopping:
			return // drained
		}
		if stopping {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-s.done:
			t.Stop()
			drainUntil = time.Now().Add(stopDrain)
		case <-t.C:
		}
	}
}

// pass delivers one batch after the cursor and advances it in the store.
func (s *Streamer) pass(ctx context.Context, k sink, cursor *int64, loaded *bool) (int, error) {
	if !*loaded {
		c, err := storage.AuditSIEMCursor(ctx, s.db, k.name())
		if err != nil {
			return 0, fmt.Errorf("reading the sink's position: %w", err)
		}
		*cursor, *loaded = c, true
		s.setCursor(k.name(), c)
	}
	rows, err := storage.ListAuditRows(ctx, s.db, storage.AuditFilter{FromN: *cursor + 1, Limit: batchSize})
	if err != nil {
		return 0, fmt.Errorf("reading entries: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	recs := make([][]byte, len(rows))
	for i, r := range rows {
		if recs[i], err = s.record(r); err != nil {
			return 0, err
		}
	}
	if err := k.deliver(ctx, rows, recs); err != nil {
		return 0, err
	}
	last := rows[len(rows)-1].N
	if err := storage.SetAuditSIEMCursor(ctx, s.db, k.name(), last, time.Now().UnixMilli()); err != nil {
		// Delivered but not recorded: sent again later (at least once).
		return 0, fmt.Errorf("recording the sink's position: %w", err)
	}
	*cursor = last
	s.setCursor(k.name(), last)
	s.streamed.WithLabelValues(k.name()).Add(float64(len(rows)))
	return len(rows), nil
}

func (s *Streamer) setCursor(name string, n int64) {
	s.mu.Lock()
	s.cursors[name] = n
	s.mu.Unlock()
}

// record renders one row in the configured format (no line end).
func (s *Streamer) record(r *storage.AuditRow) ([]byte, error) {
	if s.opts.Format == FormatCEF {
		return []byte(auditapi.CEFLine(r, s.opts.Version)), nil
	}
	return json.Marshal(auditapi.ExportRow(r))
}
