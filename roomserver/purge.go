package roomserver

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/storage"
)

// Purges delete events, so they belong to the room server, the only writer
// of rooms: it runs them under the room lock (no event is being appended
// meanwhile) and, after commit, drops what its caches hold of the deleted
// rows. The caller's own writes (the audit entry, a block) go in the same
// transaction through inTx, which is given the number of events deleted.

// PurgeRoom deletes every trace of a room from the room tables (see
// storage.PurgeRoom) and forgets the room's head, events and state
// snapshots. It returns the number of events deleted.
func (s *RoomServer) PurgeRoom(ctx context.Context, roomID string, inTx func(tx *storage.Tx, events int64) error) (int64, error) {
	unlock := s.lock(roomID)
	defer unlock()
	// The create event is in every snapshot of the room: it names the
	// cached snapshots to drop. A room we do not hold (blocked ahead of
	// time) has none.
	createID := ""
	if h, err := s.head(ctx, roomID); err == nil {
		if ev := h.state.Get(spec.MRoomCreate, ""); ev != nil {
			createID = ev.EventID()
		}
	}
	var n int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if n, err = storage.PurgeRoom(ctx, tx, roomID); err != nil {
			return err
		}
		if inTx != nil {
			return inTx(tx, n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.roomsMu.Lock()
	delete(s.rooms, roomID)
	s.roomsMu.Unlock()
	s.events.RemoveIf(func(_ string, ev gomatrixserverlib.PDU) bool { return ev.RoomID().String() == roomID })
	if createID != "" {
		create := StateKey{spec.MRoomCreate, ""}
		s.snapshots.RemoveIf(func(_ int64, m map[StateKey]string) bool { return m[create] == createID })
	}
	return n, nil
}

// PurgeHistory deletes the room's timeline events (never state) sent
// before beforeTS, except its forward extremities (see
// storage.PurgeExpiredEvents), and drops them from the event cache. The
// head and snapshots stay true: they hold only state and extremities. A
// room we do not know is storage.ErrNotFound.
func (s *RoomServer) PurgeHistory(ctx context.Context, roomID string, beforeTS int64, inTx func(tx *storage.Tx, events int64) error) (int64, error) {
	return s.PurgeHistoryKeeping(ctx, roomID, beforeTS, 0, "", inTx)
}

// PurgeHistoryKeeping is PurgeHistory that, with beforePos set, cuts at
// that stream position rather than at beforeTS, and with keepServer set
// keeps the events of that server's users (the admin purge_history API
// deletes local events only when asked to).
func (s *RoomServer) PurgeHistoryKeeping(ctx context.Context, roomID string, beforeTS, beforePos int64, keepServer string, inTx func(tx *storage.Tx, events int64) error) (int64, error) {
	unlock := s.lock(roomID)
	defer unlock()
	var n int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if n, err = storage.PurgeEventsBefore(ctx, tx, roomID, beforeTS, beforePos, keepServer); err != nil {
			return err
		}
		if inTx != nil {
			return inTx(tx, n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		// A superset of the deleted rows (extremities included): dropping
		// a cached event that still exists only costs a reload.
		s.events.RemoveIf(func(_ string, ev gomatrixserverlib.PDU) bool {
			return ev.StateKey() == nil && (beforePos != 0 || int64(ev.OriginServerTS()) < beforeTS) && ev.RoomID().String() == roomID
		})
	}
	return n, nil
}
