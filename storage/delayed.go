package storage

import (
	"context"
	"database/sql"
	"encoding/json"
)

// Delayed events (MSC4140): events a user asked the server to send later
// unless cancelled or restarted first (Element Call's "leave the call if
// my client dies"). They are rows, not timers, so they survive a restart.
const delayedEventsV1 = `
CREATE TABLE delayed_events (
	delay_id TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL DEFAULT '',
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT,
	content TEXT NOT NULL,
	delay_ms BIGINT NOT NULL,
	running_since BIGINT NOT NULL,
	send_at BIGINT NOT NULL
);
CREATE INDEX delayed_events_send_at ON delayed_events(send_at);
CREATE INDEX delayed_events_user ON delayed_events(user_id);
CREATE INDEX delayed_events_state ON delayed_events(room_id, type, state_key)`

// DelayedEvent is one scheduled event.
type DelayedEvent struct {
	DelayID      string
	UserID       string
	DeviceID     string
	RoomID       string
	Type         string
	StateKey     *string
	Content      json.RawMessage
	DelayMS      int64
	RunningSince int64 // when the delay (re)started, ms
	SendAt       int64 // RunningSince + DelayMS
}

const delayedCols = `delay_id, user_id, device_id, room_id, type, state_key, content, delay_ms, running_since, send_at`

// InsertDelayedEvent schedules d.
func InsertDelayedEvent(ctx context.Context, q Querier, d *DelayedEvent) error {
	_, err := q.ExecContext(ctx, `INSERT INTO delayed_events (`+delayedCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		d.DelayID, d.UserID, d.DeviceID, d.RoomID, d.Type, stateKeyArg(d.StateKey), string(d.Content), d.DelayMS, d.RunningSince, d.SendAt)
	return err
}

func queryDelayed(ctx context.Context, q Querier, query string, args ...any) ([]DelayedEvent, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+delayedCols+` FROM delayed_events `+query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DelayedEvent
	for rows.Next() {
		var d DelayedEvent
		var sk sql.NullString
		var c string
		if err := rows.Scan(&d.DelayID, &d.UserID, &d.DeviceID, &d.RoomID, &d.Type, &sk, &c, &d.DelayMS, &d.RunningSince, &d.SendAt); err != nil {
			return nil, err
		}
		if sk.Valid {
			d.StateKey = &sk.String
		}
		d.Content = json.RawMessage(c)
		out = append(out, d)
	}
	return out, rows.Err()
}

// DelayedEventsOf lists a user's scheduled events, soonest first.
func DelayedEventsOf(ctx context.Context, q Querier, userID string) ([]DelayedEvent, error) {
	return queryDelayed(ctx, q, `WHERE user_id = $1 ORDER BY send_at, delay_id`, userID)
}

// GetDelayedEvent loads one scheduled event, or ErrNotFound.
func GetDelayedEvent(ctx context.Context, q Querier, delayID string) (*DelayedEvent, error) {
	evs, err := queryDelayed(ctx, q, `WHERE delay_id = $1`, delayID)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return &evs[0], nil
}

// DueDelayedEvents lists up to limit events whose time has come.
func DueDelayedEvents(ctx context.Context, q Querier, now int64, limit int) ([]DelayedEvent, error) {
	return queryDelayed(ctx, q, `WHERE send_at <= $1 ORDER BY send_at, delay_id LIMIT $2`, now, limit)
}

// DeleteDelayedEvent removes a scheduled event; false when there was none
// (already sent or cancelled: whoever deletes the row sends it).
func DeleteDelayedEvent(ctx context.Context, q Querier, delayID string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM delayed_events WHERE delay_id = $1`, delayID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// RestartDelayedEvent starts an event's delay again from now.
func RestartDelayedEvent(ctx context.Context, q Querier, delayID string, now int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE delayed_events SET running_since = $1, send_at = $1 + delay_ms WHERE delay_id = $2`, now, delayID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// CancelDelayedState drops the scheduled state events for one state key:
// state set since supersedes them.
func CancelDelayedState(ctx context.Context, q Querier, roomID, typ, stateKey string) error {
	_, err := q.ExecContext(ctx, `DELETE FROM delayed_events WHERE room_id = $1 AND type = $2 AND state_key = $3`, roomID, typ, stateKey)
	return err
}

// stateKeyArg is a state key as a query argument (NULL for none).
func stateKeyArg(k *string) any {
	if k == nil {
		return nil
	}
	return *k
}

// NextDelayedEventAt is when the soonest scheduled event is due; ok false
// when none is scheduled.
func NextDelayedEventAt(ctx context.Context, q Querier) (at int64, ok bool, err error) {
	var n sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MIN(send_at) FROM delayed_events`).Scan(&n); err != nil {
		return 0, false, err
	}
	return n.Int64, n.Valid, nil
}
