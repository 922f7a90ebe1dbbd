package notifier

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/internal/lru"
	"enclave/internal/pushrules"
	"enclave/storage"
)

// RoomState is what the notifier reads of rooms, as plain values: the
// assembly adapts the room server to it, so the notifier depends on no
// component.
type RoomState interface {
	// PushContext returns, from the room's current state, what evaluating
	// an event sent by sender needs.
	PushContext(ctx context.Context, roomID, sender string) (*Room, error)
}

// Room is the room state push rules are evaluated against.
type Room struct {
	// Joined maps each joined member to their display name.
	Joined map[string]string
	// SenderPowerLevel is the sender's power level.
	SenderPowerLevel int64
	// NotificationLevel is the power level needed for a notification
	// kind ("room").
	NotificationLevel func(kind string) int64
}

// Notifier consumes the room server's output.
type Notifier struct {
	db         *storage.DB
	rs         RoomState
	serverName string
	wake       func(users ...string)
	wakeRoom   func(roomID string)

	mu       sync.Mutex
	queue    []*storage.Event
	closed   bool
	signal   chan struct{}
	done     chan struct{}
	inflight int // events queued and not yet processed
	idle     *sync.Cond

	rules *lru.Cache[string, cachedRules]

	// handled holds the events InTx evaluated in their own transaction,
	// from its commit until OnEvent sees them: true when the transaction
	// also arranged the room's wake-up (it stored notifications).
	handled sync.Map // *storage.Event -> bool

	throttle roomThrottle
}

// maxBatch bounds how many events one transaction handles.
const maxBatch = 256

// New makes a notifier for the local users of serverName; wake is called
// with the users who got new notifications once they are visible, and
// wakeRoom (if set) with the room of every event it was given, once the
// event's notifications are visible or it has none.
func New(db *storage.DB, rs RoomState, serverName string, wake func(users ...string), wakeRoom func(roomID string)) *Notifier {
	n := &Notifier{db: db, rs: rs, serverName: serverName, wake: wake, wakeRoom: wakeRoom, signal: make(chan struct{}, 1), done: make(chan struct{}),
		rules: lru.New[string, cachedRules](4096)}
	n.idle = sync.NewCond(&n.mu)
	go n.run()
	return n
}

// OnEvent queues a stored event (the assembly subscribes it to the room
// server's output). It never blocks the caller. Outliers, rejected events
// and backfilled history (positions <= 0) never notify.
func (n *Notifier) OnEvent(e *storage.Event) {
	if e == nil {
		return
	}
	if v, ok := n.handled.LoadAndDelete(e); ok {
		if !v.(bool) {
			n.wakeRooms([]*storage.Event{e})
		}
		return
	}
	if !notifiable(e) {
		n.wakeRooms([]*storage.Event{e})
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.wakeRooms([]*storage.Event{e})
		return
	}
	n.inflight++
	n.queue = append(n.queue, e)
	n.mu.Unlock()
	select {
	case n.signal <- struct{}{}:
	default:
	}
}

// notifiable tells whether an event may notify: outliers, rejected and
// soft-failed events and imported or backfilled history (positions <= 0)
// never do.
func notifiable(e *storage.Event) bool {
	return e.StreamPos > 0 && !e.Outlier && !e.Rejected && !e.SoftFailed && !e.Imported
}

// InTx evaluates a local or federated event inside the transaction that
// stores it (a room-server state hook; room is the state right after the
// event) and writes its notifications and unread totals there: no second
// transaction and commit per event, no read of the room's state, and the
// counts are durable with the event. The rows take their own stream
// position, published with the users' and the room's wake-up, so the event
// and its counts reach /sync in one response. Events that never pass
// through here (remote invites out of a room) still go through OnEvent's
// queue.
func (n *Notifier) InTx(ctx context.Context, tx *storage.Tx, e *storage.Event, room *Room) error {
	if e == nil || !notifiable(e) {
		return nil
	}
	batch := []*storage.Event{e}
	var works []*work
	if w, err := n.prepareRoom(ctx, tx, e, room); err != nil {
		logrus.WithError(err).WithField("event_id", e.EventID).Warn("push rules: skipping event")
	} else if w != nil && len(w.targets) > 0 {
		works = append(works, w)
	}
	out, err := n.evaluate(ctx, tx, works)
	if err != nil {
		return err
	}
	joins := n.newJoins(ctx, tx, batch)
	if len(out) == 0 && len(joins) == 0 {
		tx.AfterCommit(func() { n.handled.Store(e, false) })
		return nil
	}
	pos, list, err := n.write(ctx, tx, out, joins)
	if err != nil {
		return err
	}
	// The room's wake-up reaches its joined and invited members; only
	// users outside it (the target of an invite) are woken by name.
	var others []string
	for _, u := range list {
		if _, joined := room.Joined[u]; !joined {
			others = append(others, u)
		}
	}
	tx.AfterCommit(func() { n.handled.Store(e, true) })
	tx.Publish(pos, func() {
		if n.wake != nil && len(others) > 0 {
			n.wake(others...)
		}
		n.wakeRooms(batch)
	})
	return nil
}

