package storage

import (
	"context"
	"encoding/json"
)

// To-device inboxes.
//
// Delivery is exactly once per device, driven by the client's since-token:
// a /sync with since S returns the device's messages with S < pos <= To
// (To being the response's next_batch), and deletes those with pos <= S,
// which the client has acknowledged by sending S. At most limit messages
// go out per response; the rest are moved to a fresh stream position above
// To, so the next sync (since To) finds them and nothing is skipped or
// sent twice. A client retrying with an old token gets the unacknowledged
// messages again.

// ToDeviceMessage is one message for one device.
type ToDeviceMessage struct {
	UserID   string
	DeviceID string
	Sender   string
	Type     string
	Content  json.RawMessage
}

// ToDeviceEvent is a message as /sync delivers it.
type ToDeviceEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// InsertToDevice queues messages at one new stream position of tx and
// returns it. The caller wakes the recipients (tx.Publish).
func InsertToDevice(ctx context.Context, tx *Tx, msgs []ToDeviceMessage) (int64, error) {
	pos := tx.NextPos("e2ee_to_device")
	for start := 0; start < len(msgs); start += 100 {
		chunk := msgs[start:min(start+100, len(msgs))]
		args := make([]any, 0, 6*len(chunk))
		q := `INSERT INTO e2ee_to_device (pos, user_id, device_id, sender, type, content) VALUES `
		for i, m := range chunk {
			if i > 0 {
				q += ", "
			}
			n := 6 * i
			q += "(" + "$" + itoa(n+1) + ", $" + itoa(n+2) + ", $" + itoa(n+3) + ", $" + itoa(n+4) + ", $" + itoa(n+5) + ", $" + itoa(n+6) + ")"
			args = append(args, pos, m.UserID, m.DeviceID, m.Sender, m.Type, string(m.Content))
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

func itoa(n int) string { return string(appendInt(nil, n)) }

type inboxRow struct {
	id, pos int64
	ev      ToDeviceEvent
}

func readInbox(ctx context.Context, q Querier, userID, deviceID string, to int64, limit int) ([]inboxRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, pos, sender, type, content FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND pos <= $3
		ORDER BY pos, id LIMIT $4`, userID, deviceID, to, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []inboxRow
	for rows.Next() {
		var r inboxRow
		var content string
		if err := rows.Scan(&r.id, &r.pos, &r.ev.Sender, &r.ev.Type, &content); err != nil {
			return nil, err
		}
		r.ev.Content = json.RawMessage(content)
		out = append(out, r)
	}
	return out, rows.Err()
}

// TakeToDevice returns the device's messages for a sync over (since, to]
// (since 0: an initial sync, which acknowledges nothing), at most limit.
// Acknowledged messages are deleted on the way; overflow is moved past to
// and wake is run once it is visible, so a waiting sync picks it up. With
// nothing queued it costs one indexed read.
func TakeToDevice(ctx context.Context, db *DB, userID, deviceID string, since, to int64, limit int, wake func()) ([]ToDeviceEvent, error) {
	rows, err := readInbox(ctx, db, userID, deviceID, to, limit+1)
	if err != nil {
		return nil, err
	}
	return takeInbox(ctx, db, userID, deviceID, since, to, limit, rows, wake)
}

// takeInbox is TakeToDevice given the first limit+1 inbox rows up to `to`.
func takeInbox(ctx context.Context, db *DB, userID, deviceID string, since, to int64, limit int, rows []inboxRow, wake func()) ([]ToDeviceEvent, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	var err error
	if since > 0 && rows[0].pos <= since {
		if err := db.WithTx(ctx, func(tx *Tx) error { return deleteToDevice(ctx, tx, userID, deviceID, since) }); err != nil {
			return nil, err
		}
		if rows, err = readInbox(ctx, db, userID, deviceID, to, limit+1); err != nil || len(rows) == 0 {
			return nil, err
		}
	}
	if len(rows) > limit {
		last := rows[limit-1]
		rows = rows[:limit]
		err := db.WithTx(ctx, func(tx *Tx) error {
			pos := tx.NextPos("e2ee_to_device")
			if _, err := tx.ExecContext(ctx, `UPDATE e2ee_to_device SET pos = $1 WHERE user_id = $2 AND device_id = $3 AND pos <= $4
				AND (pos > $5 OR (pos = $5 AND id > $6))`, pos, userID, deviceID, to, last.pos, last.id); err != nil {
				return err
			}
			if wake != nil {
				tx.Publish(pos, wake)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]ToDeviceEvent, len(rows))
	for i, r := range rows {
		out[i] = r.ev
	}
	return out, nil
}

// deleteToDevice deletes the device's messages up to pos, remembering the
// highest position deleted so the stream never hands it out again.
func deleteToDevice(ctx context.Context, q Querier, userID, deviceID string, upTo int64) error {
	var maxPos *int64
	if err := q.QueryRowContext(ctx, `SELECT MAX(pos) FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND pos <= $3`, userID, deviceID, upTo).Scan(&maxPos); err != nil {
		return err
	}
	if maxPos == nil {
		return nil
	}
	if _, err := q.ExecContext(ctx, `DELETE FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND pos <= $3`, userID, deviceID, upTo); err != nil {
		return err
	}
	return raiseStreamMark(ctx, q, *maxPos)
}

func raiseStreamMark(ctx context.Context, q Querier, pos int64) error {
	_, err := q.ExecContext(ctx, `UPDATE e2ee_stream_mark SET pos = $1 WHERE id = 1 AND pos < $1`, pos)
	return err
}

// PendingToDevice counts the messages queued for a device (tests, admin).
func PendingToDevice(ctx context.Context, q Querier, userID, deviceID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&n)
	return n, err
}
