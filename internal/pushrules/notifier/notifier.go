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

	rules *lru.Cache[string, cachedRules] // the worker's alone
}

// maxBatch bounds how many events one transaction handles.
const maxBatch = 256

// batchWait is how long a batch of fewer than four events waits for more.
const batchWait = 3 * time.Millisecond

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
	if e.StreamPos <= 0 || e.Outlier || e.Rejected || e.SoftFailed || e.Imported {
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
		// A lone event waits a moment for the next: events sent one at
		// a time then share the notifier's reads and its commit (a
		// transaction per event was a third of the server's CPU on
		// sequential sends), for a few milliseconds more before the
		// room's long-polls wake.
		n.mu.Lock()
		lone := len(n.queue) < 4 && !n.closed
		n.mu.Unlock()
		if lone {
			time.Sleep(batchWait)
		}
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

// wakeRooms wakes the long-polls of the rooms of evs, each room once.
func (n *Notifier) wakeRooms(evs []*storage.Event) {
	if n.wakeRoom == nil {
		return
	}
	seen := make(map[string]bool, 1)
	for _, e := range evs {
		if !seen[e.RoomID] {
			seen[e.RoomID] = true
			n.wakeRoom(e.RoomID)
		}
	}
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
	userSet := map[string]bool{}
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
		for _, t := range w.targets {
			userSet[t.userID] = true
		}
	}
	joins := n.newJoins(ctx, batch)
	if len(works) == 0 && len(joins) == 0 {
		return false, nil
	}
	users := make([]string, 0, len(userSet))
	for u := range userSet {
		users = append(users, u)
	}
	rows, err := storage.PushRulesMany(ctx, n.db, users)
	if err != nil {
		return false, err
	}
	ignores, err := storage.IgnoredUsersMany(ctx, n.db, users)
	if err != nil {
		return false, err
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
				if subs, err = storage.ThreadSubscribers(ctx, n.db, w.ev.RoomID, w.thread); err != nil {
					return false, err
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
		pos, err := storage.InsertNotifications(ctx, tx, out)
		if err != nil {
			return err
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
				return err
			}
			pos = max(pos, p)
			if !woken[j.Sender] {
				woken[j.Sender] = true
				list = append(list, j.Sender)
			}
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

// newJoins are the batch's joins of local users who were not joined
// before (not a profile change): their counts in the room restart there.
// One membership read per such join, which is rare next to messages.
func (n *Notifier) newJoins(ctx context.Context, batch []*storage.Event) []*storage.Event {
	var out []*storage.Event
	for _, e := range batch {
		if e.Type != "m.room.member" || e.Membership != "join" || e.StateKey == nil || *e.StateKey != e.Sender || !n.isLocal(e.Sender) || e.StreamPos <= 0 {
			continue
		}
		prev, err := storage.LatestMembershipBefore(ctx, n.db, e.RoomID, e.Sender, e.StreamPos-1)
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
	w.thread = n.threadOf(ctx, e.JSON)
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
func (n *Notifier) threadOf(ctx context.Context, js []byte) string {
	for hop := 0; hop < maxThreadHops; hop++ {
		var r relation
		if json.Unmarshal(js, &r) != nil || r.Content.RelatesTo == nil || r.Content.RelatesTo.EventID == "" || r.Content.RelatesTo.RelType == "" {
			return "main"
		}
		if r.Content.RelatesTo.RelType == "m.thread" {
			return r.Content.RelatesTo.EventID
		}
		parent, err := storage.GetEvent(ctx, n.db, r.Content.RelatesTo.EventID)
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
