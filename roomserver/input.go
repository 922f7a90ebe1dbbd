package roomserver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// EventFetcher fetches, over federation, what a remote event refers to and
// we lack. Federation implements it; events it returns have had their
// signatures and hashes checked.
type EventFetcher interface {
	// MissingEvents returns events after `earliest` leading up to `latest`
	// (the /get_missing_events walk), at most limit.
	// An answer with events that are not valid for the room version
	// (bad JSON, bad signatures) returns the valid ones and an error
	// wrapping ErrMalformedMissing.
	MissingEvents(ctx context.Context, origin spec.ServerName, roomID string, earliest, latest []string, limit int, ver gomatrixserverlib.RoomVersion) ([]gomatrixserverlib.PDU, error)
	// StateBefore returns the room state before eventID and its auth chain.
	StateBefore(ctx context.Context, origin spec.ServerName, roomID, eventID string, ver gomatrixserverlib.RoomVersion) (state, authChain []gomatrixserverlib.PDU, err error)
	// Event fetches one event by ID.
	Event(ctx context.Context, origin spec.ServerName, eventID string, ver gomatrixserverlib.RoomVersion) (gomatrixserverlib.PDU, error)
}

// ErrMalformedMissing marks a /get_missing_events answer that held events
// not valid for the room version (EventFetcher.MissingEvents).
var ErrMalformedMissing = errors.New("missing events answer holds invalid events")

// SetFetcher installs the federation fetcher used to close gaps.
func (s *RoomServer) SetFetcher(f EventFetcher) { s.fetcher = f }

// Closing a gap: /get_missing_events is asked for pages of maxMissing
// events, walking back page by page until the fetched events connect to
// ones we hold, for at most maxMissingRounds pages. A longer gap falls
// back to asking for the state (the events in it stay out of the timeline).
const (
	maxMissing       = 50
	maxMissingRounds = 10
	// gapSlots is how many stream positions a gap sets aside for the
	// events missing in it (more than any backfill will fetch in one).
	gapSlots = 100000
)

// InputRemoteEvents authorises and stores events that origin sent us
// (spec: "Checks performed on receipt of a PDU"):
//
//  1. the event passes the auth rules against its own auth_events;
//  2. it passes them against the state before it, computed from its
//     prev_events (resolving several with the room version's state
//     resolution; missing prev_events are fetched with /get_missing_events,
//     and when the gap cannot be closed the state is fetched instead);
//  3. it is soft-failed if it does not pass against the current state: it
//     is stored, but not shown to clients nor used as a prev event.
//
// The room's forward extremities and current state advance; when the event
// does not extend every extremity, the current state is the resolution of
// the old current state and the state after the event.
func (s *RoomServer) InputRemoteEvents(ctx context.Context, origin spec.ServerName, pdus []gomatrixserverlib.PDU) map[string]error {
	res := make(map[string]error, len(pdus))
	sorted := append([]gomatrixserverlib.PDU(nil), pdus...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Depth() < sorted[j].Depth() })
	for _, ev := range sorted {
		unlock := s.lock(ev.RoomID().String())
		if s.answersBesideMembership(ctx, origin, ev) {
			res[ev.EventID()] = s.storeBesideRoom(ctx, ev)
		} else {
			res[ev.EventID()] = s.inputLocked(ctx, origin, ev, true)
		}
		unlock()
	}
	return res
}

