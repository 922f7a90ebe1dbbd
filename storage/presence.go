package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Presence: the latest presence of each local user. A row's stream
// position moves only when what others see changes (state, status
// message, currently_active), so /sync sends only real changes;
// last_active_ts may be refreshed in place without a new position.
const presenceV1 = `
CREATE TABLE presence (
	user_id TEXT PRIMARY KEY,
	state TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts BIGINT NOT NULL,
	currently_active BOOLEAN NOT NULL DEFAULT FALSE,
	stream_pos BIGINT NOT NULL
);
CREATE INDEX presence_pos ON presence(stream_pos)`

// Presence is one row of presence.
type Presence struct {
	UserID          string
	State           string // online, unavailable, offline
	StatusMsg       *string
	LastActiveTS    int64
	CurrentlyActive bool
	StreamPos       int64
}

// PutPresence stores p under a new stream position inside tx and returns it.
func PutPresence(ctx context.Context, tx *Tx, p *Presence) (int64, error) {
	p.StreamPos = tx.NextPos("presence")
	var msg sql.NullString
	if p.StatusMsg != nil {
		msg = sql.NullString{String: *p.StatusMsg, Valid: true}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
			currently_active = excluded.currently_active, stream_pos = excluded.stream_pos`,
		p.UserID, p.State, msg, p.LastActiveTS, p.CurrentlyActive, p.StreamPos)
	return p.StreamPos, err
}

// TouchPresence refreshes last_active_ts without a new stream position.
func TouchPresence(ctx context.Context, q Querier, userID string, ts int64) error {
	_, err := q.ExecContext(ctx, `UPDATE presence SET last_active_ts = $1 WHERE user_id = $2`, ts, userID)
	return err
}

const presenceCols = `p.user_id, p.state, p.status_msg, p.last_active_ts, p.currently_active, p.stream_pos`

func scanPresence(sc interface{ Scan(...any) error }) (*Presence, error) {
	var p Presence
	var msg sql.NullString
	if err := sc.Scan(&p.UserID, &p.State, &msg, &p.LastActiveTS, &p.CurrentlyActive, &p.StreamPos); err != nil {
		return nil, err
	}
	if msg.Valid {
		s := msg.String
		p.StatusMsg = &s
	}
	return &p, nil
}

// GetPresence loads a user's presence, or ErrNotFound.
func GetPresence(ctx context.Context, q Querier, userID string) (*Presence, error) {
	p, err := scanPresence(q.QueryRowContext(ctx, `SELECT `+presenceCols+` FROM presence p WHERE p.user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return p, err
}

// PresenceRange lists presence changes with from < pos <= to of userID
// and of the users who share a joined room with userID. A short range
// (incremental sync) is scanned by position; a full one (initial sync)
// is reached through the user's rooms instead.
func PresenceRange(ctx context.Context, q Querier, userID string, from, to int64) ([]*Presence, error) {
	query := `SELECT ` + presenceCols + ` FROM presence p
		WHERE p.stream_pos > $2 AND p.stream_pos <= $3 AND (p.user_id = $1 OR EXISTS (
			SELECT 1 FROM current_state x JOIN current_state y ON y.room_id = x.room_id
			WHERE x.state_key = $1 AND x.type = 'm.room.member' AND x.membership = 'join'
			AND y.state_key = p.user_id AND y.type = 'm.room.member' AND y.membership = 'join'))
		ORDER BY p.stream_pos`
	if from == 0 {
		query = `SELECT ` + presenceCols + ` FROM presence p WHERE p.user_id IN (
			SELECT y.state_key FROM current_state x JOIN current_state y ON y.room_id = x.room_id AND y.type = 'm.room.member' AND y.membership = 'join'
			WHERE x.state_key = $1 AND x.type = 'm.room.member' AND x.membership = 'join'
			UNION SELECT $1)
		AND p.stream_pos > $2 AND p.stream_pos <= $3 ORDER BY p.stream_pos`
	}
	rows, err := q.QueryContext(ctx, query, userID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Presence
	for rows.Next() {
		p, err := scanPresence(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PresenceOf loads the stored presence of these users (those without a
// row are left out), 500 to a query.
func PresenceOf(ctx context.Context, q Querier, userIDs []string) ([]*Presence, error) {
	var out []*Presence
	for start := 0; start < len(userIDs); start += 500 {
		end := min(start+500, len(userIDs))
		args := make([]any, 0, end-start)
		ph := make([]string, 0, end-start)
		for i, id := range userIDs[start:end] {
			args = append(args, id)
			ph = append(ph, fmt.Sprintf("$%d", i+1))
		}
		rows, err := q.QueryContext(ctx, `SELECT `+presenceCols+` FROM presence p WHERE p.user_id IN (`+strings.Join(ph, ",")+`) ORDER BY p.stream_pos`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			p, err := scanPresence(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, p)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ActivePresence lists users not offline (the presence sweeper's start).
func ActivePresence(ctx context.Context, q Querier) ([]*Presence, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+presenceCols+` FROM presence p WHERE p.state <> 'offline'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Presence
	for rows.Next() {
		p, err := scanPresence(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
