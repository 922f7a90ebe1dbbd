package federationapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// The outbound queue. SendPDU and SendEDU persist one row per destination
// and return; one worker goroutine per destination with queued rows sends
// them as transactions of up to 50 PDUs (first, in order) and 100 EDUs,
// deleting rows only after the destination answers 200. A failing
// destination is retried with capped exponential backoff and jitter; a
// verified request from it (it is back) retries at once. Rows survive
// restarts, and an unacknowledged transaction is resent under the same ID
// so the receiver's idempotency applies. PDUs are never dropped: a
// destination the policy now refuses keeps its rows until it is allowed.
// Events sent while a destination is refused are not queued for it; when
// it is allowed again it catches up (see catchUp).

const (
	txnMaxPDUs = 50
	txnMaxEDUs = 100
	// sendTimeout bounds one transaction attempt.
	sendTimeout = 2 * time.Minute
)

type queue struct {
	f          *Federation
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	backoffMin time.Duration
	backoffMax time.Duration

	mu      sync.Mutex
	dests   map[spec.ServerName]*destQueue
	started bool // workers run only between start and stop
	stopped bool

	catchUpMu sync.Mutex // one catch-up pass at a time
}

// destQueue is one destination's worker state; fields other than the
// channels are guarded by queue.mu.
type destQueue struct {
	name     spec.ServerName
	wake     chan struct{} // rows were queued
	retry    chan struct{} // retry now: the peer is back, or the policy changed
	running  bool
	failures int
	// For the admin API's destinations (ms; 0: never): the start of the
	// current run of failures, the last attempt, the wait before the next
	// one and the last delivery.
	failureTS, lastAttemptTS, lastSuccessTS int64
	retryInterval                           time.Duration
}

func newQueue(f *Federation) *queue {
	ctx, cancel := context.WithCancel(context.Background())
	return &queue{
		f: f, ctx: ctx, cancel: cancel,
		backoffMin: time.Second, backoffMax: 10 * time.Minute,
		dests: map[spec.ServerName]*destQueue{},
	}
}

// start resumes sending to every destination with queued rows.
func (q *queue) start() error {
	q.mu.Lock()
	q.started = true
	q.mu.Unlock()
	dests, err := storage.QueuedDestinations(q.ctx, q.f.db)
	if err != nil {
		return err
	}
	for _, d := range dests {
		q.notify(spec.ServerName(d))
	}
	// The policy may have changed while we were down (config edited
	// before the restart).
	q.catchUpLater()
	return nil
}

// stop ends the workers, cancelling transactions in flight (their rows
// stay claimed and are resent under the same ID on the next start).
func (q *queue) stop(timeout time.Duration) {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.cancel()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		logrus.Warn("federation: queue workers did not stop in time")
	}
}

func (q *queue) dest(name spec.ServerName) *destQueue {
	d := q.dests[name]
	if d == nil {
		d = &destQueue{name: name, wake: make(chan struct{}, 1), retry: make(chan struct{}, 1)}
		q.dests[name] = d
	}
	return d
}

// notify tells dest's worker that rows were queued, starting it if idle.
func (q *queue) notify(name spec.ServerName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.started || q.stopped {
		return // rows stay queued; start picks them up
	}
	d := q.dest(name)
	signal(d.wake)
	if !d.running {
		d.running = true
		q.wg.Add(1)
		go q.run(d)
	}
}

// peerAlive is called for every verified inbound request: if we were
// backing off from that server, retry now.
func (q *queue) peerAlive(name spec.ServerName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if d := q.dests[name]; d != nil && d.failures > 0 {
		d.failures, d.failureTS, d.retryInterval = 0, 0, 0
		signal(d.retry)
	}
}

// policyChanged re-evaluates every destination under a reloaded policy:
// held rows go to destinations allowed again, and those catch up on the
// rooms whose events they were refused meanwhile.
func (q *queue) policyChanged() {
	q.mu.Lock()
	for _, d := range q.dests {
		signal(d.retry)
	}
	q.mu.Unlock()
	q.catchUpLater()
}

