package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Federation's E2EE and EDU bookkeeping.
//
//   - fed_device_list_streams: per local user, the stream_id of the last
//     m.device_list_update this server sent (the spec's per-user device
//     list version; GET /user/devices reports it and the next update names
//     it as prev_id).
//   - fed_inbound_todevice: m.direct_to_device message IDs already
//     delivered, per origin and sender, so a message resent in another
//     transaction is not delivered twice. Rows are pruned after a day.
const fedE2EEV1 = `
CREATE TABLE fed_device_list_streams (
	user_id TEXT PRIMARY KEY,
	stream_id BIGINT NOT NULL
);
CREATE TABLE fed_inbound_todevice (
	origin TEXT NOT NULL,
	sender TEXT NOT NULL,
	message_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, sender, message_id)
);
CREATE INDEX fed_inbound_todevice_ts ON fed_inbound_todevice(created_ts)`

// NextDeviceListStreamIDs reserves n consecutive device-list stream IDs of
// a local user and returns the first and the user's previous ID (0 when
// none was ever sent).
func NextDeviceListStreamIDs(ctx context.Context, q Querier, userID string, n int) (first, prev int64, err error) {
	if n < 1 {
		n = 1
	}
	var last int64
	err = q.QueryRowContext(ctx, `INSERT INTO fed_device_list_streams (user_id, stream_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = fed_device_list_streams.stream_id + $2 RETURNING stream_id`, userID, int64(n)).Scan(&last)
	if err != nil {
		return 0, 0, err
	}
	return last - int64(n) + 1, last - int64(n), nil
}

// DeviceListStreamID is a local user's current device-list stream ID (0
// when no update was ever sent).
func DeviceListStreamID(ctx context.Context, q Querier, userID string) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT stream_id FROM fed_device_list_streams WHERE user_id = $1`, userID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

// MarkInboundToDevice records a to-device message ID from origin's sender
// and reports whether it is new (false: already delivered, skip it). Run it
// in the delivery's transaction so a failed delivery is not remembered.
func MarkInboundToDevice(ctx context.Context, q Querier, origin, sender, messageID string, ts int64) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO fed_inbound_todevice (origin, sender, message_id, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, sender, message_id) DO NOTHING`, origin, sender, messageID, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// PruneInboundToDevice forgets message IDs recorded before `before`.
func PruneInboundToDevice(ctx context.Context, q Querier, before int64) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM fed_inbound_todevice WHERE created_ts < $1`, before)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// FedReceipt is a public read receipt stored in a range of the stream.
type FedReceipt struct {
	RoomID, UserID, ThreadID, EventID string
	TS, StreamPos                     int64
}

// ReadReceiptsRange lists the m.read receipts (public ones only) stored
// with from < stream_pos <= to, oldest first: federation sends local
// users' receipts from it.
func ReadReceiptsRange(ctx context.Context, q Querier, from, to int64, limit int) ([]FedReceipt, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, user_id, thread_id, event_id, ts, stream_pos FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 AND receipt_type = 'm.read' ORDER BY stream_pos LIMIT $3`, from, to, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []FedReceipt
	for rows.Next() {
		var r FedReceipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// PresenceChangesRange lists presence rows whose stream position is in
// (from, to], oldest first, at most limit (0: all): federation sends local
// users' changes from it, appservices everyone's.
func PresenceChangesRange(ctx context.Context, q Querier, from, to int64, limit int) ([]*Presence, error) {
	query := `SELECT ` + presenceCols + ` FROM presence p WHERE p.stream_pos > $1 AND p.stream_pos <= $2 ORDER BY p.stream_pos`
	if limit > 0 {
		return queryAll(ctx, q, scanPresence, query+` LIMIT $3`, from, to, limit)
	}
	return queryAll(ctx, q, scanPresence, query, from, to)
}

// CurrentStateEventID returns the event ID in a slot of a room's current
// state, or "" when the slot is empty.
func CurrentStateEventID(ctx context.Context, q Querier, roomID, typ, stateKey string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, roomID, typ, stateKey).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}
