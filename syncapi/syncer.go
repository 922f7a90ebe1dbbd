package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"enclave/internal/lru"
	"enclave/roomserver"
	"enclave/storage"
)

// RoomServer is what the sync stream reads of room state.
type RoomServer interface {
	CurrentState(ctx context.Context, roomID string) (roomserver.StateMap, error)
	StateAtSnapshot(ctx context.Context, id int64) (roomserver.StateMap, error)
	StateEventAt(ctx context.Context, snapshot int64, typ, stateKey string) (gomatrixserverlib.PDU, error)
	PDU(e *storage.Event) (gomatrixserverlib.PDU, error)
	Subscribe(fn func(roomserver.OutputEvent))
}

// Extension adds one stream's part (to-device, account data, receipts,
// typing, device lists, …) to a sync response for the range (Since, To].
// Components register theirs with Syncer.AddExtension.
type Extension interface {
	Apply(ctx context.Context, req *Request, resp *Response) error
}

// Request is one /sync computation.
type Request struct {
	UserID    string
	DeviceID  string
	Since     Token // zero for an initial sync
	To        Token
	Initial   bool
	FullState bool
	Filter    *Filter
	// StateAfter: send MSC4222's state_after in place of state.
	StateAfter StateAfterMode
	// JoinedRooms are the rooms the user is joined to at To.
	JoinedRooms []string
}

// Syncer serves /sync.
type Syncer struct {
	db         *storage.DB
	rs         RoomServer
	n          *wakeups // who to wake when a room or user moves (wakeups.go)
	eph        atomic.Int64
	extMu      sync.RWMutex
	extensions []Extension
	// stopping is closed by Shutdown: long-polls answer at once.
	stopping chan struct{}
	stopOnce sync.Once
	// builds bounds concurrent response builds (see New).
	builds chan struct{}
	// ranges shares timeline reads between /syncs (roomRange).
	rangesMu sync.Mutex
	ranges   *lru.Cache[rangeKey, *rangeRead]
	// wakesHandedOff: see Options.EventWakesHandedOff.
	wakesHandedOff bool
	// keyCounts is the key-count signature (keyCountsSig) each device was
	// last answered with: a change wakes its long-poll and answers it,
	// since key counts are not a stream the since token covers.
	keyCounts *lru.Cache[string, string]
	// The per-server state of the ephemeral streams and sliding sync.
	typing   *Typing
	presence *Presence
	sliding  *lru.Cache[string, *slidingConn]
}

// Options are the syncer's construction choices.
type Options struct {
	// EventWakesHandedOff leaves waking a room's long-polls for each new
	// event to a later stage, which then calls NotifyRoom for every event
	// it is given. The push notifier takes it, so that an event and the
	// unread counts it causes reach a client in one response, not two.
	EventWakesHandedOff bool
	// PresenceDisabled switches presence off (config presence.enabled).
	PresenceDisabled bool
}

// New makes a syncer and subscribes it to the room server's output.
func New(db *storage.DB, rs RoomServer, opts Options) *Syncer {
	// A message wakes every member's long-poll at once. Building all
	// those responses together would hold every store connection, and the
	// next send would queue behind them: builds get half the pool. A build
	// is mostly CPU (ours and the database's), so more of them at once
	// than twice the cores only adds contention: on two cores, four
	// concurrent builds cut fan-out p99 by a third against ten.
	maxBuilds := 8
	if n := db.Stats().MaxOpenConnections; n > 0 {
		maxBuilds = max(2, n/2)
	}
	maxBuilds = max(2, min(maxBuilds, 2*runtime.GOMAXPROCS(0)))
	s := &Syncer{db: db, rs: rs, n: newWakeups(db), stopping: make(chan struct{}), builds: make(chan struct{}, maxBuilds),
		ranges: lru.New[rangeKey, *rangeRead](1024), wakesHandedOff: opts.EventWakesHandedOff,
		sliding: lru.New[string, *slidingConn](10000), keyCounts: lru.New[string, string](100000)}
	s.typing = &Typing{s: s, rooms: map[string]*typingRoom{}}
	s.presence = newPresence(s, !opts.PresenceDisabled)
	rs.Subscribe(s.onEvent)
	return s
}