// answersBesideMembership reports whether ev is the room's server undoing
// an invite or knock of a local user that we hold only beside the room (we
// have none of its state): a kick, a revoked invite or a ban, sent by a
// user of origin and authorised by our user's membership event. We cannot
// check it against the room's state, which we lack; it is kept beside the
// room as the invite was, so both servers agree the user is out.
func (s *RoomServer) answersBesideMembership(ctx context.Context, origin spec.ServerName, ev gomatrixserverlib.PDU) bool {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil || *ev.StateKey() == string(ev.SenderID()) {
		return false
	}
	if m, _ := ev.Membership(); m != spec.Leave && m != spec.Ban {
		return false
	}
	if _, d, err := gomatrixserverlib.SplitID('@', *ev.StateKey()); err != nil || d != s.serverName {
		return false
	}
	if _, d, err := gomatrixserverlib.SplitID('@', string(ev.SenderID())); err != nil || d != origin {
		return false
	}
	h, err := s.head(ctx, ev.RoomID().String())
	if err != nil || h.state.Get(spec.MRoomCreate, "") != nil {
		return false
	}
	own, err := storage.LatestMembershipBefore(ctx, s.db, ev.RoomID().String(), *ev.StateKey(), 1<<62)
	if err != nil || (own.Membership != spec.Invite && own.Membership != spec.Knock) {
		return false
	}
	for _, id := range ev.AuthEventIDs() {
		if id == own.EventID {
			return true
		}
	}
	return false
}

// ErrRejected wraps the reason an event failed the auth rules.
type ErrRejected struct{ Reason string }

func (e *ErrRejected) Error() string { return "rejected: " + e.Reason }

func (s *RoomServer) inputLocked(ctx context.Context, origin spec.ServerName, ev gomatrixserverlib.PDU, fetchGaps bool) error {
	roomID := ev.RoomID().String()
	if old, err := storage.GetEvent(ctx, s.db, ev.EventID()); err == nil && !old.Outlier {
		return nil // already have it
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	h, err := s.head(ctx, roomID)
	if err != nil {
		return err
	}
	if ev.Version() != h.version.Version() {
		return &ErrRejected{Reason: "room version mismatch"}
	}
	// 1. Auth against the event's own auth events.
	authState, err := s.authStateFor(ctx, origin, h, ev)
	if err != nil {
		return err
	}
	if err := checkAllowed(ev, authState); err != nil {
		return &ErrRejected{Reason: err.Error()}
	}
	// 2. State before the event.
	before, err := s.stateBefore(ctx, origin, h, ev, fetchGaps)
	if err != nil {
		return err
	}
	// While the room's state is partial, what it lacks (members) is taken
	// from the event's auth events (MSC3902); once complete, an event on a
	// snapshot of the partial time takes them from the current state.
	// The full check first: the fill is for the events it refuses.
	status := s.partial.is(ctx, s.db, roomID)
	if err := checkAllowed(ev, before.state); err != nil {
		var fill StateMap
		switch status {
		case partialNow:
			fill = authState
		case partialComplete:
			fill = memberSlots(h.state)
		}
		if fill == nil || checkAllowed(ev, fillFrom(before.state, fill)) != nil {
			return &ErrRejected{Reason: err.Error()}
		}
	}
	// 3. Soft-fail against the current state.
	softFailed := checkAllowed(ev, h.state) != nil
	if softFailed && status == partialNow {
		softFailed = checkAllowed(ev, fillFrom(h.state, authState)) != nil
	}
	var next *roomHead
	start := time.Now()
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if before.snapshot == 0 {
			id, err := s.writeFullSnapshot(ctx, tx, roomID, before.state)
			if err != nil {
				return err
			}
			before.snapshot, before.chain = id, 0
		}
		se, after, err := s.storeEvent(ctx, tx, roomID, before, ev, softFailed, SendRequest{})
		if err != nil {
			return err
		}
		if softFailed {
			return nil
		}
		next, err = s.advanceHead(ctx, tx, roomID, h, ev, after)
		if err != nil {
			return err
		}
		return storage.UpdateRoomHead(ctx, tx, roomID, next.extremities, next.snapshot, next.maxDepth, se.StreamPos)
	})
	if err != nil {
		return err
	}
	s.observePersist("federation", start)
	if next != nil {
		s.setHead(roomID, next)
	}
	if softFailed {
		logrus.WithField("event_id", ev.EventID()).WithField("origin", origin).Info("soft-failed event against current state")
	}
	return nil
}

