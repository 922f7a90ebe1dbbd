package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Room tables: the room server is their only writer.
//
//   - events: every event we hold, local or remote. stream_pos orders the
//     events clients see (NULL for outliers: auth-chain events fetched over
//     federation that are not part of the timeline).
//   - state_snapshots: immutable room states, stored as a delta on a parent
//     snapshot; every event records the snapshot before and after it, so any
//     historical state can be answered (history visibility, /members?at=).
//   - current_state: the resolved state now, for fast membership questions.
const roomsV1 = `
CREATE TABLE rooms (
	room_id TEXT PRIMARY KEY,
	room_version TEXT NOT NULL,
	creator TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	is_public BOOLEAN NOT NULL DEFAULT FALSE,
	forward_extremities TEXT NOT NULL DEFAULT '[]',
	current_snapshot BIGINT NOT NULL DEFAULT 0,
	max_depth BIGINT NOT NULL DEFAULT 0,
	last_pos BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE events (
	nid {{serial}},
	stream_pos BIGINT UNIQUE,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	room_version TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT,
	sender TEXT NOT NULL,
	depth BIGINT NOT NULL,
	origin_ts BIGINT NOT NULL,
	received_ts BIGINT NOT NULL,
	json TEXT NOT NULL,
	membership TEXT NOT NULL DEFAULT '',
	redacted BOOLEAN NOT NULL DEFAULT FALSE,
	redacted_because TEXT NOT NULL DEFAULT '',
	rejected BOOLEAN NOT NULL DEFAULT FALSE,
	soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
	outlier BOOLEAN NOT NULL DEFAULT FALSE,
	snapshot_before BIGINT NOT NULL DEFAULT 0,
	snapshot_after BIGINT NOT NULL DEFAULT 0,
	txn_id TEXT NOT NULL DEFAULT '',
	txn_device TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_room_pos ON events(room_id, stream_pos);
CREATE INDEX events_member_pos ON events(state_key, type, stream_pos);
CREATE TABLE state_snapshots (
	snapshot_id {{serial}},
	room_id TEXT NOT NULL,
	parent_id BIGINT NOT NULL DEFAULT 0,
	chain_len BIGINT NOT NULL DEFAULT 0,
	delta TEXT NOT NULL
);
CREATE TABLE current_state (
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id TEXT NOT NULL,
	membership TEXT NOT NULL DEFAULT '',
	stream_pos BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member ON current_state(state_key, type, membership);
CREATE TABLE room_aliases (
	alias TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases(room_id);
CREATE TABLE transaction_ids (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	result TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, kind, txn_id)
);
CREATE TABLE room_forgotten (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
)`

// Room is a row of rooms.
type Room struct {
	RoomID             string
	Version            string
	Creator            string
	CreatedTS          int64
	IsPublic           bool
	ForwardExtremities []string
	CurrentSnapshot    int64
	MaxDepth           int64
	LastPos            int64
}

// Event is a stored event with its bookkeeping.
type Event struct {
	NID             int64
	StreamPos       int64 // 0 for outliers
	EventID         string
	RoomID          string
	RoomVersion     string
	Type            string
	StateKey        *string
	Sender          string
	Depth           int64
	OriginTS        int64
	ReceivedTS      int64
	JSON            []byte
	Membership      string
	Redacted        bool
	RedactedBecause string
	Rejected        bool
	SoftFailed      bool
	Outlier         bool
	SnapshotBefore  int64
	SnapshotAfter   int64
	TxnID           string
	TxnDevice       string
	// Imported marks, in memory only, an event the importer stored:
	// history from another platform, never pushed or counted as news.
	Imported bool
}

// InsertRoom creates a room row.
func InsertRoom(ctx context.Context, q Querier, r *Room) error {
	ext, _ := json.Marshal(r.ForwardExtremities)
	_, err := q.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public, forward_extremities, current_snapshot, max_depth, last_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, r.RoomID, r.Version, r.Creator, r.CreatedTS, r.IsPublic, string(ext), r.CurrentSnapshot, r.MaxDepth, r.LastPos)
	if err == nil {
		afterWrite(q, func(c *memberCache) { c.setLastPos(r.RoomID, r.LastPos) })
	}
	return err
}

