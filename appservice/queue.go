package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

const (
	// txnMaxEvents bounds one transaction: a bridge that was down gets
	// its backlog in order, a hundred at a time.
	txnMaxEvents = 100
	// backoffMin and backoffMax bound the wait after a failed push: a
	// bridge that comes back is served within backoffMax.
	backoffMin = 250 * time.Millisecond
	backoffMax = 5 * time.Second
	// pollInterval is the fallback when no wake arrives (another process
	// wrote the queue, or a wake was missed).
	pollInterval = 2 * time.Second
)

// QueueRoomEvent is the room server state hook: inside the event's own
// transaction it queues the event for every appservice interested in it,
// so an acknowledged event reaches its bridges even across a crash.
func (s *Service) QueueRoomEvent(ctx context.Context, tx *storage.Tx, ev *storage.Event, pdu gomatrixserverlib.PDU, st roomserver.StateMap) error {
	if ev.StreamPos <= 0 || ev.Outlier || ev.Rejected || ev.SoftFailed {
		return nil
	}
	var js []byte
	for _, r := range s.Registrations() {
		if r.PushURL() == "" || !s.interested(r, ev, st) {
			continue
		}
		if js == nil {
			var err error
			if js, err = json.Marshal(syncapi.FormatEvent(ev, pdu, syncapi.Viewer{}, true)); err != nil {
				return err
			}
		}
		if err := storage.EnqueueAppServiceEvent(ctx, tx, r.ID, js); err != nil {
			return fmt.Errorf("appservice %s: queueing %s: %w", r.ID, ev.EventID, err)
		}
	}
	return nil
}

// interested: the sender or target is the appservice's, the room or one of
// its aliases is in its namespaces, or one of its users is joined or
// invited.
func (s *Service) interested(r *Registration, ev *storage.Event, st roomserver.StateMap) bool {
	sn := s.opts.ServerName
	if r.OwnsUser(ev.Sender, sn) || (ev.Type == "m.room.member" && ev.StateKey != nil && r.OwnsUser(*ev.StateKey, sn)) {
		return true
	}
	if r.WantsRoom(ev.RoomID) {
		return true
	}
	if len(r.Namespaces.Aliases) > 0 {
		if ca := st.Get("m.room.canonical_alias", ""); ca != nil {
			var c struct {
				Alias      string   `json:"alias"`
				AltAliases []string `json:"alt_aliases"`
			}
			_ = json.Unmarshal(ca.Content(), &c)
			for _, a := range append(c.AltAliases, c.Alias) {
				if a != "" && r.OwnsAlias(a) {
					return true
				}
			}
		}
	}
	for k, m := range st {
		if k.Type != "m.room.member" || !r.OwnsUser(k.StateKey, sn) {
			continue
		}
		if ms, _ := m.Membership(); ms == "join" || ms == "invite" {
			return true
		}
	}
	return false
}

// sender pushes one appservice's queue to its url, one transaction at a
// time, in order.
type sender struct {
	s      *Service
	reg    *Registration
	wake   chan struct{}
	cancel context.CancelFunc // set when started
	done   chan struct{}
	// txnID and evs are the transaction in flight as the store records
	// it ("": read it from the store); only run's goroutine uses them.
	txnID string
	evs   []storage.AppServiceQueued
}

// Start runs a sender per appservice with a url; stop ends them.
func (s *Service) Start() (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	s.runCtx = ctx
	s.startSenders(s.cur.Load())
	go s.pruneLoop(ctx)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopped = true
		cancel()
		s.stopSenders(s.cur.Load())
	}
}

// startSenders runs a generation's senders; s.mu is held.
func (s *Service) startSenders(g *registered) {
	for _, sd := range g.senders {
		ctx, cancel := context.WithCancel(s.runCtx)
		sd.cancel, sd.done = cancel, make(chan struct{})
		go func() {
			defer close(sd.done)
			sd.run(ctx)
		}()
	}
}