// Flush waits until every event queued so far has been processed.
func (n *Notifier) Flush() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for n.inflight > 0 {
		n.idle.Wait()
	}
}

// Close processes what is queued and stops the worker.
func (n *Notifier) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	select {
	case n.signal <- struct{}{}:
	default:
	}
	<-n.done
}

func (n *Notifier) run() {
	defer close(n.done)
	for range n.signal {
		for {
			n.mu.Lock()
			batch := n.queue
			if len(batch) > maxBatch {
				batch = batch[:maxBatch]
			}
			n.queue = n.queue[len(batch):]
			closed := n.closed && len(n.queue) == 0
			n.mu.Unlock()
			if len(batch) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := n.process(ctx, batch); err != nil {
					logrus.WithError(err).Error("push rules: storing notifications")
				}
				cancel()
				n.mu.Lock()
				n.inflight -= len(batch)
				n.idle.Broadcast()
				n.mu.Unlock()
			}
			if closed {
				return
			}
			if len(batch) == 0 {
				break
			}
		}
	}
}

// wakeRooms wakes the long-polls of the rooms of evs, each room once,
// through the throttle.
func (n *Notifier) wakeRooms(evs []*storage.Event) {
	if n.wakeRoom == nil {
		return
	}
	seen := make(map[string]bool, 1)
	for _, e := range evs {
		if !seen[e.RoomID] {
			seen[e.RoomID] = true
			n.throttle.wake(e.RoomID, n.wakeRoom)
		}
	}
}

// wakeGap is the least time between two wake-ups of one room's long-polls.
// Every wake-up makes each member's /sync build and send a response, so a
// busy room (events each committing on their own) is woken at most this
// often and its members get the events of the gap in one response; a quiet
// room's event wakes at once.
const wakeGap = 20 * time.Millisecond

// roomThrottle spaces the wake-ups of each room by wakeGap: a wake-up
// within the gap after the last one is deferred to its end, and those
// asked for meanwhile ride along (the deferred one reads every event
// visible when it runs, so none is missed).
type roomThrottle struct {
	mu      sync.Mutex
	last    map[string]time.Time
	pending map[string]bool
}

func (t *roomThrottle) wake(roomID string, wake func(string)) {
	t.mu.Lock()
	if t.last == nil {
		t.last, t.pending = map[string]time.Time{}, map[string]bool{}
	}
	if t.pending[roomID] {
		t.mu.Unlock()
		return
	}
	now := time.Now()
	if next := t.last[roomID].Add(wakeGap); now.Before(next) {
		t.pending[roomID] = true
		t.mu.Unlock()
		time.AfterFunc(next.Sub(now), func() {
			t.mu.Lock()
			delete(t.pending, roomID)
			t.last[roomID] = time.Now()
			t.mu.Unlock()
			wake(roomID)
		})
		return
	}
	if len(t.last) > 4096 { // forget rooms woken long ago
		for r, at := range t.last {
			if now.Sub(at) > wakeGap && !t.pending[r] {
				delete(t.last, r)
			}
		}
	}
	t.last[roomID] = now
	t.mu.Unlock()
	wake(roomID)
}

// ruleset builds a user's rule set from their rows, reusing the last one
// built while the rows stay the same: most events find every member's
// rules unchanged.
func (n *Notifier) ruleset(userID string, rows []storage.PushRuleRow) *pushrules.Ruleset {
	var key strings.Builder
	for _, r := range rows {
		key.WriteString(r.Kind + "\x00" + r.RuleID + "\x00")
		if r.Enabled != nil {
			key.WriteString(strconv.FormatBool(*r.Enabled))
		}
		key.WriteByte(0)
		key.Write(r.Body)
		key.WriteByte(0)
	}
	if c, ok := n.rules.Get(userID); ok && c.key == key.String() {
		return c.rs
	}
	rs := Ruleset(userID, rows)
	n.rules.Put(userID, cachedRules{key: key.String(), rs: rs})
	return rs
}

type cachedRules struct {
	key string
	rs  *pushrules.Ruleset
}

func (n *Notifier) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+n.serverName)
}

// target is one user to evaluate an event for.
type target struct {
	userID      string
	displayName string
}

// work is one event with what its evaluation needs.
type work struct {
	ev          *storage.Event
	pev         *pushrules.Event
	targets     []target
	memberCount int
	senderPL    int64
	pl          func(string) int64
	thread      string
}