// UpdateRoomHead records the room's new forward extremities and state.
func UpdateRoomHead(ctx context.Context, q Querier, roomID string, ext []string, snapshot, maxDepth, lastPos int64) error {
	b, _ := json.Marshal(ext)
	_, err := q.ExecContext(ctx, `UPDATE rooms SET forward_extremities = $1, current_snapshot = $2, max_depth = $3, last_pos = $4 WHERE room_id = $5`,
		string(b), snapshot, maxDepth, lastPos, roomID)
	if err == nil {
		afterWrite(q, func(c *memberCache) { c.setLastPos(roomID, lastPos) })
	}
	return err
}

// SetRoomLastPos records the room's latest stream position alone (a
// remote invite stored without the room's state).
func SetRoomLastPos(ctx context.Context, q Querier, roomID string, lastPos int64) error {
	_, err := q.ExecContext(ctx, `UPDATE rooms SET last_pos = $1 WHERE room_id = $2`, lastPos, roomID)
	if err == nil {
		afterWrite(q, func(c *memberCache) { c.setLastPos(roomID, lastPos) })
	}
	return err
}

// SetRoomPublic sets the room's directory visibility.
func SetRoomPublic(ctx context.Context, q Querier, roomID string, public bool) error {
	_, err := q.ExecContext(ctx, `UPDATE rooms SET is_public = $1 WHERE room_id = $2`, public, roomID)
	return err
}