// advanceHead computes the room's tip after ev (whose resulting state is
// after.state) and writes the current-state rows that changed.
func (s *RoomServer) advanceHead(ctx context.Context, tx *storage.Tx, roomID string, h *roomHead, ev gomatrixserverlib.PDU, after *roomHead) (*roomHead, error) {
	prev := map[string]bool{}
	for _, p := range ev.PrevEventIDs() {
		prev[p] = true
	}
	ext := []string{}
	for _, e := range h.extremities {
		if !prev[e] {
			ext = append(ext, e)
		}
	}
	ext = append(ext, ev.EventID())
	next := &roomHead{version: h.version, extremities: ext, maxDepth: max(h.maxDepth, ev.Depth())}
	if len(ext) == 1 {
		next.snapshot, next.chain, next.state = after.snapshot, after.chain, after.state
	} else {
		// The current state is the resolution of the states at all forward
		// extremities at once: resolving the old current state (itself a
		// resolution) with the new one is not the same, and servers that
		// received the branches in another order would disagree.
		sets, err := s.extremityStates(ctx, ext[:len(ext)-1])
		if err != nil {
			return nil, err
		}
		resolved, err := s.resolve(ctx, h.version, append(sets, after.state))
		if err != nil {
			return nil, err
		}
		id, err := s.writeFullSnapshot(ctx, tx, roomID, resolved)
		if err != nil {
			return nil, err
		}
		next.snapshot, next.chain, next.state = id, 0, resolved
	}
	if next.snapshot == h.snapshot {
		return next, nil // same state (a message on the current tip)
	}
	// Write the current-state rows that changed.
	for k, e := range next.state {
		if old := h.state[k]; old == nil || old.EventID() != e.EventID() {
			m := ""
			if k.Type == spec.MRoomMember {
				m, _ = e.Membership()
			}
			if err := storage.SetCurrentState(ctx, tx, storage.CurrentStateRow{RoomID: roomID, Type: k.Type, StateKey: k.StateKey, EventID: e.EventID(), Membership: m}); err != nil {
				return nil, err
			}
		}
	}
	for k := range h.state {
		if _, ok := next.state[k]; !ok {
			if err := storage.SetCurrentState(ctx, tx, storage.CurrentStateRow{RoomID: roomID, Type: k.Type, StateKey: k.StateKey}); err != nil {
				return nil, err
			}
		}
	}
	return next, nil
}