// catchUpLater runs catchUp in the background while the queue runs.
func (q *queue) catchUpLater() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.started || q.stopped {
		return
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		q.catchUpMu.Lock()
		defer q.catchUpMu.Unlock()
		if err := q.catchUp(q.ctx); err != nil && q.ctx.Err() == nil {
			logrus.WithError(err).Error("federation: catching up destinations")
		}
	}()
}

// catchUp handles destinations that were refused by the policy while this
// server sent events to their rooms (storage.MarkCatchUp) and are allowed
// now: each is queued the latest local event of each such room. Its prev
// events lead back to what the destination has, and it fetches the gap
// with /get_missing_events, as after any outage. Nothing was stored for it
// while refused, so the policy's "never queued" rule holds.
func (q *queue) catchUp(ctx context.Context) error {
	pending, err := storage.CatchUps(ctx, q.f.db)
	if err != nil {
		return err
	}
	pol := q.f.pol()
	woken := map[string]bool{}
	for _, c := range pending {
		if pol.checkDestination(spec.ServerName(c.Destination)) != nil {
			continue // still refused: keep the mark
		}
		ev, err := storage.LatestLocalEvent(ctx, q.f.db, c.RoomID, string(q.f.serverName))
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if ev != nil {
			if ev, err = federationJSON(ev); err != nil {
				return err
			}
		}
		err = q.f.db.WithTx(ctx, func(tx *storage.Tx) error {
			if ev != nil {
				if err := storage.EnqueuePDU(ctx, tx, []string{c.Destination}, ev, time.Now().UnixMilli()); err != nil {
					return err
				}
			}
			return storage.ClearCatchUp(ctx, tx, c.Destination, c.RoomID)
		})
		if err != nil {
			return err
		}
		if ev != nil {
			woken[c.Destination] = true
		}
	}
	for d := range woken {
		q.f.wakeAll([]string{d})
	}
	return nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run is a destination's worker; it exits when the queue is empty.
func (q *queue) run(d *destQueue) {
	defer q.wg.Done()
	for q.ctx.Err() == nil {
		if err := q.f.pol().checkDestination(d.name); err != nil {
			// Keep the rows; wait for a policy change (or shutdown).
			q.updateDepth(d.name)
			select {
			case <-d.retry:
			case <-q.ctx.Done():
			}
			continue
		}
		batch, err := storage.ClaimBatch(q.ctx, q.f.db, string(d.name), newTxnID(), txnMaxPDUs, txnMaxEDUs)
		if err != nil {
			if q.ctx.Err() == nil {
				logrus.WithError(err).WithField("destination", d.name).Error("federation: reading queue")
				q.backoff(d)
			}
			continue
		}
		if len(batch.PDUs)+len(batch.EDUs) == 0 {
			q.mu.Lock()
			select {
			case <-d.wake:
				q.mu.Unlock()
				continue
			default:
			}
			d.running = false
			q.mu.Unlock()
			q.f.metrics.queueDepth.WithLabelValues(string(d.name)).Set(0)
			return
		}
		q.mu.Lock()
		d.lastAttemptTS = time.Now().UnixMilli()
		q.mu.Unlock()
		err = q.send(d.name, batch)
		if errors.Is(err, ErrRefused) {
			continue // policy changed under us; handled at the top
		}
		if err != nil {
			if q.ctx.Err() != nil {
				return
			}
			q.f.metrics.txnsSent.WithLabelValues(string(d.name), "error").Inc()
			logrus.WithError(err).WithField("destination", d.name).Debug("federation: transaction failed; backing off")
			q.backoff(d)
			continue
		}
		q.f.metrics.txnsSent.WithLabelValues(string(d.name), "ok").Inc()
		q.f.metrics.lastSuccess.WithLabelValues(string(d.name)).SetToCurrentTime()
		q.mu.Lock()
		d.failures, d.failureTS, d.retryInterval = 0, 0, 0
		d.lastSuccessTS = time.Now().UnixMilli()
		q.mu.Unlock()
		// The context is not the queue's: a delivered transaction must be
		// forgotten even if shutdown began meanwhile.
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := storage.DeleteBatch(dctx, q.f.db, string(d.name), batch.TxnID); err != nil {
			logrus.WithError(err).WithField("destination", d.name).Error("federation: clearing sent transaction")
		}
		cancel()
		q.updateDepth(d.name)
	}
}

// backoff waits before the next attempt: min·2^(failures-1), capped, with
// jitter (50–100% of the step) so many servers do not retry in lockstep.
// A retry signal (the destination contacted us) cuts it short.
func (q *queue) backoff(d *destQueue) {
	q.mu.Lock()
	d.failures++
	n := d.failures
	if n == 1 {
		d.failureTS = time.Now().UnixMilli()
	}
	q.mu.Unlock()
	step := q.backoffMin
	for i := 1; i < n && step < q.backoffMax; i++ {
		step *= 2
	}
	step = min(step, q.backoffMax)
	wait := step/2 + time.Duration(mrand.Int64N(int64(step/2)+1))
	q.mu.Lock()
	d.retryInterval = wait
	q.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-d.retry:
	case <-q.ctx.Done():
	}
}

