package roomserver

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/storage"
)

// Faster joins (MSC3706, MSC3902), the joining side. A room joined with
// a partial send_join answer holds the state before our join without its
// member events; our user takes part at once. Until federation brings the
// full state (CompletePartialState), an event whose auth needs a member
// we lack is checked with that member's event from its own auth events,
// and the room is marked in storage (partial_state_rooms) so a restart
// resumes the resync.

// PartialJoins is the room server's face for faster joins (a type of its
// own, so the RoomServer type keeps to its core).
type PartialJoins struct{ s *RoomServer }

// PartialJoins returns the faster-join face of the room server.
func (s *RoomServer) PartialJoins() PartialJoins { return PartialJoins{s} }

// JoinRemoteRoom installs a room from a partial send_join answer
// (members omitted) and marks it partial; servers are the answer's
// servers_in_room.
func (p PartialJoins) JoinRemoteRoom(ctx context.Context, origin spec.ServerName, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU, servers []string) error {
	s := p.s
	roomID := join.RoomID().String()
	mark := storage.PartialStateRoom{RoomID: roomID, JoinEventID: join.EventID(), Origin: string(origin), Servers: servers, JoinedTS: time.Now().UnixMilli()}
	if err := storage.MarkPartialState(ctx, s.db, mark); err != nil {
		return err
	}
	s.partial.set(s.db, roomID, partialNow)
	if err := s.JoinRemoteRoom(ctx, origin, join, state, authChain); err != nil {
		s.partial.set(s.db, roomID, 0)
		_ = storage.DropPartialState(context.WithoutCancel(ctx), s.db, roomID)
		return err
	}
	return nil
}

// Complete adds to a partial room the member events of the
// full state before our join (state, with its auth chain, as the resident
// server sent it) that the room still lacks, and clears the mark. Events
// since the join are newer than the resync's, so a member slot they set is
// kept; every member event added must be allowed by its own auth events.
func (p PartialJoins) Complete(ctx context.Context, roomID string, state, authChain []gomatrixserverlib.PDU) (int, error) {
	s := p.s
	byID := make(map[string]gomatrixserverlib.PDU, len(state)+len(authChain))
	for _, e := range authChain {
		byID[e.EventID()] = e
	}
	for _, e := range state {
		byID[e.EventID()] = e
	}
	var members []gomatrixserverlib.PDU
	for _, e := range state {
		if e.Type() != spec.MRoomMember || e.StateKey() == nil || e.RoomID().String() != roomID {
			continue
		}
		auth := StateMap{}
		for _, id := range e.AuthEventIDs() {
			if a := byID[id]; a != nil && a.StateKey() != nil {
				auth[StateKey{a.Type(), *a.StateKey()}] = a
			}
		}
		if err := checkAllowed(e, auth); err != nil {
			logrus.WithError(err).WithField("event_id", e.EventID()).Warn("partial state: resync member event not allowed by its auth events; skipped")
			continue
		}
		members = append(members, e)
	}
	if err := s.storeOutliers(ctx, append(authChain, members...)); err != nil {
		return 0, err
	}
	unlock := s.lock(roomID)
	defer unlock()
	h, err := s.head(ctx, roomID)
	if err != nil {
		return 0, err
	}
	merged := make(StateMap, len(h.state)+len(members))
	for k, e := range h.state {
		merged[k] = e
	}
	var added []gomatrixserverlib.PDU
	for _, e := range members {
		k := StateKey{e.Type(), *e.StateKey()}
		if _, ok := merged[k]; !ok {
			merged[k] = e
			added = append(added, e)
		}
	}
	room, err := storage.GetRoom(ctx, s.db, roomID)
	if err != nil {
		return 0, err
	}
	next := &roomHead{version: h.version, extremities: h.extremities, maxDepth: h.maxDepth, state: merged, snapshot: h.snapshot, chain: h.chain}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if len(added) > 0 {
			id, err := s.writeFullSnapshot(ctx, tx, roomID, merged)
			if err != nil {
				return err
			}
			next.snapshot, next.chain = id, 0
			for _, e := range added {
				m, _ := e.Membership()
				if err := storage.SetCurrentState(ctx, tx, storage.CurrentStateRow{RoomID: roomID, Type: e.Type(), StateKey: *e.StateKey(), EventID: e.EventID(), Membership: m}); err != nil {
					return err
				}
			}
			if err := storage.UpdateRoomHead(ctx, tx, roomID, next.extremities, next.snapshot, next.maxDepth, room.LastPos); err != nil {
				return err
			}
			// Events built on the tip start from the full state: the
			// state after each extremity is its old state plus the
			// members (with one extremity, exactly merged).
			for _, x := range next.extremities {
				if len(next.extremities) == 1 {
					if err := storage.SetSnapshotAfter(ctx, tx, x, next.snapshot); err != nil {
						return err
					}
					continue
				}
				se, err := storage.GetEvent(ctx, tx, x)
				if err != nil {
					return err
				}
				st, err := s.stateFromSnapshot(ctx, se.SnapshotAfter)
				if err != nil {
					return err
				}
				for _, e := range added {
					k := StateKey{e.Type(), *e.StateKey()}
					if _, ok := st[k]; !ok {
						st[k] = e
					}
				}
				id, err := s.writeFullSnapshot(ctx, tx, roomID, st)
				if err != nil {
					return err
				}
				if err := storage.SetSnapshotAfter(ctx, tx, x, id); err != nil {
					return err
				}
			}
		}
		return storage.ClearPartialState(ctx, tx, roomID, time.Now().UnixMilli())
	})
	if err != nil {
		return 0, err
	}
	s.setHead(roomID, next)
	s.partial.set(s.db, roomID, partialComplete)
	return len(added), nil
}

