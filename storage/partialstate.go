package storage

import (
	"context"
	"encoding/json"
)

// Rooms joined with partial state (faster joins, MSC3706/MSC3902): the
// room server holds the state before our join without its member events
// and fetches them in the background. A row lives from the join until the
// full state is in; servers are the send_join answer's servers_in_room,
// which federation sends to while the state cannot name them. The row
// stays, with complete_ts set, once the full state is in: events built on
// the partial snapshots still need the members those lack.
const partialStateV1 = `
CREATE TABLE IF NOT EXISTS partial_state_rooms (
	room_id TEXT PRIMARY KEY,
	join_event_id TEXT NOT NULL,
	origin TEXT NOT NULL,
	servers TEXT NOT NULL,
	joined_ts BIGINT NOT NULL,
	complete_ts BIGINT NOT NULL DEFAULT 0
)`

// PartialStateRoom is a room whose state is still partial.
type PartialStateRoom struct {
	RoomID      string
	JoinEventID string
	Origin      string   // the server that answered our send_join
	Servers     []string // servers_in_room of that answer
	JoinedTS    int64
	CompleteTS  int64 // 0 while the state is partial
}

// MarkPartialState records a room as joined with partial state.
func MarkPartialState(ctx context.Context, q Querier, r PartialStateRoom) error {
	b, _ := json.Marshal(r.Servers)
	_, err := q.ExecContext(ctx, `INSERT INTO partial_state_rooms (room_id, join_event_id, origin, servers, joined_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id, origin = excluded.origin, servers = excluded.servers, joined_ts = excluded.joined_ts, complete_ts = 0`,
		r.RoomID, r.JoinEventID, r.Origin, string(b), r.JoinedTS)
	return err
}

// ClearPartialState records that the room's full state is in (at ts).
func ClearPartialState(ctx context.Context, q Querier, roomID string, ts int64) error {
	_, err := q.ExecContext(ctx, `UPDATE partial_state_rooms SET complete_ts = $1 WHERE room_id = $2`, ts, roomID)
	return err
}

// DropPartialState forgets the room's mark (its partial join failed).
func DropPartialState(ctx context.Context, q Querier, roomID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM partial_state_rooms WHERE room_id = $1`, roomID)
	return err
}

// PartialStateRooms lists the rooms joined with partial state, those
// complete since included.
func PartialStateRooms(ctx context.Context, q Querier) ([]PartialStateRoom, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, join_event_id, origin, servers, joined_ts, complete_ts FROM partial_state_rooms ORDER BY joined_ts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PartialStateRoom
	for rows.Next() {
		var r PartialStateRoom
		var servers string
		if err := rows.Scan(&r.RoomID, &r.JoinEventID, &r.Origin, &servers, &r.JoinedTS, &r.CompleteTS); err != nil {
			return nil, err
		}
		_ = json.Unmarshal([]byte(servers), &r.Servers)
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetSnapshotAfter repoints the state after an event (a partial-state
// room's tip, once the full state is in), so events built on it start
// from the full state. The room server alone calls it.
func SetSnapshotAfter(ctx context.Context, q Querier, eventID string, snapshot int64) error {
	_, err := q.ExecContext(ctx, `UPDATE events SET snapshot_after = $1 WHERE event_id = $2`, snapshot, eventID)
	return err
}