// AddExtension registers a stream (see Extension).
func (s *Syncer) AddExtension(e Extension) {
	s.extMu.Lock()
	defer s.extMu.Unlock()
	s.extensions = append(s.extensions, e)
}

func (s *Syncer) onEvent(o roomserver.OutputEvent) {
	ctx := context.Background()
	if o.Event.Type == "m.room.member" && o.Event.StateKey != nil {
		s.n.onMembership(ctx, o.Event.RoomID, *o.Event.StateKey, o.Event.Membership)
	}
	if !s.wakesHandedOff {
		s.n.wakeRoom(ctx, o.Event.RoomID)
	}
}

// Typing is the syncer's typing tracker.
func (s *Syncer) Typing() *Typing { return s.typing }

// Presence is the syncer's presence tracker.
func (s *Syncer) Presence() *Presence { return s.presence }

// NotifyUsers wakes these users' long-polls: call it (through
// storage.Tx.Publish) after storing a row for them.
func (s *Syncer) NotifyUsers(users ...string) { s.n.wakeUsers(users...) }

// NotifyRoom wakes everyone in a room (receipts).
func (s *Syncer) NotifyRoom(roomID string) { s.n.wakeRoom(context.Background(), roomID) }

// BumpEphemeral advances the ephemeral counter (typing) and returns it; the
// caller then wakes whoever should hear.
func (s *Syncer) BumpEphemeral() int64 { return s.eph.Add(1) }

// Shutdown makes every waiting and future long-poll answer at once with
// what it has, so a stopping server drains its connections instead of
// waiting out /sync timeouts. Clients resume from the token they get.
func (s *Syncer) Shutdown() { s.stopOnce.Do(func() { close(s.stopping) }) }

func (s *Syncer) shuttingDown() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// Current is the token a sync would reach now.
func (s *Syncer) Current() Token { return Token{Pos: s.db.Stream.Current(), Eph: s.eph.Load()} }

// Waiters is the number of long-polls of a kind waiting now (metrics).
func (s *Syncer) Waiters(kind WaiterKind) int { return s.n.Waiters(kind) }

// Params are the parsed query of GET /sync.
type Params struct {
	UserID    string
	DeviceID  string
	Since     *Token
	Timeout   time.Duration
	FullState bool
	Filter    *Filter
	// StateAfter: see Request.StateAfter.
	StateAfter StateAfterMode
}

// StateAfterMode is whether and under which name a sync sends MSC4222's
// state_after.
type StateAfterMode int

// The state_after modes.
const (
	StateAfterOff StateAfterMode = iota
	StateAfterStable
	StateAfterUnstable
)

// Sync answers one /sync: at once when there is something to say (or for
// an initial sync), otherwise when woken or when the timeout passes.
func (s *Syncer) Sync(ctx context.Context, p Params) (*Response, error) {
	if p.Filter == nil {
		p.Filter = &Filter{}
	}
	deadline := time.Now().Add(p.Timeout)
	for {
		wake := s.n.channel(p.UserID)
		to := s.Current()
		if p.Since != nil && p.Since.Eph > to.Eph {
			p.Since.Eph = 0 // typing counter restarted with the server
		}
		if p.Since != nil && p.Since.Pos > to.Pos {
			p.Since.Pos = to.Pos // a token from the future: treat as now
		}
		select {
		case s.builds <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		resp, err := s.build(ctx, p, to)
		<-s.builds
		if err != nil {
			return nil, err
		}
		if p.Since == nil || p.FullState || !resp.empty() || s.keyCountsChanged(p, resp) || !time.Now().Before(deadline) || s.shuttingDown() {
			s.keyCounts.Put(p.UserID+"|"+p.DeviceID, keyCountsSig(resp))
			return resp, nil
		}
		s.n.addWaiter(SyncWaiter, 1)
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-timer.C:
		case <-s.stopping:
		case <-ctx.Done():
			timer.Stop()
			s.n.addWaiter(SyncWaiter, -1)
			return nil, ctx.Err()
		}
		timer.Stop()
		s.n.addWaiter(SyncWaiter, -1)
	}
}

