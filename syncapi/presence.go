package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// Presence tracks local users' presence. Changes others can see (state,
// status message, currently_active) are stream rows shared with users
// who share a joined room; activity alone refreshes last_active_ts at
// most once a minute without a new row. A sweeper turns idle online
// users unavailable and users who stopped syncing offline.
type Presence struct {
	s       *Syncer
	enabled atomic.Bool
	now     func() time.Time

	mu    sync.Mutex
	users map[string]*presenceUser

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

type presenceUser struct {
	state        string
	statusMsg    *string
	active       bool  // currently_active as last stored
	lastActive   int64 // ms
	storedActive int64 // last_active_ts as last written
	lastSeen     time.Time
}

// Presence timing.
const (
	idleAfter      = 5 * time.Minute // online → unavailable without activity
	offlineAfter   = 3 * time.Minute // → offline without syncs or presence updates
	touchEvery     = time.Minute     // last_active_ts refresh in the store
	sweepEvery     = 15 * time.Second
	activeInterval = time.Minute // currently_active: active within this
)

func newPresence(s *Syncer, enabled bool) *Presence {
	p := &Presence{s: s, now: time.Now, users: map[string]*presenceUser{}, stop: make(chan struct{}), done: make(chan struct{})}
	p.enabled.Store(enabled)
	return p
}

// Enabled reports whether presence is tracked and shared.
func (p *Presence) Enabled() bool { return p.enabled.Load() }

// Presence states.
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

// ValidPresence reports whether s is a presence state.
func ValidPresence(s string) bool {
	return s == PresenceOnline || s == PresenceUnavailable || s == PresenceOffline
}

// load returns the user's tracked state, reading the store on first use.
func (p *Presence) loadLocked(ctx context.Context, userID string) (*presenceUser, error) {
	if u := p.users[userID]; u != nil {
		return u, nil
	}
	u := &presenceUser{state: PresenceOffline}
	row, err := storage.GetPresence(ctx, p.s.db, userID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		u.state, u.statusMsg, u.active, u.lastActive, u.storedActive = row.State, row.StatusMsg, row.CurrentlyActive, row.LastActiveTS, row.LastActiveTS
	}
	p.users[userID] = u
	return u, nil
}

// Set records a presence change from PUT /presence (setMsg: replace the
// status message with msg) or from /sync's set_presence. It writes a
// stream row only when something others see changes.
func (p *Presence) Set(ctx context.Context, userID, state string, msg *string, setMsg bool) error {
	if !p.Enabled() {
		return nil
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	u, err := p.loadLocked(ctx, userID)
	if err != nil {
		return err
	}
	u.lastSeen = now
	if state == PresenceOnline {
		u.lastActive = now.UnixMilli()
	}
	next := *u
	next.state = state
	if setMsg {
		next.statusMsg = msg
	}
	next.active = state == PresenceOnline
	if next.state == u.state && next.active == u.active && eqMsg(next.statusMsg, u.statusMsg) {
		if u.lastActive-u.storedActive >= touchEvery.Milliseconds() {
			if err := storage.TouchPresence(ctx, p.s.db, userID, u.lastActive); err != nil {
				return err
			}
			u.storedActive = u.lastActive
		}
		return nil
	}
	if err := p.writeLocked(ctx, userID, &next); err != nil {
		return err
	}
	*u = next
	return nil
}

// SyncActivity is /sync's set_presence: "" or online marks the user
// online, unavailable marks them unavailable, offline changes nothing.
func (p *Presence) SyncActivity(ctx context.Context, userID, setPresence string) error {
	switch setPresence {
	case "", PresenceOnline:
		return p.Set(ctx, userID, PresenceOnline, nil, false)
	case PresenceUnavailable:
		return p.Set(ctx, userID, PresenceUnavailable, nil, false)
	}
	return nil
}

func eqMsg(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// writeLocked stores u's state as a new stream row and wakes the user and
// everyone sharing a room with them.
func (p *Presence) writeLocked(ctx context.Context, userID string, u *presenceUser) error {
	row := &storage.Presence{UserID: userID, State: u.state, StatusMsg: u.statusMsg, LastActiveTS: u.lastActive, CurrentlyActive: u.active}
	if row.LastActiveTS == 0 {
		row.LastActiveTS = p.now().UnixMilli()
	}
	rooms, err := storage.RoomsByMembership(ctx, p.s.db, userID, "join")
	if err != nil {
		return err
	}
	err = p.s.db.WithTx(ctx, func(tx *storage.Tx) error {
		pos, err := storage.PutPresence(ctx, tx, row)
		if err != nil {
			return err
		}
		tx.Publish(pos, func() {
			p.s.NotifyUsers(userID)
			for r := range rooms {
				p.s.NotifyRoom(r)
			}
		})
		return nil
	})
	if err == nil {
		u.storedActive = row.LastActiveTS
	}
	return err
}

// Get returns a user's presence as the client API shows it.
func (p *Presence) Get(ctx context.Context, userID string) (map[string]any, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, err := p.loadLocked(ctx, userID)
	if err != nil {
		return nil, err
	}
	return p.contentLocked(u), nil
}

func (p *Presence) contentLocked(u *presenceUser) map[string]any {
	c := map[string]any{"presence": u.state}
	if u.lastActive > 0 {
		c["last_active_ago"] = max(p.now().UnixMilli()-u.lastActive, 0)
		c["currently_active"] = u.active && p.now().UnixMilli()-u.lastActive < activeInterval.Milliseconds()
	}
	if u.statusMsg != nil {
		c["status_msg"] = *u.statusMsg
	}
	return c
}

// Start runs the sweeper until Stop. Users who were online when the server
// stopped are picked up so they time out too.
func (p *Presence) Start(ctx context.Context) error {
	rows, err := storage.ActivePresence(ctx, p.s.db)
	if err != nil {
		return err
	}
	now := p.now()
	p.mu.Lock()
	for _, r := range rows {
		if p.users[r.UserID] == nil {
			p.users[r.UserID] = &presenceUser{state: r.State, statusMsg: r.StatusMsg, active: r.CurrentlyActive, lastActive: r.LastActiveTS, storedActive: r.LastActiveTS, lastSeen: now}
		}
	}
	p.mu.Unlock()
	go func() {
		defer close(p.done)
		t := time.NewTicker(sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.Sweep(context.Background())
			}
		}
	}()
	return nil
}

// Stop ends the sweeper (after Start).
func (p *Presence) Stop() {
	p.stopOnce.Do(func() {
		close(p.stop)
		<-p.done
	})
}

// Sweep applies the timeouts once.
func (p *Presence) Sweep(ctx context.Context) {
	if !p.Enabled() {
		return
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, u := range p.users {
		next := *u
		switch {
		case u.state != PresenceOffline && now.Sub(u.lastSeen) > offlineAfter:
			next.state, next.active = PresenceOffline, false
		case u.state == PresenceOnline && now.UnixMilli()-u.lastActive > idleAfter.Milliseconds():
			next.state, next.active = PresenceUnavailable, false
		case u.state == PresenceOffline:
			delete(p.users, id) // nothing to time out; reloaded on use
			continue
		default:
			continue
		}
		if err := p.writeLocked(ctx, id, &next); err != nil {
			logrus.WithError(err).WithField("user_id", id).Warn("presence: timing out")
			continue
		}
		*u = next
	}
}

// presenceExt sends m.presence events of users sharing a room.
type presenceExt struct{ p *Presence }

// NewPresenceExtension makes the presence stream.
func NewPresenceExtension(s *Syncer) Extension { return &presenceExt{p: s.presence} }

func (e *presenceExt) Apply(ctx context.Context, req *Request, resp *Response) error {
	if !e.p.Enabled() {
		return nil
	}
	joiners := newJoiners(req, resp)
	if len(joiners) == 0 && !e.p.s.moved("presence", req) {
		return nil
	}
	var rows []*storage.Presence
	var err error
	if e.p.s.moved("presence", req) {
		if rows, err = storage.PresenceRange(ctx, e.p.s.db, req.UserID, req.Since.Pos, req.To.Pos); err != nil {
			return err
		}
	}
	if len(joiners) > 0 {
		// Users who came to share a room in range: their presence, however
		// old, is new to this client. One query for all of them.
		for _, r := range rows {
			delete(joiners, r.UserID)
		}
		ids := make([]string, 0, len(joiners))
		for id := range joiners {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		more, err := storage.PresenceOf(ctx, e.p.s.db, ids)
		if err != nil {
			return err
		}
		rows = append(more, rows...)
	}
	if len(rows) == 0 {
		return nil
	}
	ignored := e.p.s.IgnoredBy(req.UserID)
	f := &req.Filter.Presence
	limit := f.LimitOr(len(rows))
	var evs []any
	now := e.p.now().UnixMilli()
	for _, r := range rows {
		if (r.UserID != req.UserID && ignored[r.UserID]) || !f.Allows("m.presence", r.UserID) {
			continue
		}
		c := map[string]any{"presence": r.State, "last_active_ago": max(now-r.LastActiveTS, 0), "currently_active": r.CurrentlyActive}
		if r.StatusMsg != nil {
			c["status_msg"] = *r.StatusMsg
		}
		evs = append(evs, map[string]any{"type": "m.presence", "sender": r.UserID, "content": c})
	}
	if len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	if len(evs) > 0 {
		if resp.Presence == nil {
			resp.Presence = &EventList{Events: []any{}}
		}
		resp.Presence.Events = append(resp.Presence.Events, evs...)
	}
	return nil
}

// newJoiners are the other users whose joins this incremental response
// carries (timeline or state of its joined rooms): a client learns of a
// new room member's presence with the join. It reads only the response.
func newJoiners(req *Request, resp *Response) map[string]bool {
	if req.Initial {
		return nil // an initial sync's presence already covers every member
	}
	var out map[string]bool
	add := func(evs []ClientEvent) {
		for i := range evs {
			ev := &evs[i]
			if ev.Type != "m.room.member" || ev.StateKey == nil || *ev.StateKey == req.UserID {
				continue
			}
			var c struct {
				Membership string `json:"membership"`
			}
			if json.Unmarshal(ev.Content, &c) != nil || c.Membership != "join" {
				continue
			}
			if out == nil {
				out = map[string]bool{}
			}
			out[*ev.StateKey] = true
		}
	}
	for _, jr := range resp.Rooms.Join {
		add(jr.State.Events)
		add(jr.Timeline.Events)
		for _, sa := range []*StateList{jr.StateAfter, jr.StateAfterUnstable} {
			if sa != nil {
				add(sa.Events)
			}
		}
	}
	return out
}