// extremityStates loads the state after each of the given timeline
// events, once per distinct snapshot.
func (s *RoomServer) extremityStates(ctx context.Context, ids []string) ([]StateMap, error) {
	evs, missing, err := s.timelineEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("forward extremities %v not in the timeline", missing)
	}
	seen := map[int64]bool{}
	var out []StateMap
	for _, e := range evs {
		if seen[e.SnapshotAfter] {
			continue
		}
		seen[e.SnapshotAfter] = true
		st, err := s.stateFromSnapshot(ctx, e.SnapshotAfter)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// stateBefore computes the state before ev from its prev events, fetching
// missing ones (or the state itself) from origin.
func (s *RoomServer) stateBefore(ctx context.Context, origin spec.ServerName, h *roomHead, ev gomatrixserverlib.PDU, fetchGaps bool) (*roomHead, error) {
	roomID := ev.RoomID().String()
	prevIDs := ev.PrevEventIDs()
	prevs, missing, err := s.timelineEvents(ctx, prevIDs)
	if err != nil {
		return nil, err
	}
	malformed := false
	if len(missing) > 0 && fetchGaps && s.fetcher != nil {
		var fetched []gomatrixserverlib.PDU
		fetched, malformed, err = s.fetchGap(ctx, origin, h, ev)
		if err != nil {
			return nil, err
		}
		for _, m := range fetched {
			if err := s.inputLocked(ctx, origin, m, false); err != nil {
				logrus.WithError(err).WithField("event_id", m.EventID()).Warn("missing event not accepted")
			}
		}
		if prevs, missing, err = s.timelineEvents(ctx, prevIDs); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		if s.fetcher == nil {
			return nil, fmt.Errorf("missing prev events %v", missing)
		}
		if malformed {
			// The origin's own answer put invalid events in the gap: an
			// event pushed on top of them is refused rather than taken
			// in on the origin's word for its state (a later event can
			// still bring the gap back to /get_missing_events).
			return nil, fmt.Errorf("prev events %v: %w", missing, ErrMalformedMissing)
		}
		// The gap cannot be closed: take the state from origin.
		state, authChain, err := s.fetcher.StateBefore(ctx, origin, roomID, ev.EventID(), h.version.Version())
		if err != nil {
			return nil, fmt.Errorf("fetching state before %s: %w", ev.EventID(), err)
		}
		if err := s.storeOutliers(ctx, append(authChain, state...)); err != nil {
			return nil, err
		}
		st := StateMap{}
		for _, e := range state {
			if e.StateKey() != nil {
				st[StateKey{e.Type(), *e.StateKey()}] = e
			}
		}
		// The events we lack before ev: a gap in our timeline that
		// backfill can fill later (sync marks it limited).
		return &roomHead{version: h.version, state: st, maxDepth: h.maxDepth, gapBelow: missing}, nil
	}
	if len(prevs) == 1 {
		st, err := s.stateFromSnapshot(ctx, prevs[0].SnapshotAfter)
		if err != nil {
			return nil, err
		}
		_, chain, _, err := storage.GetSnapshot(ctx, s.db, prevs[0].SnapshotAfter)
		if err != nil {
			return nil, err
		}
		return &roomHead{version: h.version, snapshot: prevs[0].SnapshotAfter, chain: chain, state: st, maxDepth: h.maxDepth}, nil
	}
	sets := make([]StateMap, 0, len(prevs))
	seen := map[int64]bool{}
	for _, p := range prevs {
		if seen[p.SnapshotAfter] {
			continue
		}
		seen[p.SnapshotAfter] = true
		st, err := s.stateFromSnapshot(ctx, p.SnapshotAfter)
		if err != nil {
			return nil, err
		}
		sets = append(sets, st)
	}
	if len(sets) == 1 {
		_, chain, _, err := storage.GetSnapshot(ctx, s.db, prevs[0].SnapshotAfter)
		if err != nil {
			return nil, err
		}
		return &roomHead{version: h.version, snapshot: prevs[0].SnapshotAfter, chain: chain, state: sets[0], maxDepth: h.maxDepth}, nil
	}
	resolved, err := s.resolve(ctx, h.version, sets)
	if err != nil {
		return nil, err
	}
	return &roomHead{version: h.version, state: resolved, maxDepth: h.maxDepth}, nil
}

// fetchGap asks origin for the events between our forward extremities and
// ev's prev events, page after page while the oldest fetched events still
// have prev events we lack (a partition or outage longer than one page).
// It returns the events we did not hold, oldest first.
// malformed reports that an answer held events invalid for the room
// version (they are skipped).
func (s *RoomServer) fetchGap(ctx context.Context, origin spec.ServerName, h *roomHead, ev gomatrixserverlib.PDU) (_ []gomatrixserverlib.PDU, malformed bool, _ error) {
	roomID := ev.RoomID().String()
	got := map[string]gomatrixserverlib.PDU{}
	latest := []string{ev.EventID()}
	for round := 0; round < maxMissingRounds && len(latest) > 0; round++ {
		page, err := s.fetcher.MissingEvents(ctx, origin, roomID, h.extremities, latest, maxMissing, h.version.Version())
		if errors.Is(err, ErrMalformedMissing) {
			logrus.WithError(err).WithField("origin", origin).Warn("get_missing_events: invalid events skipped")
			malformed, err = true, nil
		}
		if err != nil {
			logrus.WithError(err).WithField("origin", origin).Warn("get_missing_events failed")
			break
		}
		var ids []string
		for _, m := range page {
			if m.RoomID().String() == roomID && m.EventID() != ev.EventID() && got[m.EventID()] == nil {
				ids = append(ids, m.EventID())
			}
		}
		unknown, err := s.unheldEvents(ctx, ids)
		if err != nil {
			return nil, false, err
		}
		if len(unknown) == 0 {
			break // nothing new: the walk reached events we hold
		}
		isUnknown := map[string]bool{}
		for _, id := range unknown {
			isUnknown[id] = true
		}
		for _, m := range page {
			if isUnknown[m.EventID()] {
				got[m.EventID()] = m
			}
		}
		// The next page starts at fetched events whose prev events are
		// neither fetched nor held.
		var prevs []string
		for _, m := range got {
			for _, p := range m.PrevEventIDs() {
				if got[p] == nil {
					prevs = append(prevs, p)
				}
			}
		}
		lacking, err := s.unheldEvents(ctx, prevs)
		if err != nil {
			return nil, false, err
		}
		lack := map[string]bool{}
		for _, p := range lacking {
			lack[p] = true
		}
		latest = latest[:0]
		for id, m := range got {
			for _, p := range m.PrevEventIDs() {
				if lack[p] {
					latest = append(latest, id)
					break
				}
			}
		}
		sort.Strings(latest)
	}
	out := make([]gomatrixserverlib.PDU, 0, len(got))
	for _, m := range got {
		out = append(out, m)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Depth() != out[j].Depth() {
			return out[i].Depth() < out[j].Depth()
		}
		return out[i].EventID() < out[j].EventID()
	})
	return out, malformed, nil
}