// process stores the notifications of a batch and then wakes its rooms:
// after the rows are visible, or at once if there are none or storing
// failed (the events themselves are visible already).
func (n *Notifier) process(ctx context.Context, batch []*storage.Event) error {
	published, err := n.store(ctx, batch)
	if !published {
		n.wakeRooms(batch)
	}
	return err
}

// store evaluates the batch and stores its notifications; published tells
// whether it arranged the wake-up.
func (n *Notifier) store(ctx context.Context, batch []*storage.Event) (published bool, err error) {
	var works []*work
	for _, e := range batch {
		w, err := n.prepare(ctx, e)
		if err != nil {
			logrus.WithError(err).WithField("event_id", e.EventID).Warn("push rules: skipping event")
			continue
		}
		if w == nil || len(w.targets) == 0 {
			continue
		}
		works = append(works, w)
	}
	out, err := n.evaluate(ctx, n.db, works)
	if err != nil {
		return false, err
	}
	joins := n.newJoins(ctx, n.db, batch)
	if len(out) == 0 && len(joins) == 0 {
		return false, nil
	}
	err = n.db.WithTx(ctx, func(tx *storage.Tx) error {
		// The queue is in memory: a crash loses the notifications of
		// events not yet processed anyway, so the commit need not wait
		// for the disk, and the wake-up it delays comes sooner.
		if err := tx.Derived(ctx); err != nil {
			return err
		}
		pos, list, err := n.write(ctx, tx, out, joins)
		if err != nil {
			return err
		}
		tx.Publish(pos, func() {
			if n.wake != nil {
				n.wake(list...)
			}
			n.wakeRooms(batch)
		})
		return nil
	})
	return err == nil, err
}

// evaluate runs the targets' push rules on the prepared events, reading
// rules, ignore lists and thread subscriptions through q.
func (n *Notifier) evaluate(ctx context.Context, q storage.Querier, works []*work) ([]storage.Notification, error) {
	if len(works) == 0 {
		return nil, nil
	}
	userSet := map[string]bool{}
	for _, w := range works {
		for _, t := range w.targets {
			userSet[t.userID] = true
		}
	}
	users := make([]string, 0, len(userSet))
	for u := range userSet {
		users = append(users, u)
	}
	rows, err := storage.PushRulesMany(ctx, q, users)
	if err != nil {
		return nil, err
	}
	ignores, err := storage.IgnoredUsersMany(ctx, q, users)
	if err != nil {
		return nil, err
	}
	rulesets := map[string]*pushrules.Ruleset{}
	// Who subscribed to each thread of the batch (MSC4306's condition),
	// one read per thread.
	subscribers := map[string]map[string]bool{}
	now := time.Now().UnixMilli()
	var out []storage.Notification
	for _, w := range works {
		var subs map[string]bool
		if w.thread != "main" {
			key := w.ev.RoomID + "\x00" + w.thread
			if subs = subscribers[key]; subs == nil {
				if subs, err = storage.ThreadSubscribers(ctx, q, w.ev.RoomID, w.thread); err != nil {
					return nil, err
				}
				subscribers[key] = subs
			}
		}
		for _, t := range w.targets {
			if ignores[t.userID][w.ev.Sender] {
				continue
			}
			rs := rulesets[t.userID]
			if rs == nil {
				rs = n.ruleset(t.userID, rows[t.userID])
				rulesets[t.userID] = rs
			}
			pc := &pushrules.Context{
				UserID: t.userID, DisplayName: t.displayName, MemberCount: w.memberCount,
				SenderPowerLevel: w.senderPL, NotificationLevel: w.pl,
			}
			if subs != nil {
				subscribed := subs[t.userID]
				pc.ThreadSubscribed = &subscribed
			}
			res := rs.Evaluate(w.pev, pc)
			if !res.Notify {
				continue
			}
			actions, _ := json.Marshal(res.Actions)
			out = append(out, storage.Notification{UserID: t.userID, RoomID: w.ev.RoomID, EventID: w.ev.EventID, EventPos: w.ev.StreamPos,
				ThreadID: w.thread, Highlight: res.Highlight, Actions: actions, TS: now})
		}
	}
	return out, nil
}