// stopSenders ends a generation's senders and waits for them: a push cut
// short stays the transaction in flight, resent as it was by the next
// generation. s.mu is held.
func (s *Service) stopSenders(g *registered) {
	for _, sd := range g.senders {
		if sd.cancel != nil {
			sd.cancel()
			<-sd.done
		}
	}
}

// Reload replaces the registrations (SIGHUP): the files are read and
// checked first, so a bad one leaves those in force. The old senders stop
// before the new ones start, so no transaction is pushed twice at once.
// Events of an appservice no longer registered stay queued, within the
// queue bounds (prune.go), so putting it back resumes its delivery.
func (s *Service) Reload(ctx context.Context, files []string) error {
	regs, err := LoadFiles(files)
	if err != nil {
		return err
	}
	if err := s.ensureSenders(ctx, regs); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	old, g := s.cur.Load(), s.generation(regs)
	if s.runCtx != nil {
		s.stopSenders(old)
	}
	s.cur.Store(g)
	if s.runCtx != nil {
		s.startSenders(g)
	}
	return s.PruneQueues(ctx)
}

// Wake tells the senders that events were committed (a room server
// subscriber, after commit).
func (s *Service) Wake() {
	for _, sd := range s.cur.Load().senders {
		select {
		case sd.wake <- struct{}{}:
		default:
		}
	}
}

func (sd *sender) run(ctx context.Context) {
	backoff := backoffMin
	log := logrus.WithField("appservice", sd.reg.ID)
	for ctx.Err() == nil {
		sent, err := sd.once(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			sd.s.delivered(sd.reg.ID, err)
			// Said once per outage, not at every retry.
			if backoff == backoffMin {
				log.WithError(err).Warn("appservice: transaction not delivered; retrying with backoff")
			} else {
				log.WithError(err).Debug("appservice: transaction not delivered")
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, backoffMax)
			continue
		}
		if backoff != backoffMin {
			log.Info("appservice: delivering again")
		}
		if sent {
			sd.s.delivered(sd.reg.ID, nil)
		}
		backoff = backoffMin
		if sent {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-sd.wake:
		case <-time.After(pollInterval):
		}
	}
}

// once sends the transaction in flight, or makes one of the oldest queued
// events; sent is false when the queue was empty. Once a transaction is
// acknowledged, dropping it and recording the next is one write
// transaction (storage.NextAppServiceTxn): under a busy room the sender
// goes from push to push with one write between, which on SQLite is what
// waits for the write lock.
func (sd *sender) once(ctx context.Context) (sent bool, err error) {
	db, id := sd.s.opts.DB, sd.reg.ID
	if sd.txnID == "" {
		txnID, evs, err := storage.PendingAppServiceTxn(ctx, db, id)
		if err != nil {
			return false, err
		}
		if txnID == "" {
			if err := sd.collect(ctx); err != nil {
				return false, err
			}
			// Read first: an empty queue costs no write.
			if evs, err = storage.NextAppServiceEvents(ctx, db, id, 1); err != nil || len(evs) == 0 {
				return false, err
			}
			if txnID, evs, err = storage.NextAppServiceTxn(ctx, db, id, nil, txnMaxEvents); err != nil || txnID == "" {
				return false, err
			}
		}
		sd.txnID, sd.evs = txnID, evs
	}
	if err := sd.push(ctx, sd.txnID, sd.evs); err != nil {
		// Retried from the store: the queue bounds may drop it meanwhile.
		sd.txnID, sd.evs = "", nil
		return false, err
	}
	// What arrived for the bridge meanwhile (ephemeral, to-device) is
	// queued before the next transaction is made, so nothing starves; a
	// failure here must not keep the acknowledged transaction, so it is
	// only logged (the next round collects again).
	if err := sd.collect(ctx); err != nil {
		logrus.WithError(err).WithField("appservice", id).Warn("appservice: collecting ephemeral and device updates")
	}
	txnID, evs, err := storage.NextAppServiceTxn(ctx, db, id, sd.evs, txnMaxEvents)
	if err != nil {
		// What the store holds is read again on the next round.
		sd.txnID, sd.evs = "", nil
		return true, err
	}
	sd.txnID, sd.evs = txnID, evs
	return true, nil
}