// IsPartial reports whether the room's state is still partial.
func (p PartialJoins) IsPartial(ctx context.Context, roomID string) bool {
	return p.s.partial.is(ctx, p.s.db, roomID) == partialNow
}

// A room's faster-join status: never partial (0), partial now, or joined
// partially and complete since.
const (
	partialNow = 1 + iota
	partialComplete
)

// partialRooms caches which rooms were joined with partial state (loaded
// from storage on first use): every inbound event asks.
type partialRooms struct {
	mu     sync.Mutex
	rooms  map[string]int
	loaded bool
}

func (r *partialRooms) is(ctx context.Context, db *storage.DB, roomID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loadLocked(ctx, db) {
		return 0
	}
	return r.rooms[roomID]
}

func (r *partialRooms) loadLocked(ctx context.Context, db *storage.DB) bool {
	if r.loaded {
		return true
	}
	rows, err := storage.PartialStateRooms(ctx, db)
	if err != nil {
		logrus.WithError(err).Warn("partial state: reading the marked rooms")
		return false
	}
	r.rooms = map[string]int{}
	for _, row := range rows {
		r.rooms[row.RoomID] = partialNow
		if row.CompleteTS != 0 {
			r.rooms[row.RoomID] = partialComplete
		}
	}
	r.loaded = true
	return true
}

func (r *partialRooms) set(db *storage.DB, roomID string, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loadLocked(context.Background(), db) {
		return
	}
	if status != 0 {
		r.rooms[roomID] = status
	} else {
		delete(r.rooms, roomID)
	}
}

// fillFrom is st with the slots it lacks taken from fill (auth events
// while the room is partial, the completed current state after).
func fillFrom(st, fill StateMap) StateMap {
	if len(fill) == 0 {
		return st
	}
	out := make(StateMap, len(st)+len(fill))
	for k, e := range fill {
		out[k] = e
	}
	for k, e := range st {
		out[k] = e
	}
	return out
}

// memberSlots is the m.room.member part of st.
func memberSlots(st StateMap) StateMap {
	out := StateMap{}
	for k, e := range st {
		if k.Type == spec.MRoomMember {
			out[k] = e
		}
	}
	return out
}