// GetRoom loads a room, or ErrNotFound.
func GetRoom(ctx context.Context, q Querier, roomID string) (*Room, error) {
	var r Room
	var ext string
	err := q.QueryRowContext(ctx, `SELECT room_id, room_version, creator, created_ts, is_public, forward_extremities, current_snapshot, max_depth, last_pos FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.RoomID, &r.Version, &r.Creator, &r.CreatedTS, &r.IsPublic, &ext, &r.CurrentSnapshot, &r.MaxDepth, &r.LastPos)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(ext), &r.ForwardExtremities)
	return &r, nil
}

// PublicRoomIDs lists rooms published in the directory.
func PublicRoomIDs(ctx context.Context, q Querier) ([]string, error) {
	return queryStrings(ctx, q, `SELECT room_id FROM rooms WHERE is_public = TRUE ORDER BY created_ts`)
}

// InsertEvent stores an event. It returns false if the event ID was already
// stored (nothing is changed then).
func InsertEvent(ctx context.Context, q Querier, e *Event) (bool, error) {
	var pos any
	if e.StreamPos != 0 {
		pos = e.StreamPos
	}
	var sk any
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	// ON CONFLICT, not a caught error: a failed statement would abort a
	// PostgreSQL transaction.
	res, err := q.ExecContext(ctx, `INSERT INTO events (stream_pos, event_id, room_id, room_version, type, state_key, sender, depth, origin_ts, received_ts, json,
		membership, redacted, redacted_because, rejected, soft_failed, outlier, snapshot_before, snapshot_after, txn_id, txn_device)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		ON CONFLICT (event_id) DO NOTHING`,
		pos, e.EventID, e.RoomID, e.RoomVersion, e.Type, sk, e.Sender, e.Depth, e.OriginTS, e.ReceivedTS, string(e.JSON),
		e.Membership, e.Redacted, e.RedactedBecause, e.Rejected, e.SoftFailed, e.Outlier, e.SnapshotBefore, e.SnapshotAfter, e.TxnID, e.TxnDevice)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PromoteOutlier gives an event we held as an outlier its place in the
// timeline once it arrives as a normal event.
func PromoteOutlier(ctx context.Context, q Querier, e *Event) error {
	_, err := q.ExecContext(ctx, `UPDATE events SET stream_pos = $1, outlier = FALSE, rejected = $2, soft_failed = $3, snapshot_before = $4, snapshot_after = $5 WHERE event_id = $6`,
		e.StreamPos, e.Rejected, e.SoftFailed, e.SnapshotBefore, e.SnapshotAfter, e.EventID)
	return err
}

// RedactEvent replaces an event's JSON with its redacted form.
func RedactEvent(ctx context.Context, q Querier, eventID string, redactedJSON []byte, because string) error {
	_, err := q.ExecContext(ctx, `UPDATE events SET json = $1, redacted = TRUE, redacted_because = $2 WHERE event_id = $3`, string(redactedJSON), because, eventID)
	return err
}

const eventCols = `nid, COALESCE(stream_pos, 0), event_id, room_id, room_version, type, state_key, sender, depth, origin_ts, received_ts, json, membership,
	redacted, redacted_because, rejected, soft_failed, outlier, snapshot_before, snapshot_after, txn_id, txn_device`

func scanEvent(sc interface{ Scan(...any) error }) (*Event, error) {
	var e Event
	var sk sql.NullString
	var js string
	if err := sc.Scan(&e.NID, &e.StreamPos, &e.EventID, &e.RoomID, &e.RoomVersion, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginTS, &e.ReceivedTS, &js, &e.Membership,
		&e.Redacted, &e.RedactedBecause, &e.Rejected, &e.SoftFailed, &e.Outlier, &e.SnapshotBefore, &e.SnapshotAfter, &e.TxnID, &e.TxnDevice); err != nil {
		return nil, err
	}
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	e.JSON = []byte(js)
	return &e, nil
}

func queryEvents(ctx context.Context, q Querier, query string, args ...any) ([]*Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// GetEvent loads one event by ID, or ErrNotFound.
func GetEvent(ctx context.Context, q Querier, eventID string) (*Event, error) {
	e, err := scanEvent(q.QueryRowContext(ctx, `SELECT `+eventCols+` FROM events WHERE event_id = $1`, eventID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return e, err
}

// GetEvents loads the events with the given IDs (missing ones are absent).
func GetEvents(ctx context.Context, q Querier, ids []string) ([]*Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []*Event
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		args := make([]any, 0, end-start)
		ph := make([]string, 0, end-start)
		for i, id := range ids[start:end] {
			args = append(args, id)
			ph = append(ph, fmt.Sprintf("$%d", i+1))
		}
		evs, err := queryEvents(ctx, q, `SELECT `+eventCols+` FROM events WHERE event_id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// RoomEventsRange returns timeline events of a room with from < pos <= to,
// newest first when backwards, at most limit. Outliers and soft-failed
// events are not part of the timeline.
func RoomEventsRange(ctx context.Context, q Querier, roomID string, from, to int64, limit int, backwards bool) ([]*Event, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	return queryEvents(ctx, q, `SELECT `+eventCols+` FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND soft_failed = FALSE AND rejected = FALSE
		ORDER BY stream_pos `+order+` LIMIT $4`, roomID, from, to, limit)
}

// MembershipEventsForUser returns the user's own m.room.member events with
// from < pos <= to, oldest first: joins, leaves and invites to sync.
func MembershipEventsForUser(ctx context.Context, q Querier, userID string, from, to int64) ([]*Event, error) {
	return queryEvents(ctx, q, `SELECT `+eventCols+` FROM events WHERE state_key = $1 AND type = 'm.room.member' AND stream_pos > $2 AND stream_pos <= $3
		AND soft_failed = FALSE AND rejected = FALSE ORDER BY stream_pos ASC`, userID, from, to)
}

// LatestMembershipBefore returns the user's latest membership event in the
// room at or before pos, or ErrNotFound.
func LatestMembershipBefore(ctx context.Context, q Querier, roomID, userID string, pos int64) (*Event, error) {
	e, err := scanEvent(q.QueryRowContext(ctx, `SELECT `+eventCols+` FROM events WHERE state_key = $1 AND type = 'm.room.member' AND room_id = $2 AND stream_pos <= $3
		AND soft_failed = FALSE AND rejected = FALSE ORDER BY stream_pos DESC LIMIT 1`, userID, roomID, pos))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return e, err
}

// MaxEventPos returns the highest stream position of a room's events.
func MaxEventPos(ctx context.Context, q Querier, roomID string) (int64, error) {
	var v sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MAX(stream_pos) FROM events WHERE room_id = $1`, roomID).Scan(&v)
	return v.Int64, err
}

// EarliestTimelineEvent returns the room's oldest event with a stream
// position (where backfill starts): its ID, position and the snapshot
// before it, or ErrNotFound for a room with none.
func EarliestTimelineEvent(ctx context.Context, q Querier, roomID string) (eventID string, pos, snapshotBefore int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT event_id, stream_pos, snapshot_before FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL ORDER BY stream_pos ASC LIMIT 1`, roomID).Scan(&eventID, &pos, &snapshotBefore)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, 0, ErrNotFound
	}
	return eventID, pos, snapshotBefore, err
}

