package federationapi

import (
	"context"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// Destinations is the outbound queue as the admin API shows it (Synapse's
// federation destinations): every server this one sends to, with its
// retry state, and a reset that retries a backing-off server at once. It
// is its own type (built with NewDestinations) so that Federation does not
// grow for the admin API.
type Destinations struct{ f *Federation }

// NewDestinations gives the admin API its view of f's outbound queue.
func NewDestinations(f *Federation) *Destinations { return &Destinations{f: f} }

// Destination is one server's retry state (ms; 0: none). Retry state lives
// in memory: after a restart every server starts with a clean slate, as
// its first attempt decides again.
type Destination struct {
	Name            string
	FailureTS       int64 // start of the current run of failures
	RetryLastTS     int64 // last attempt
	RetryIntervalMS int64 // wait before the next attempt
	LastSuccessTS   int64 // last delivered transaction since start
	QueuedPDUs      int
	QueuedEDUs      int
}

// List returns every known destination: those sharing a room with this
// server, those with queued rows and those the queue has tried since
// start, sorted by name.
func (d *Destinations) List(ctx context.Context) ([]Destination, error) {
	names, err := storage.JoinedRemoteServers(ctx, d.f.db, string(d.f.serverName))
	if err != nil {
		return nil, err
	}
	queued, err := storage.QueuedDestinations(ctx, d.f.db)
	if err != nil {
		return nil, err
	}
	names = append(names, queued...)
	q := d.f.queue
	q.mu.Lock()
	for n := range q.dests {
		names = append(names, string(n))
	}
	q.mu.Unlock()
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]Destination, 0, len(names))
	for _, n := range names {
		if n == string(d.f.serverName) {
			continue
		}
		out = append(out, d.state(ctx, n))
	}
	return out, nil
}

// Get returns one destination, or false if this server knows nothing of it.
func (d *Destinations) Get(ctx context.Context, name string) (Destination, bool, error) {
	all, err := d.List(ctx)
	if err != nil {
		return Destination{}, false, err
	}
	for _, x := range all {
		if x.Name == name {
			return x, true, nil
		}
	}
	return Destination{}, false, nil
}

func (d *Destinations) state(ctx context.Context, name string) Destination {
	out := Destination{Name: name}
	q := d.f.queue
	q.mu.Lock()
	if dq := q.dests[spec.ServerName(name)]; dq != nil {
		out.FailureTS, out.RetryLastTS, out.LastSuccessTS = dq.failureTS, dq.lastAttemptTS, dq.lastSuccessTS
		out.RetryIntervalMS = dq.retryInterval.Milliseconds()
	}
	q.mu.Unlock()
	out.QueuedPDUs, out.QueuedEDUs, _ = storage.QueueDepth(ctx, d.f.db, name)
	return out
}

// Rooms lists the rooms the destination has a user joined to, with each
// room's latest stream position.
func (d *Destinations) Rooms(ctx context.Context, name string) ([]storage.RoomPos, error) {
	return storage.RoomsWithServer(ctx, d.f.db, name)
}

// Reset forgets the destination's failures and retries it now (a worker
// waiting out its backoff wakes). It reports whether the destination was
// backing off.
func (d *Destinations) Reset(name string) bool {
	q := d.f.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	dq := q.dests[spec.ServerName(name)]
	if dq == nil || dq.failures == 0 {
		return false
	}
	dq.failures, dq.failureTS, dq.retryInterval = 0, 0, 0
	signal(dq.retry)
	return true
}