// send delivers one batch as a transaction.
func (q *queue) send(dest spec.ServerName, b *storage.QueueBatch) error {
	txn := gomatrixserverlib.Transaction{
		TransactionID:  gomatrixserverlib.TransactionID(b.TxnID),
		Origin:         q.f.serverName,
		Destination:    dest,
		OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs:           make([]json.RawMessage, 0, len(b.PDUs)),
	}
	for _, p := range b.PDUs {
		txn.PDUs = append(txn.PDUs, p.JSON)
	}
	for _, e := range b.EDUs {
		var edu gomatrixserverlib.EDU
		if err := json.Unmarshal(e.JSON, &edu); err != nil {
			continue // cannot happen for rows we wrote; never block the queue on one
		}
		txn.EDUs = append(txn.EDUs, edu)
	}
	ctx, cancel := context.WithTimeout(q.ctx, sendTimeout)
	defer cancel()
	resp, err := q.f.client.SendTransaction(ctx, txn)
	if err != nil {
		return err
	}
	for id, r := range resp.PDUs {
		if r.Error != "" {
			logrus.WithField("destination", dest).WithField("event_id", id).WithField("error", r.Error).Debug("federation: destination rejected a PDU")
		}
	}
	return nil
}

func (q *queue) updateDepth(dest spec.ServerName) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, e, err := storage.QueueDepth(ctx, q.f.db, string(dest))
	if err == nil {
		q.f.metrics.queueDepth.WithLabelValues(string(dest)).Set(float64(p + e))
	}
}

// newTxnID returns a transaction ID unique for this sender: a millisecond
// timestamp plus randomness, in the spec's [0-9A-Za-z_-] alphabet.
func newTxnID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + "_" + strconv.FormatInt(n.Int64(), 36)
}

// destinations drops this server and duplicates, and splits the rest into
// the servers the policy allows and those it refuses (no row is queued for
// them, nothing is sent). It has no side effects: callers report the
// refusals (reportRefused), after their transaction if they hold one.
func (f *Federation) destinations(in []spec.ServerName) (allowed []string, refused []refusal) {
	p := f.pol()
	seen := map[spec.ServerName]bool{}
	allowed = make([]string, 0, len(in))
	for _, d := range in {
		if d == f.serverName || seen[d] {
			continue
		}
		seen[d] = true
		if err := p.checkDestination(d); err != nil {
			refused = append(refused, refusal{d, err})
			continue
		}
		allowed = append(allowed, string(d))
	}
	return allowed, refused
}

// refusal is a destination the policy refused, and why.
type refusal struct {
	dest spec.ServerName
	err  error
}

// reportRefused counts and audits refused destinations. The audit record
// has its own transaction, so this never runs inside another one (on
// SQLite it would wait for the write lock that one holds).
func (q *queue) reportRefused(rs []refusal) {
	for _, r := range rs {
		q.f.refuseOutbound(r.dest, r.err)
	}
}