// MinEventPos returns the lowest stream position of any event (0 if none):
// backfilled events take positions below it.
func MinEventPos(ctx context.Context, q Querier) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MIN(stream_pos), 0) FROM events`).Scan(&v)
	return v, err
}

// StateEntry is one (type, state_key) → event ID mapping.
type StateEntry struct {
	Type     string `json:"t"`
	StateKey string `json:"k"`
	EventID  string `json:"e"` // "" removes the key (deltas only)
}

// InsertSnapshot stores a snapshot as a delta on parent (0 = full).
func InsertSnapshot(ctx context.Context, q Querier, roomID string, parent, chainLen int64, delta []StateEntry) (int64, error) {
	b, _ := json.Marshal(delta)
	return insertReturningID(ctx, q, "snapshot_id", `INSERT INTO state_snapshots (room_id, parent_id, chain_len, delta) VALUES ($1, $2, $3, $4)`, roomID, parent, chainLen, string(b))
}

// GetSnapshot loads one snapshot row.
func GetSnapshot(ctx context.Context, q Querier, id int64) (parent, chainLen int64, delta []StateEntry, err error) {
	var d string
	err = q.QueryRowContext(ctx, `SELECT parent_id, chain_len, delta FROM state_snapshots WHERE snapshot_id = $1`, id).Scan(&parent, &chainLen, &d)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, nil, ErrNotFound
	}
	if err != nil {
		return
	}
	err = json.Unmarshal([]byte(d), &delta)
	return
}

func insertReturningID(ctx context.Context, q Querier, idCol, query string, args ...any) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, query+" RETURNING "+idCol, args...).Scan(&id)
	return id, err
}

// CurrentStateRow is a row of current_state.
type CurrentStateRow struct {
	RoomID, Type, StateKey, EventID, Membership string
	StreamPos                                   int64
}

// SetCurrentState upserts (or with eventID "" deletes) a current-state row.
func SetCurrentState(ctx context.Context, q Querier, r CurrentStateRow) error {
	var err error
	if r.EventID == "" {
		_, err = q.ExecContext(ctx, `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, r.RoomID, r.Type, r.StateKey)
	} else {
		_, err = q.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership, stream_pos = excluded.stream_pos`,
			r.RoomID, r.Type, r.StateKey, r.EventID, r.Membership, r.StreamPos)
	}
	if err == nil && r.Type == "m.room.member" {
		afterWrite(q, func(c *memberCache) { c.setMembership(r) })
	}
	return err
}

// RoomsByMembership lists rooms where the user's current membership is one
// of the given values, with that membership.
func RoomsByMembership(ctx context.Context, q Querier, userID string, memberships ...string) (map[string]string, error) {
	args := []any{userID}
	ph := make([]string, len(memberships))
	for i, m := range memberships {
		args = append(args, m)
		ph[i] = fmt.Sprintf("$%d", i+2)
	}
	rows, err := q.QueryContext(ctx, `SELECT room_id, membership FROM current_state WHERE state_key = $1 AND type = 'm.room.member' AND membership IN (`+strings.Join(ph, ",")+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var r, m string
		if err := rows.Scan(&r, &m); err != nil {
			return nil, err
		}
		out[r] = m
	}
	return out, rows.Err()
}

// RoomMembers lists users of the room whose current membership is m.
func RoomMembers(ctx context.Context, q Querier, roomID, m string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = $2 ORDER BY state_key`, roomID, m)
}