// keyCountsChanged reports whether the device's one-time key counts or
// unused fallback key types differ from those it was last answered with.
// A device not remembered (a restart) counts as unchanged.
func (s *Syncer) keyCountsChanged(p Params, resp *Response) bool {
	prev, ok := s.keyCounts.Get(p.UserID + "|" + p.DeviceID)
	return ok && prev != keyCountsSig(resp)
}

// keyCountsSig is a comparable rendering of a response's key counts.
func keyCountsSig(resp *Response) string {
	algs := make([]string, 0, len(resp.DeviceOneTimeKeysCount))
	for a, n := range resp.DeviceOneTimeKeysCount {
		algs = append(algs, a+"="+strconv.Itoa(n))
	}
	sort.Strings(algs)
	sig := strings.Join(algs, ",")
	if resp.DeviceUnusedFallbackKeyTypes != nil {
		fb := slices.Clone(*resp.DeviceUnusedFallbackKeyTypes)
		sort.Strings(fb)
		sig += "|" + strings.Join(fb, ",")
	}
	return sig
}

func (s *Syncer) build(ctx context.Context, p Params, to Token) (*Response, error) {
	resp := &Response{
		NextBatch: to.String(),
		Rooms:     Rooms{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{}, Leave: map[string]*LeftRoom{}},
	}
	req := &Request{UserID: p.UserID, DeviceID: p.DeviceID, To: to, Initial: p.Since == nil, FullState: p.FullState, Filter: p.Filter, StateAfter: p.StateAfter}
	if p.Since != nil {
		req.Since = *p.Since
	}
	if err := s.rooms(ctx, req, resp); err != nil {
		return nil, err
	}
	s.extMu.RLock()
	exts := s.extensions
	s.extMu.RUnlock()
	for _, e := range exts {
		if err := e.Apply(ctx, req, resp); err != nil {
			return nil, err
		}
	}
	if req.StateAfter != StateAfterOff {
		// Rooms only an extension filled (receipts, typing) carry an
		// empty state_after too: its presence tells the client the
		// server honoured the flag.
		for _, jr := range resp.Rooms.Join {
			if jr.StateAfter == nil && jr.StateAfterUnstable == nil {
				jr.State.Events = nil
				setStateAfter(req, &jr.StateAfter, &jr.StateAfterUnstable, nil)
			}
		}
	}
	return resp, nil
}