func (sd *sender) push(ctx context.Context, txnID string, evs []storage.AppServiceQueued) error {
	u := sd.reg.PushURL() + "/_matrix/app/v1/transactions/" + url.PathEscape(txnID)
	_, err := sd.s.call(ctx, sd.reg, http.MethodPut, u, transactionBody(evs))
	return err
}

// transactionBody lays queued rows out as a transaction: room events in
// events, ephemeral events under the stable and the MSC2409 key (mautrix
// reads either), to-device messages under MSC2409's key, device-list
// changes merged and the latest key counts per device under MSC3202's.
func transactionBody(evs []storage.AppServiceQueued) []byte {
	var body bytes.Buffer
	body.WriteString(`{"events":[`)
	n := 0
	var eph, toDev []json.RawMessage
	changed := map[string]bool{}
	otk := map[string]map[string]map[string]int{}
	fallback := map[string]map[string][]string{}
	for _, e := range evs {
		switch e.Kind {
		case storage.AppServiceKindEphemeral:
			eph = append(eph, e.JSON)
		case storage.AppServiceKindToDevice:
			toDev = append(toDev, e.JSON)
		case storage.AppServiceKindDeviceLists:
			var dl struct {
				Changed []string `json:"changed"`
			}
			_ = json.Unmarshal(e.JSON, &dl)
			for _, u := range dl.Changed {
				changed[u] = true
			}
		case storage.AppServiceKindKeyCounts:
			var kc keyCounts
			if json.Unmarshal(e.JSON, &kc) != nil {
				continue
			}
			if otk[kc.UserID] == nil {
				otk[kc.UserID], fallback[kc.UserID] = map[string]map[string]int{}, map[string][]string{}
			}
			otk[kc.UserID][kc.DeviceID], fallback[kc.UserID][kc.DeviceID] = kc.Counts, kc.Fallback
		default:
			if n > 0 {
				body.WriteByte(',')
			}
			body.Write(e.JSON)
			n++
		}
	}
	body.WriteString(`]`)
	field := func(key string, v any) {
		b, _ := json.Marshal(v)
		body.WriteString(`,"` + key + `":`)
		body.Write(b)
	}
	if len(eph) > 0 {
		field("ephemeral", eph)
		field("de.sorunome.msc2409.ephemeral", eph)
	}
	if len(toDev) > 0 {
		field("de.sorunome.msc2409.to_device", toDev)
	}
	if len(changed) > 0 {
		list := make([]string, 0, len(changed))
		for u := range changed {
			list = append(list, u)
		}
		sort.Strings(list)
		field("org.matrix.msc3202.device_lists", map[string][]string{"changed": list, "left": {}})
	}
	if len(otk) > 0 {
		field("org.matrix.msc3202.device_one_time_keys_count", otk)
		field("org.matrix.msc3202.device_unused_fallback_key_types", fallback)
	}
	body.WriteByte('}')
	return body.Bytes()
}

// call makes one request to a bridge with the hs_token; a non-2xx answer
// is an error carrying the status.
func (s *Service) call(ctx context.Context, r *Registration, method, u string, body []byte) (int, error) {
	status, _, err := s.callBody(ctx, r, method, u, body, 0)
	return status, err
}

// callBody is call keeping up to max bytes of the answer's body.
func (s *Service) callBody(ctx context.Context, r *Registration, method, u string, body []byte, max int64) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+r.HSToken)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out []byte
	if max > 0 {
		out, err = io.ReadAll(io.LimitReader(resp.Body, max))
		if err != nil {
			return resp.StatusCode, nil, err
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, out, fmt.Errorf("%s %s: status %d", method, r.ID, resp.StatusCode)
	}
	return resp.StatusCode, out, nil
}