// AllRoomIDs lists every room we know, for warming caches at start.
func AllRoomIDs(ctx context.Context, q Querier) ([]string, error) {
	return queryStrings(ctx, q, `SELECT room_id FROM rooms`)
}

func queryStrings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Aliases.

// InsertAlias maps alias to room; false if the alias is taken.
func InsertAlias(ctx context.Context, q Querier, alias, roomID, creator string) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING`, alias, roomID, creator)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// GetAlias resolves an alias to (room, creator), or ErrNotFound.
func GetAlias(ctx context.Context, q Querier, alias string) (roomID, creator string, err error) {
	err = q.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return
}

// DeleteAlias removes an alias.
func DeleteAlias(ctx context.Context, q Querier, alias string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	return err
}

// RoomAliases lists the local aliases of a room.
func RoomAliases(ctx context.Context, q Querier, roomID string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
}

// Transaction IDs make client sends idempotent per device.

// GetTxn returns the stored result of a client transaction, or ErrNotFound.
func GetTxn(ctx context.Context, q Querier, userID, deviceID, kind, txnID string) (string, error) {
	var res string
	err := q.QueryRowContext(ctx, `SELECT result FROM transaction_ids WHERE user_id = $1 AND device_id = $2 AND kind = $3 AND txn_id = $4`, userID, deviceID, kind, txnID).Scan(&res)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return res, err
}

// PutTxn records a client transaction's result.
func PutTxn(ctx context.Context, q Querier, userID, deviceID, kind, txnID, result string, ts int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO transaction_ids (user_id, device_id, kind, txn_id, result, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		userID, deviceID, kind, txnID, result, ts)
	return err
}

// Forgotten rooms.

// SetForgotten records that the user forgot the room.
func SetForgotten(ctx context.Context, q Querier, userID, roomID string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO room_forgotten (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
	return err
}

// ClearForgotten is called when the user joins again.
func ClearForgotten(ctx context.Context, q Querier, userID, roomID string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM room_forgotten WHERE user_id = $1 AND room_id = $2`, userID, roomID)
	return err
}

// ForgottenRooms lists rooms the user forgot.
func ForgottenRooms(ctx context.Context, q Querier, userID string) (map[string]bool, error) {
	ids, err := queryStrings(ctx, q, `SELECT room_id FROM room_forgotten WHERE user_id = $1`, userID)
	out := map[string]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out, err
}

// SnapshotAtPos returns the room's state snapshot after its latest
// timeline event at or before pos (0 if the room had none then).
func SnapshotAtPos(ctx context.Context, q Querier, roomID string, pos int64) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT snapshot_after FROM events WHERE room_id = $1 AND stream_pos <= $2 AND soft_failed = FALSE AND rejected = FALSE
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

// UserJoinPositions lists the stream positions of the user's joins to a room.
func UserJoinPositions(ctx context.Context, q Querier, roomID, userID string) ([]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT stream_pos FROM events WHERE state_key = $1 AND type = 'm.room.member' AND room_id = $2 AND membership = 'join'
		AND stream_pos IS NOT NULL AND soft_failed = FALSE AND rejected = FALSE ORDER BY stream_pos`, userID, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// EventAtTimestamp finds the room's event closest to ts in one direction
// (jump to date, MSC3030): forward, the first at or after ts; backward,
// the last at or before it. Ties on the timestamp go by stream order, so
// of events sent in the same millisecond forward finds the first and
// backward the last. Rejected and soft-failed events and outliers are
// never answers. ErrNotFound when there is none.
func EventAtTimestamp(ctx context.Context, q Querier, roomID string, ts int64, forward bool) (eventID string, originTS int64, err error) {
	query := `SELECT event_id, origin_ts FROM events WHERE room_id = $1 AND stream_pos IS NOT NULL AND NOT outlier AND NOT rejected AND NOT soft_failed AND `
	if forward {
		query += `origin_ts >= $2 ORDER BY origin_ts, stream_pos LIMIT 1`
	} else {
		query += `origin_ts <= $2 ORDER BY origin_ts DESC, stream_pos DESC LIMIT 1`
	}
	err = q.QueryRowContext(ctx, query, roomID, ts).Scan(&eventID, &originTS)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	return eventID, originTS, err
}