// write stores notification rows and restarts the counts of new joins in
// tx; it returns the stream position of the new totals and the users to
// wake once it is visible.
func (n *Notifier) write(ctx context.Context, tx *storage.Tx, out []storage.Notification, joins []*storage.Event) (int64, []string, error) {
	pos, err := storage.InsertNotifications(ctx, tx, out)
	if err != nil {
		return 0, nil, err
	}
	woken := map[string]bool{}
	var list []string
	for _, o := range out {
		if !woken[o.UserID] {
			woken[o.UserID] = true
			list = append(list, o.UserID)
		}
	}
	// After the batch's own rows: an invite and the join answering it
	// may come in one batch.
	for _, j := range joins {
		p, err := storage.ClearUnreadBefore(ctx, tx, j.Sender, j.RoomID, j.StreamPos)
		if err != nil {
			return 0, nil, err
		}
		pos = max(pos, p)
		if !woken[j.Sender] {
			woken[j.Sender] = true
			list = append(list, j.Sender)
		}
	}
	return pos, list, nil
}

// newJoins are the batch's joins of local users who were not joined
// before (not a profile change): their counts in the room restart there.
// One membership read per such join, which is rare next to messages.
func (n *Notifier) newJoins(ctx context.Context, q storage.Querier, batch []*storage.Event) []*storage.Event {
	var out []*storage.Event
	for _, e := range batch {
		if e.Type != "m.room.member" || e.Membership != "join" || e.StateKey == nil || *e.StateKey != e.Sender || !n.isLocal(e.Sender) || e.StreamPos <= 0 {
			continue
		}
		prev, err := storage.LatestMembershipBefore(ctx, q, e.RoomID, e.Sender, e.StreamPos-1)
		if err == nil && prev.Membership == "join" {
			continue
		}
		out = append(out, e)
	}
	return out
}

// prepare finds who an event may notify: the room's joined local members
// but the sender, and the local target of an invite.
func (n *Notifier) prepare(ctx context.Context, e *storage.Event) (*work, error) {
	room, err := n.rs.PushContext(ctx, e.RoomID, e.Sender)
	if err != nil {
		return nil, err
	}
	return n.prepareRoom(ctx, n.db, e, room)
}

// prepareRoom is prepare against given room state, reading relations
// through q.
func (n *Notifier) prepareRoom(ctx context.Context, q storage.Querier, e *storage.Event, room *Room) (*work, error) {
	var err error
	w := &work{ev: e}
	for userID, name := range room.Joined {
		w.memberCount++
		if userID != e.Sender && n.isLocal(userID) {
			w.targets = append(w.targets, target{userID: userID, displayName: name})
		}
	}
	if e.Type == "m.room.member" && e.Membership == "invite" && e.StateKey != nil && *e.StateKey != e.Sender && n.isLocal(*e.StateKey) {
		w.targets = append(w.targets, target{userID: *e.StateKey})
	}
	if len(w.targets) == 0 {
		return w, nil
	}
	if w.pev, err = pushrules.NewEvent(e.JSON); err != nil {
		return nil, err
	}
	w.senderPL = room.SenderPowerLevel
	w.pl = room.NotificationLevel
	w.thread = threadOf(ctx, q, e.JSON)
	return w, nil
}

type relation struct {
	Content struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	} `json:"content"`
}

// maxThreadHops bounds how far relations are followed to find a thread
// (the spec recommends 3).
const maxThreadHops = 3

// threadOf returns the thread an event belongs to: the root of an
// m.thread relation found within a few relation hops, else "main".
func threadOf(ctx context.Context, q storage.Querier, js []byte) string {
	for hop := 0; hop < maxThreadHops; hop++ {
		var r relation
		if json.Unmarshal(js, &r) != nil || r.Content.RelatesTo == nil || r.Content.RelatesTo.EventID == "" || r.Content.RelatesTo.RelType == "" {
			return "main"
		}
		if r.Content.RelatesTo.RelType == "m.thread" {
			return r.Content.RelatesTo.EventID
		}
		parent, err := storage.GetEvent(ctx, q, r.Content.RelatesTo.EventID)
		if err != nil {
			return "main"
		}
		js = parent.JSON
	}
	return "main"
}

// Ruleset builds a user's rule set from their stored rows.
func Ruleset(userID string, rows []storage.PushRuleRow) *pushrules.Ruleset {
	stored := make([]pushrules.Stored, 0, len(rows))
	for _, r := range rows {
		stored = append(stored, pushrules.Stored{Kind: pushrules.Kind(r.Kind), RuleID: r.RuleID, Enabled: r.Enabled, Body: r.Body})
	}
	return pushrules.ForUser(userID, stored)
}

// UserRuleset loads and builds a user's rule set.
func UserRuleset(ctx context.Context, q storage.Querier, userID string) (*pushrules.Ruleset, error) {
	rows, err := storage.PushRules(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	return Ruleset(userID, rows), nil
}

// AccountDataContent is the content of the m.push_rules account data
// event /sync sends: {"global": ruleset}.
func AccountDataContent(ctx context.Context, q storage.Querier, userID string) (json.RawMessage, error) {
	rs, err := UserRuleset(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"global": rs})
}