// SendPDU queues pdu for each destination and returns once it is stored;
// delivery is asynchronous and survives restarts. This server and servers
// the federation policy refuses are skipped (refusals are counted and
// audited). For a refused server only the room is noted: if the policy
// allows it again (a healed partition), it is sent the room's latest event
// and fetches what it missed itself (see queue.catchUp). PDUs to one
// destination are sent in the order queued. Our own room events are queued
// by QueueRoomEvent, in their own transaction, instead.
func (f *Federation) SendPDU(ctx context.Context, destinations []spec.ServerName, pdu gomatrixserverlib.PDU) error {
	return f.db.WithTx(ctx, func(tx *storage.Tx) error { return f.queue.enqueuePDU(ctx, tx, destinations, pdu) })
}

// enqueuePDU writes SendPDU's rows in tx and, once tx commits, wakes the
// destinations' senders and reports the refusals.
func (q *queue) enqueuePDU(ctx context.Context, tx *storage.Tx, destinations []spec.ServerName, pdu gomatrixserverlib.PDU) error {
	dests, refused := q.f.destinations(destinations)
	now := time.Now().UnixMilli()
	if len(refused) > 0 {
		names := make([]string, len(refused))
		for i, r := range refused {
			names[i] = string(r.dest)
		}
		if err := storage.MarkCatchUp(ctx, tx, names, pdu.RoomID().String(), now); err != nil {
			return err
		}
		tx.AfterCommit(func() { q.reportRefused(refused) })
	}
	if len(dests) == 0 {
		return nil
	}
	b, err := federationJSON(pdu.JSON())
	if err != nil {
		return err
	}
	if err := storage.EnqueuePDU(ctx, tx, dests, b, now); err != nil {
		return err
	}
	tx.AfterCommit(func() { q.f.wakeAll(dests) })
	return nil
}

// SendEDU queues edu for each destination, like SendPDU. Typing and
// single-user presence EDUs still waiting for a slow destination are
// replaced by newer ones for the same room and user.
func (f *Federation) SendEDU(ctx context.Context, destinations []spec.ServerName, edu gomatrixserverlib.EDU) error {
	dests, refused := f.destinations(destinations)
	f.queue.reportRefused(refused)
	if len(dests) == 0 {
		return nil
	}
	edu.Origin, edu.Destination = string(f.serverName), ""
	b, err := json.Marshal(edu)
	if err != nil {
		return err
	}
	if err := storage.EnqueueEDU(ctx, f.db, dests, edu.Type, coalesceKey(edu), b, time.Now().UnixMilli()); err != nil {
		return err
	}
	f.wakeAll(dests)
	return nil
}

func (f *Federation) wakeAll(dests []string) {
	for _, d := range dests {
		f.metrics.queueDepth.WithLabelValues(d).Inc()
		f.queue.notify(spec.ServerName(d))
	}
}

// coalesceKey returns the key under which a newer EDU supersedes an older
// unsent one ("" for EDUs that must all be delivered).
func coalesceKey(edu gomatrixserverlib.EDU) string {
	switch edu.Type {
	case spec.MTyping:
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(edu.Content, &c) == nil && c.RoomID != "" && c.UserID != "" {
			return c.RoomID + "|" + c.UserID
		}
	case spec.MPresence:
		var c struct {
			Push []struct {
				UserID string `json:"user_id"`
			} `json:"push"`
		}
		if json.Unmarshal(edu.Content, &c) == nil && len(c.Push) == 1 && c.Push[0].UserID != "" {
			return c.Push[0].UserID
		}
	}
	return ""
}

// federationJSON strips "unsigned" from an event before it leaves the
// server: it may hold local-only data (the sender's transaction_id) and is
// not covered by signatures or hashes.
func federationJSON(ev []byte) ([]byte, error) {
	if !bytes.Contains(ev, []byte(`"unsigned"`)) {
		return ev, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ev, &m); err != nil {
		return nil, err
	}
	delete(m, "unsigned")
	return json.Marshal(m)
}