// unheldEvents lists the IDs we hold neither in the timeline nor as
// outliers. The gap walk stops at outliers: those are history from before
// our join (send_join's auth chain and state), and taking them into the
// timeline as new events would make each a forward extremity whose
// ancient state gets resolved against the current one (members who
// joined since were reset away). An event whose prev events are such
// history takes its state from the origin instead.
func (s *RoomServer) unheldEvents(ctx context.Context, ids []string) ([]string, error) {
	got, err := storage.GetEvents(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, e := range got {
		if !e.Rejected {
			have[e.EventID] = true
		}
	}
	var out []string
	for _, id := range ids {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// timelineEvents loads events that have a place in the room DAG (not
// outliers, not rejected), reporting the IDs we lack.
func (s *RoomServer) timelineEvents(ctx context.Context, ids []string) ([]*storage.Event, []string, error) {
	got, err := storage.GetEvents(ctx, s.db, ids)
	if err != nil {
		return nil, nil, err
	}
	have := map[string]*storage.Event{}
	for _, e := range got {
		if !e.Outlier && !e.Rejected {
			have[e.EventID] = e
		}
	}
	var out []*storage.Event
	var missing []string
	for _, id := range ids {
		if e := have[id]; e != nil {
			out = append(out, e)
		} else {
			missing = append(missing, id)
		}
	}
	return out, missing, nil
}

// storeOutliers keeps events that are not (yet) part of our timeline: auth
// chains and state fetched from other servers.
func (s *RoomServer) storeOutliers(ctx context.Context, evs []gomatrixserverlib.PDU) error {
	if len(evs) == 0 {
		return nil
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, e := range evs {
			se := &storage.Event{
				EventID: e.EventID(), RoomID: e.RoomID().String(), RoomVersion: string(e.Version()), Type: e.Type(), StateKey: e.StateKey(),
				Sender: string(e.SenderID()), Depth: e.Depth(), OriginTS: int64(e.OriginServerTS()), ReceivedTS: time.Now().UnixMilli(),
				JSON: e.JSON(), Outlier: true,
			}
			if e.Type() == spec.MRoomMember {
				se.Membership, _ = e.Membership()
			}
			if _, err := storage.InsertEvent(ctx, tx, se); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeFullSnapshot stores a state as a full snapshot.
func (s *RoomServer) writeFullSnapshot(ctx context.Context, tx *storage.Tx, roomID string, st StateMap) (int64, error) {
	entries := make([]storage.StateEntry, 0, len(st))
	for k, e := range st {
		entries = append(entries, storage.StateEntry{Type: k.Type, StateKey: k.StateKey, EventID: e.EventID()})
	}
	return storage.InsertSnapshot(ctx, tx, roomID, 0, 0, entries)
}

// resolve runs the room version's state resolution over several states.
func (s *RoomServer) resolve(ctx context.Context, ver gomatrixserverlib.IRoomVersion, sets []StateMap) (StateMap, error) {
	var all []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, st := range sets {
		for _, e := range st {
			if !seen[e.EventID()] {
				seen[e.EventID()] = true
				all = append(all, e)
			}
		}
	}
	chain, err := s.authChain(ctx, all)
	if err != nil {
		return nil, err
	}
	// The resolver looks conflicted events up among the auth events too
	// (v2.1's conflicted subgraph), so give it the state events as well.
	for _, e := range all {
		if !seen["chain:"+e.EventID()] {
			chain = append(chain, e)
		}
	}
	isRejected := func(string) bool { return false }
	var resolved []gomatrixserverlib.PDU
	if ver.StateResAlgorithm() == gomatrixserverlib.StateResV1 {
		resolved, err = gomatrixserverlib.ResolveConflicts(ver.Version(), all, chain, UserIDForSender, isRejected)
		if err != nil {
			return nil, err
		}
	} else {
		// v2 and v2.1 are ours (stateres21.go): the library's v2.1 panics
		// on v12 rooms at the pin, and its v2 lost members in randomised
		// partitions (TestFederationStateResRandomPartition).
		events := make(map[string]gomatrixserverlib.PDU, len(chain))
		var create gomatrixserverlib.PDU
		for _, e := range chain {
			events[e.EventID()] = e
			if e.Type() == spec.MRoomCreate && e.StateKey() != nil && *e.StateKey() == "" {
				create = e
			}
		}
		return resolveV2(sets, events, create, isRejected, ver.StateResAlgorithm() == gomatrixserverlib.StateResV2_1), nil
	}
	out := make(StateMap, len(resolved))
	for _, e := range resolved {
		out[StateKey{e.Type(), *e.StateKey()}] = e
	}
	return out, nil
}

// authChain loads the full auth chain of evs from the store.
func (s *RoomServer) authChain(ctx context.Context, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	frontier := []string{}
	for _, e := range evs {
		frontier = append(frontier, e.AuthEventIDs()...)
	}
	for len(frontier) > 0 {
		var ids []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		frontier = nil
		got, err := s.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, e := range got {
			out = append(out, e)
			frontier = append(frontier, e.AuthEventIDs()...)
		}
	}
	return out, nil
}

// splitConflicted divides the union of state sets into the events of slots
// on which every set agrees and the events of the slots that differ.
func splitConflicted(sets []StateMap) (conflicted, unconflicted []gomatrixserverlib.PDU) {
	keys := map[StateKey]bool{}
	for _, st := range sets {
		for k := range st {
			keys[k] = true
		}
	}
	for k := range keys {
		var first gomatrixserverlib.PDU
		agree := true
		seen := map[string]bool{}
		var evs []gomatrixserverlib.PDU
		for i, st := range sets {
			e := st[k]
			if e == nil {
				agree = false
				continue
			}
			if i == 0 {
				first = e
			} else if first == nil || first.EventID() != e.EventID() {
				agree = false
			}
			if !seen[e.EventID()] {
				seen[e.EventID()] = true
				evs = append(evs, e)
			}
		}
		if agree {
			unconflicted = append(unconflicted, first)
		} else {
			conflicted = append(conflicted, evs...)
		}
	}
	return conflicted, unconflicted
}
