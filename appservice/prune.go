package appservice

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/storage"
)

// Bounding the queues: a bridge that never comes back, or one the
// operator removed, would otherwise keep every event for ever. Past
// Options.QueueMaxEvents or QueueMaxAge the oldest events are dropped,
// and each drop is an audit entry, so an operator can tell what a bridge
// never received.

// pruneInterval is how often the queues are checked.
const pruneInterval = time.Minute

// PruneQueues applies the bounds to every queue now (also run at start,
// after each reload and every pruneInterval).
func (s *Service) PruneQueues(ctx context.Context) error {
	maxEvents, maxAge := s.opts.QueueMaxEvents, s.opts.QueueMaxAge
	if maxEvents <= 0 && maxAge <= 0 {
		return nil
	}
	stats, err := storage.AppServiceQueueStats(ctx, s.opts.DB)
	if err != nil {
		return err
	}
	var cutoff int64
	if maxAge > 0 {
		cutoff = time.Now().Add(-maxAge).UnixMilli()
	}
	for id, st := range stats {
		overCap := maxEvents > 0 && st.Depth > maxEvents
		tooOld := cutoff > 0 && st.OldestTS > 0 && st.OldestTS < cutoff
		if !overCap && !tooOld {
			continue
		}
		dropped, err := storage.PruneAppServiceQueue(ctx, s.opts.DB, id, maxEvents, cutoff)
		if err != nil {
			return err
		}
		if dropped == 0 {
			continue
		}
		registered := s.byID(id) != nil
		logrus.WithFields(logrus.Fields{"appservice": id, "dropped": dropped, "registered": registered}).Warn("appservice: queued events dropped undelivered (app_services.queue_max_events / queue_max_age)")
		if err := s.opts.Audit.Record(ctx, s.opts.DB, auditapi.Entry{
			Actor:  auditapi.Actor{Server: s.opts.ServerName, AppService: id},
			Action: auditapi.ActionAppServiceQueueDropped, Target: id, Outcome: auditapi.OutcomeFailure,
			Details: map[string]any{"appservice": id, "dropped": dropped, "registered": registered,
				"queue_max_events": maxEvents, "queue_max_age": maxAge.String()},
		}); err != nil {
			return err
		}
	}
	return nil
}

// pruneLoop runs PruneQueues until ctx ends.
func (s *Service) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		if err := s.PruneQueues(ctx); err != nil && ctx.Err() == nil {
			logrus.WithError(err).Warn("appservice: bounding the queues")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
