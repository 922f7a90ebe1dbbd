package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"sync"
)

// Timeline gaps. An event stored although some of its prev events are
// not (a rejoin after time away, or a partition /get_missing_events could
// not fully close) leaves a hole in the room's history just before it.
// Stream positions are dense and ordered, so room for the missing events
// is set aside when such an event is stored: the positions floor_pos up
// to the event's, unused. Backfilling the hole fills them downwards from
// next_pos; the row lives while the hole does. prev_ids are the events
// the hole's newest missing part leads to (where the next /backfill
// starts).
const roomGapsV1 = `
CREATE TABLE room_gaps (
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	event_pos BIGINT NOT NULL,
	next_pos BIGINT NOT NULL,
	floor_pos BIGINT NOT NULL,
	prev_ids TEXT NOT NULL,
	PRIMARY KEY (room_id, event_id)
);
CREATE INDEX room_gaps_next ON room_gaps(room_id, next_pos)`

// Gap is one hole in a room's timeline (see roomGapsV1).
type Gap struct {
	RoomID   string
	EventID  string // the event stored above the hole
	EventPos int64
	NextPos  int64 // the next free position, filled downwards
	FloorPos int64 // the lowest position set aside
	PrevIDs  []string
}

// InsertGap records a hole.
func InsertGap(ctx context.Context, q Querier, g *Gap) error {
	b, _ := json.Marshal(g.PrevIDs)
	_, err := q.ExecContext(ctx, `INSERT INTO room_gaps (room_id, event_id, event_pos, next_pos, floor_pos, prev_ids) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id, event_id) DO NOTHING`, g.RoomID, g.EventID, g.EventPos, g.NextPos, g.FloorPos, string(b))
	if err == nil {
		room := g.RoomID
		onCommit(q, func(db *DB) { db.gapRooms.add(room) })
	}
	return err
}

// gapRoomSet is the set of rooms that have (or had, since start) a hole:
// every /sync response with events asks GapBelow, and almost no room ever
// has a hole, so the question is answered from memory for all others.
// A room stays in the set after its holes close (it then costs a query
// that finds none); a room is added before its hole's positions become
// visible (onCommit), so no reader misses one.
type gapRoomSet struct {
	mu     sync.RWMutex
	loaded bool
	rooms  map[string]bool
}

func (s *gapRoomSet) add(roomID string) {
	s.mu.Lock()
	if s.rooms == nil {
		s.rooms = map[string]bool{}
	}
	s.rooms[roomID] = true
	s.mu.Unlock()
}

// mayHave reports whether roomID may have a hole, loading the set once.
func (s *gapRoomSet) mayHave(ctx context.Context, db *DB, roomID string) (bool, error) {
	s.mu.RLock()
	loaded, has := s.loaded, s.rooms[roomID]
	s.mu.RUnlock()
	if loaded {
		return has, nil
	}
	rooms, err := queryStrings(ctx, db, `SELECT DISTINCT room_id FROM room_gaps`)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.rooms == nil {
		s.rooms = map[string]bool{}
	}
	for _, r := range rooms {
		s.rooms[r] = true
	}
	s.loaded = true
	has = s.rooms[roomID]
	s.mu.Unlock()
	return has, nil
}

// GapBelow returns the room's newest hole whose next free position lies
// in (lo, hi]: the one a page of history covering that range runs into.
// ErrNotFound when there is none.
func GapBelow(ctx context.Context, q Querier, roomID string, lo, hi int64) (*Gap, error) {
	if may, err := q.Store().gapRooms.mayHave(ctx, q.Store(), roomID); err != nil {
		return nil, err
	} else if !may {
		return nil, ErrNotFound
	}
	g := Gap{RoomID: roomID}
	var prev string
	err := q.QueryRowContext(ctx, `SELECT event_id, event_pos, next_pos, floor_pos, prev_ids FROM room_gaps WHERE room_id = $1 AND next_pos > $2 AND next_pos <= $3
		ORDER BY next_pos DESC LIMIT 1`, roomID, lo, hi).Scan(&g.EventID, &g.EventPos, &g.NextPos, &g.FloorPos, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(prev), &g.PrevIDs)
	return &g, nil
}

// UpdateGap records how far a hole was filled; a closed or full one
// (no prev IDs left, or no position) is deleted.
func UpdateGap(ctx context.Context, q Querier, g *Gap) error {
	if len(g.PrevIDs) == 0 || g.NextPos < g.FloorPos {
		_, err := q.ExecContext(ctx, `DELETE FROM room_gaps WHERE room_id = $1 AND event_id = $2`, g.RoomID, g.EventID)
		return err
	}
	b, _ := json.Marshal(g.PrevIDs)
	_, err := q.ExecContext(ctx, `UPDATE room_gaps SET next_pos = $1, prev_ids = $2 WHERE room_id = $3 AND event_id = $4`, g.NextPos, string(b), g.RoomID, g.EventID)
	return err
}

// GetGap loads the hole below eventID, or ErrNotFound.
func GetGap(ctx context.Context, q Querier, roomID, eventID string) (*Gap, error) {
	g := Gap{RoomID: roomID, EventID: eventID}
	var prev string
	err := q.QueryRowContext(ctx, `SELECT event_pos, next_pos, floor_pos, prev_ids FROM room_gaps WHERE room_id = $1 AND event_id = $2`, roomID, eventID).
		Scan(&g.EventPos, &g.NextPos, &g.FloorPos, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(prev), &g.PrevIDs)
	return &g, nil
}