// rooms fills the joined, invited and left sections.
func (s *Syncer) rooms(ctx context.Context, req *Request, resp *Response) error {
	userRooms, err := storage.UserRooms(ctx, s.db, req.UserID)
	if err != nil {
		return err
	}
	current := make(map[string]string, len(userRooms))
	// The user's membership events can only be in range if one of their
	// current ones is (the latest per room is in current_state): most
	// incremental syncs skip that query. Position 0 (remote state) is unknown.
	membershipMoved := false
	for id, ur := range userRooms {
		current[id] = ur.Membership
		if ur.MemberPos <= 0 || ur.MemberPos > req.Since.Pos {
			membershipMoved = true
		}
	}
	var forgotten map[string]bool // read on the first left room
	// Membership changes in range: which rooms are new to the client.
	changed := map[string]*storage.Event{}
	if !req.Initial && membershipMoved {
		evs, err := storage.MembershipEventsForUser(ctx, s.db, req.UserID, req.Since.Pos, req.To.Pos)
		if err != nil {
			return err
		}
		for _, e := range evs {
			changed[e.RoomID] = e
			if _, ok := current[e.RoomID]; !ok {
				current[e.RoomID] = e.Membership
			}
		}
	}
	rf := &req.Filter.Room
	ids := make([]string, 0, len(current))
	for id := range current {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, roomID := range ids {
		if !allowsRoom(rf.Rooms, rf.NotRooms, roomID) {
			continue
		}
		membership := current[roomID]
		change := changed[roomID]
		if change != nil {
			membership = change.Membership // as of To, not later
		}
		switch membership {
		case "join":
			req.JoinedRooms = append(req.JoinedRooms, roomID)
			if ur, ok := userRooms[roomID]; ok && change == nil && !req.Initial && !req.FullState && ur.LastPos <= req.Since.Pos {
				continue // nothing new in this room
			}
			newlyJoined := false
			if change != nil && !req.Initial {
				prev, err := storage.LatestMembershipBefore(ctx, s.db, roomID, req.UserID, req.Since.Pos)
				newlyJoined = err != nil || prev.Membership != "join"
			}
			if err := s.joinedRoom(ctx, req, resp, roomID, newlyJoined); err != nil {
				return err
			}
		case "invite", "knock":
			if req.Initial || change != nil {
				ir, err := s.invitedRoom(ctx, req.UserID, roomID, change)
				if err != nil {
					return err
				}
				if ir != nil {
					if membership == "knock" {
						if resp.Rooms.Knock == nil {
							resp.Rooms.Knock = map[string]*KnockedRoom{}
						}
						kr := &KnockedRoom{}
						kr.KnockState.Events = ir.InviteState.Events
						resp.Rooms.Knock[roomID] = kr
					} else {
						resp.Rooms.Invite[roomID] = ir
					}
				}
			}
		case "leave", "ban":
			// A leave in range is always shown, even of a room forgotten
			// since: the user's other devices learn of it that way.
			// include_leave brings back rooms left before `since` only
			// when the client asks for everything (initial or full_state
			// sync), and never forgotten ones.
			if change != nil && !req.Initial {
				if err := s.leftRoom(ctx, req, resp, roomID, change); err != nil {
					return err
				}
				continue
			}
			if !rf.IncludeLeave || !(req.Initial || req.FullState) {
				continue
			}
			if forgotten == nil {
				if forgotten, err = storage.ForgottenRooms(ctx, s.db, req.UserID); err != nil {
					return err
				}
			}
			if !forgotten[roomID] {
				if err := s.leftRoom(ctx, req, resp, roomID, change); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// timeline returns the visible, filtered timeline of a room in (from, to]
// and whether it was cut short.
func (s *Syncer) timeline(ctx context.Context, req *Request, roomID string, from, to int64) ([]*storage.Event, Memberships, bool, error) {
	tf := &req.Filter.Room.Timeline
	if tf.Limit != nil && *tf.Limit == 0 {
		// limit 0: no events, only state (clients ask for it to learn a
		// room's state without its history). Limited when there were any.
		evs, err := s.roomRange(ctx, roomID, from, to, 1)
		return nil, nil, len(evs) > 0, err
	}
	return s.recentEvents(ctx, req.UserID, roomID, from, to, tf.LimitOr(10))
}

// recentEvents returns the last limit events of (from, to] that userID may
// see, oldest first, and whether more were left out. /sync and sliding
// sync both read through it, so both share roomRange's reads.
func (s *Syncer) recentEvents(ctx context.Context, userID, roomID string, from, to int64, limit int) ([]*storage.Event, Memberships, bool, error) {
	shared, err := s.roomRange(ctx, roomID, from, to, limit+1)
	if err != nil {
		return nil, nil, false, err
	}
	evs := slices.Clone(shared) // reordered below; the stored events themselves are only read
	limited := len(evs) > limit
	if limited {
		evs = evs[:limit]
	}
	// A hole in the window (events this server missed: storage.Gap) cuts
	// it: only what lies above the hole is sent, marked limited, so the
	// client's prev_batch pages into the hole and backfill fills it.
	if len(evs) > 0 {
		lo := from
		if limited {
			lo = evs[len(evs)-1].StreamPos - 1
		}
		g, err := storage.GapBelow(ctx, s.db, roomID, lo-1, to-1)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, nil, false, err
		}
		if g != nil {
			above := g.NextPos + 1
			cut := len(evs)
			for i, e := range evs {
				if e.StreamPos < above {
					cut = i
					break
				}
			}
			evs, limited = evs[:cut], true
		}
	}
	slices.Reverse(evs)
	evs, ms, err := s.VisibleAt(ctx, userID, roomID, evs)
	return evs, ms, limited, err
}

// format renders a timeline; ms (from recentEvents) adds each event's
// unsigned.membership.
func (s *Syncer) format(req *Request, evs []*storage.Event, ms Memberships, tf *RoomEventFilter) []ClientEvent {
	out := make([]ClientEvent, 0, len(evs))
	v := Viewer{UserID: req.UserID, DeviceID: req.DeviceID, Memberships: ms}
	ignored := s.IgnoredBy(req.UserID)
	for _, e := range evs {
		if tf != nil && !tf.AllowsEvent(e.RoomID, e.Type, e.Sender, e.JSON) {
			continue
		}
		if Ignored(ignored, e.Sender, e.StateKey != nil) {
			continue
		}
		pdu, err := s.rs.PDU(e)
		if err != nil {
			continue
		}
		out = append(out, FormatEvent(e, pdu, v, false))
	}
	return out
}

func (s *Syncer) joinedRoom(ctx context.Context, req *Request, resp *Response, roomID string, newlyJoined bool) error {
	full := req.Initial || req.FullState || newlyJoined
	from := req.Since.Pos
	if req.Initial || newlyJoined {
		from = 0
	}
	evs, ms, limited, err := s.timeline(ctx, req, roomID, from, req.To.Pos)
	if err != nil {
		return err
	}
	if !full && len(evs) == 0 {
		return nil
	}
	jr := resp.JoinedRoom(roomID)
	tf := &req.Filter.Room.Timeline
	jr.Timeline.Events = s.format(req, evs, ms, tf)
	jr.Timeline.Limited = limited
	jr.Timeline.PrevBatch = Token{Pos: from}.String()
	if len(evs) > 0 {
		jr.Timeline.PrevBatch = Token{Pos: evs[0].StreamPos - 1}.String()
	}
	if req.StateAfter != StateAfterOff {
		end := int64(0)
		if len(evs) > 0 {
			end = evs[len(evs)-1].SnapshotAfter
		} else if end, err = storage.SnapshotAtPos(ctx, s.db, roomID, req.To.Pos); err != nil {
			return err
		}
		sa, err := s.stateAfter(ctx, req, roomID, evs, ms, full, limited, end)
		if err != nil {
			return err
		}
		jr.State.Events = nil
		setStateAfter(req, &jr.StateAfter, &jr.StateAfterUnstable, sa)
	}
	// State: everything at the timeline's start when the client has none
	// of it; otherwise what changed in the gap a limited timeline skipped.
	var state []gomatrixserverlib.PDU
	switch {
	case req.StateAfter != StateAfterOff:
	case full:
		snap, err := s.snapshotAtTimelineStart(ctx, roomID, evs, req.To.Pos)
		if err != nil {
			return err
		}
		st, err := s.rs.StateAtSnapshot(ctx, snap)
		if err != nil {
			return err
		}
		state = st.Events()
	case limited:
		before, err := storage.SnapshotAtPos(ctx, s.db, roomID, req.Since.Pos)
		if err != nil {
			return err
		}
		old, err := s.rs.StateAtSnapshot(ctx, before)
		if err != nil {
			return err
		}
		st, err := s.rs.StateAtSnapshot(ctx, evs0Snapshot(evs))
		if err != nil {
			return err
		}
		for k, e := range st {
			if o := old[k]; o == nil || o.EventID() != e.EventID() {
				state = append(state, e)
			}
		}
	}
	if req.StateAfter == StateAfterOff {
		jr.State.Events = s.formatState(req, roomID, state, evs, true)
	}
	if full || hasMemberEvent(evs) {
		jr.Summary, err = s.summary(ctx, req.UserID, roomID)
		if err != nil {
			return err
		}
	}
	return nil
}

func evs0Snapshot(evs []*storage.Event) int64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[0].SnapshotBefore
}

func hasMemberEvent(evs []*storage.Event) bool {
	for _, e := range evs {
		if e.Type == "m.room.member" {
			return true
		}
	}
	return false
}

// snapshotAtTimelineStart is the state before the first timeline event, or
// the state at `to` when the timeline is empty.
func (s *Syncer) snapshotAtTimelineStart(ctx context.Context, roomID string, evs []*storage.Event, to int64) (int64, error) {
	if len(evs) > 0 {
		return evs[0].SnapshotBefore, nil
	}
	return storage.SnapshotAtPos(ctx, s.db, roomID, to)
}

// formatState applies the state filter and lazy loading of members: only
// the members who sent timeline events (and the user) are sent.
func (s *Syncer) formatState(req *Request, roomID string, state []gomatrixserverlib.PDU, timeline []*storage.Event, skipTimeline bool) []ClientEvent {
	sf := &req.Filter.Room.State
	var senders map[string]bool
	if sf.LazyLoadMembers {
		senders = map[string]bool{req.UserID: true}
		for _, e := range timeline {
			senders[e.Sender] = true
		}
	}
	inTimeline := map[string]bool{}
	for _, e := range timeline {
		inTimeline[e.EventID] = true
	}
	ids := make([]string, 0, len(state))
	byID := map[string]gomatrixserverlib.PDU{}
	for _, e := range state {
		if (skipTimeline && inTimeline[e.EventID()]) || !sf.AllowsEvent(roomID, e.Type(), string(e.SenderID()), nil) {
			continue
		}
		if senders != nil && e.Type() == "m.room.member" && !senders[*e.StateKey()] {
			continue
		}
		ids = append(ids, e.EventID())
		byID[e.EventID()] = e
	}
	if len(ids) == 0 {
		return []ClientEvent{}
	}
	stored, err := storage.GetEvents(context.Background(), s.db, ids)
	if err != nil {
		return []ClientEvent{}
	}
	sort.Slice(stored, func(i, j int) bool { return stored[i].StreamPos < stored[j].StreamPos })
	out := make([]ClientEvent, 0, len(stored))
	v := Viewer{UserID: req.UserID, DeviceID: req.DeviceID}
	for _, e := range stored {
		pdu, err := s.rs.PDU(e)
		if err != nil {
			continue
		}
		out = append(out, FormatEvent(e, pdu, v, false))
	}
	return out
}

// summary computes m.heroes and member counts from current state.
func (s *Syncer) summary(ctx context.Context, userID, roomID string) (*Summary, error) {
	st, err := s.rs.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	joined, invited := 0, 0
	var heroes []string
	for k, e := range st {
		if k.Type != "m.room.member" {
			continue
		}
		m, _ := e.Membership()
		switch m {
		case "join":
			joined++
		case "invite":
			invited++
		default:
			continue
		}
		if k.StateKey != userID {
			heroes = append(heroes, k.StateKey)
		}
	}
	sort.Strings(heroes)
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	return &Summary{Heroes: heroes, JoinedMemberCount: &joined, InvitedMemberCount: &invited}, nil
}

// strippedTypes are the state events shown with an invite.
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

func (s *Syncer) invitedRoom(ctx context.Context, userID, roomID string, invite *storage.Event) (*InvitedRoom, error) {
	st, err := s.rs.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	ir := &InvitedRoom{}
	ir.InviteState.Events = []StrippedEvent{}
	for _, t := range strippedTypes {
		if e := st.Get(t, ""); e != nil {
			se := StrippedEvent{Content: e.Content(), Sender: string(e.SenderID()), StateKey: "", Type: t}
			if t == "m.room.create" {
				// MSC4311: the whole create event, so the invitee can check
				// the room ID is its hash and who the creators are.
				se.EventID, se.OriginServerTS, se.RoomID = e.EventID(), int64(e.OriginServerTS()), roomID
			}
			ir.InviteState.Events = append(ir.InviteState.Events, se)
		}
	}
	own := st.Get("m.room.member", userID)
	if own == nil || st.Get("m.room.create", "") == nil {
		// A room on another server we are not in: the inviting server sent
		// the stripped state along with the invite.
		if invite == nil {
			if invite, err = storage.LatestMembershipBefore(ctx, s.db, roomID, userID, 1<<62); err != nil {
				return nil, nil //nolint:nilerr // no invite to show
			}
		}
		pdu, err := s.rs.PDU(invite)
		if err != nil {
			return nil, err
		}
		var u struct {
			State []StrippedEvent `json:"invite_room_state"`
		}
		_ = json.Unmarshal(pdu.Unsigned(), &u)
		ir.InviteState.Events = append(ir.InviteState.Events, u.State...)
		own = pdu
	}
	// The inviter's own member event, so clients show their name and
	// avatar rather than a bare user ID (a remote room's comes with the
	// invite's stripped state).
	inviter := string(own.SenderID())
	if e := st.Get("m.room.member", inviter); e != nil && inviter != userID && !hasStripped(ir.InviteState.Events, "m.room.member", inviter) {
		ir.InviteState.Events = append(ir.InviteState.Events, StrippedEvent{Content: e.Content(), Sender: inviter, StateKey: inviter, Type: "m.room.member"})
	}
	// The invite itself with its ID and time: clients date the invite by it.
	ir.InviteState.Events = append(ir.InviteState.Events, StrippedEvent{Content: own.Content(), Sender: inviter, StateKey: userID, Type: "m.room.member",
		EventID: own.EventID(), OriginServerTS: int64(own.OriginServerTS())})
	return ir, nil
}

func hasStripped(evs []StrippedEvent, typ, stateKey string) bool {
	for _, e := range evs {
		if e.Type == typ && e.StateKey == stateKey {
			return true
		}
	}
	return false
}

func (s *Syncer) leftRoom(ctx context.Context, req *Request, resp *Response, roomID string, leave *storage.Event) error {
	to := req.To.Pos
	if leave == nil {
		if e, err := storage.LatestMembershipBefore(ctx, s.db, roomID, req.UserID, req.To.Pos); err == nil {
			leave = e
		}
	}
	if leave != nil {
		to = leave.StreamPos
	}
	from := req.Since.Pos
	if from > to {
		from = 0
	}
	evs, ms, limited, err := s.timeline(ctx, req, roomID, from, to)
	if err != nil {
		return err
	}
	lr := &LeftRoom{State: StateList{Events: []ClientEvent{}}, AccountData: EventList{Events: []any{}}}
	lr.Timeline.Events = s.format(req, evs, ms, &req.Filter.Room.Timeline)
	lr.Timeline.Limited = limited
	lr.Timeline.PrevBatch = Token{Pos: from}.String()
	if len(evs) > 0 {
		lr.Timeline.PrevBatch = Token{Pos: evs[0].StreamPos - 1}.String()
	}
	// State as for a joined room: the whole state at the timeline's start
	// when the client has none of it, and with an empty timeline (limit
	// 0) the state as the user left, their leave included.
	var snap int64
	switch {
	case req.StateAfter != StateAfterOff:
		if leave != nil {
			full := req.Initial || req.FullState || len(evs) == 0
			sa, err := s.stateAfter(ctx, req, roomID, evs, ms, full, limited, leave.SnapshotAfter)
			if err != nil {
				return err
			}
			setStateAfter(req, &lr.StateAfter, &lr.StateAfterUnstable, sa)
		} else {
			setStateAfter(req, &lr.StateAfter, &lr.StateAfterUnstable, []ClientEvent{})
		}
		lr.State.Events = nil
	case len(evs) == 0 && leave != nil:
		snap = leave.SnapshotAfter
	case len(evs) > 0 && (req.Initial || req.FullState):
		snap = evs[0].SnapshotBefore
	}
	if snap != 0 {
		st, err := s.rs.StateAtSnapshot(ctx, snap)
		if err != nil {
			return err
		}
		lr.State.Events = s.formatState(req, roomID, st.Events(), evs, true)
	}
	resp.Rooms.Leave[roomID] = lr
	return nil
}

// stateAfter is MSC4222's state_after: the room's state at the end of the
// timeline (snapshot end) as far as the client does not have it — all of
// it when full, else what changed since the client's last sync. Unlike
// state, it repeats state events that are also in the timeline.
func (s *Syncer) stateAfter(ctx context.Context, req *Request, roomID string, evs []*storage.Event, ms Memberships, full, limited bool, end int64) ([]ClientEvent, error) {
	endState, err := s.rs.StateAtSnapshot(ctx, end)
	if err != nil {
		return nil, err
	}
	if !full && !limited {
		// Every change since the last sync is in the timeline: those of
		// its state events still in force at its end. No read needed.
		var kept []*storage.Event
		for _, e := range evs {
			if e.StateKey == nil {
				continue
			}
			if cur := endState.Get(e.Type, *e.StateKey); cur != nil && cur.EventID() == e.EventID {
				kept = append(kept, e)
			}
		}
		return s.format(req, kept, ms, &req.Filter.Room.State), nil
	}
	var state []gomatrixserverlib.PDU
	if full {
		state = endState.Events()
	} else {
		before, err := storage.SnapshotAtPos(ctx, s.db, roomID, req.Since.Pos)
		if err != nil {
			return nil, err
		}
		old, err := s.rs.StateAtSnapshot(ctx, before)
		if err != nil {
			return nil, err
		}
		for k, e := range endState {
			if o := old[k]; o == nil || o.EventID() != e.EventID() {
				state = append(state, e)
			}
		}
	}
	return s.formatState(req, roomID, state, evs, false), nil
}

// setStateAfter puts state_after under the name the client asked for.
func setStateAfter(req *Request, stable, unstable **StateList, evs []ClientEvent) {
	if evs == nil {
		evs = []ClientEvent{}
	}
	if req.StateAfter == StateAfterUnstable {
		*unstable = &StateList{Events: evs}
	} else {
		*stable = &StateList{Events: evs}
	}
}

// rangeKey names one read of a room's timeline.
type rangeKey struct {
	room     string
	from, to int64
	limit    int
}

// rangeRead is a timeline read, shared by every /sync asking the same.
type rangeRead struct {
	done chan struct{} // closed once evs, err and at are set
	evs  []*storage.Event
	err  error
	at   time.Time
}

// rangeTTL bounds how long a finished read is reused.
const rangeTTL = 2 * time.Second

// roomRange reads a room's events in (from, to], newest first, at most
// limit. A message wakes every member's long-poll with the same token, so
// their /syncs ask for the same range: one store read answers them all.
// Reuse is safe because the range is closed: every event up to `to` has
// committed, and what rewrites a stored event (a redaction, an outlier
// taking its place) does so in a transaction whose own position lies
// above `to`, so a reader that could see the change asks a different
// range.
func (s *Syncer) roomRange(ctx context.Context, roomID string, from, to int64, limit int) ([]*storage.Event, error) {
	k := rangeKey{roomID, from, to, limit}
	s.rangesMu.Lock()
	r, ok := s.ranges.Get(k)
	if ok {
		select {
		case <-r.done:
			ok = r.err == nil && time.Since(r.at) < rangeTTL
		default: // in flight: wait for it
		}
	}
	if ok {
		s.rangesMu.Unlock()
		select {
		case <-r.done:
			return r.evs, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r = &rangeRead{done: make(chan struct{})}
	s.ranges.Put(k, r)
	s.rangesMu.Unlock()
	// Not bound to this request: others may be waiting for the answer.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	r.evs, r.err = storage.RoomEventsRange(qctx, s.db, roomID, from, to, limit, true)
	cancel()
	r.at = time.Now()
	close(r.done)
	return r.evs, r.err
}

// moved reports whether stream table may have rows in the request's range;
// a stream that has not moved costs no query.
func (s *Syncer) moved(table string, req *Request) bool {
	return s.db.Stream.Moved(table, req.Since.Pos)
}
