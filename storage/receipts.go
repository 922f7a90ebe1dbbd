package storage

import (
	"context"
)

// Receipts: one row per (room, receipt type, user, thread), the "read up
// to" marker, moved only forwards. thread_id is ” for unthreaded
// receipts, 'main' or a thread root's event ID for threaded ones.
// event_pos is the receipted event's stream position, so receipts compare
// with notifications without loading events.
const receiptsV1 = `
CREATE TABLE receipts (
	room_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	user_id TEXT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL,
	event_pos BIGINT NOT NULL,
	ts BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts(stream_pos);
CREATE INDEX receipts_room_pos ON receipts(room_id, stream_pos)`

// Receipt types.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// Receipt is one row of receipts.
type Receipt struct {
	RoomID    string
	Type      string
	UserID    string
	ThreadID  string // "" = unthreaded
	EventID   string
	EventPos  int64
	TS        int64
	StreamPos int64
}

// PutReceipt stores r inside tx if it moves the user's marker forward
// (a receipt for an older event than the current one is ignored) and
// returns whether it did. A read receipt also marks the user's
// notifications up to the event as read.
//
// A threaded receipt for the event the user's unthreaded receipt of the
// same type already names is dropped (MSC4102): the unthreaded one must
// win, and only dropping it here keeps it from winning in a later /sync
// or over federation, where the two would travel apart.
func PutReceipt(ctx context.Context, tx *Tx, r *Receipt) (bool, error) {
	read := r.Type == ReceiptRead || r.Type == ReceiptReadPrivate
	if read {
		if err := lockUsers(ctx, tx, []string{r.UserID}); err != nil {
			return false, err
		}
	}
	if r.ThreadID != "" {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM receipts WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 AND thread_id = '' AND event_id = $4`,
			r.RoomID, r.Type, r.UserID, r.EventID).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return false, nil
		}
	}
	r.StreamPos = tx.NextPos("receipts")
	res, err := tx.ExecContext(ctx, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id, event_pos = excluded.event_pos,
			ts = excluded.ts, stream_pos = excluded.stream_pos
		WHERE receipts.event_pos < excluded.event_pos`,
		r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.EventPos, r.TS, r.StreamPos)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return false, err
	}
	if read {
		if err := markNotificationsRead(ctx, tx, r.UserID, r.RoomID, r.ThreadID, r.EventPos, r.StreamPos); err != nil {
			return false, err
		}
	}
	return true, nil
}

// ReceiptsRange lists receipts with from < pos <= to in the rooms userID
// is joined to, leaving out other users' private receipts.
func ReceiptsRange(ctx context.Context, q Querier, userID string, from, to int64) ([]Receipt, error) {
	return queryAll(ctx, q, scanReceipt, `SELECT `+receiptCols+`
		FROM current_state cs JOIN receipts r ON r.room_id = cs.room_id
		WHERE cs.state_key = $1 AND cs.type = 'm.room.member' AND cs.membership = 'join'
		AND r.stream_pos > $2 AND r.stream_pos <= $3
		AND (r.receipt_type <> 'm.read.private' OR r.user_id = $1)
		ORDER BY r.stream_pos`, userID, from, to)
}

// receiptCols are the columns scanReceipt reads (table alias r).
const receiptCols = `r.room_id, r.receipt_type, r.user_id, r.thread_id, r.event_id, r.event_pos, r.ts, r.stream_pos`

func scanReceipt(sc interface{ Scan(...any) error }) (Receipt, error) {
	var r Receipt
	err := sc.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.EventPos, &r.TS, &r.StreamPos)
	return r, err
}

// UserReceipts lists a user's own receipts in a room (tests, read state).
func UserReceipts(ctx context.Context, q Querier, userID, roomID string) ([]Receipt, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, event_pos, ts, stream_pos
		FROM receipts WHERE room_id = $1 AND user_id = $2 ORDER BY receipt_type, thread_id`, roomID, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.EventPos, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
