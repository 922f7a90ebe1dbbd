package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
)

// Dehydrated devices (MSC3814): one per user, a real row of devices (so
// /keys/query lists it and to-device messages queue for it) that has no
// access token; the row here holds the client's encrypted device_data, which
// the server never reads.

// dehydratedV1 keys the dehydrated device by user: a new one replaces the
// old one.
const dehydratedV1 = `
CREATE TABLE e2ee_dehydrated_devices (
	user_id TEXT PRIMARY KEY,
	device_id TEXT NOT NULL,
	device_data TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
`

// DehydratedDevice is the user's dehydrated device.
type DehydratedDevice struct {
	DeviceID   string
	DeviceData json.RawMessage
	CreatedTS  int64
}

// GetDehydratedDevice returns the user's dehydrated device, or ErrNotFound.
func GetDehydratedDevice(ctx context.Context, q Querier, userID string) (*DehydratedDevice, error) {
	var d DehydratedDevice
	var data string
	err := q.QueryRowContext(ctx, `SELECT device_id, device_data, created_ts FROM e2ee_dehydrated_devices WHERE user_id = $1`, userID).
		Scan(&d.DeviceID, &data, &d.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	d.DeviceData = json.RawMessage(data)
	return &d, nil
}

// SetDehydratedDevice records d as the user's dehydrated device, replacing
// the row of any earlier one. The caller deletes the earlier device
// (DeleteDevices) and creates the new one in the same transaction.
func SetDehydratedDevice(ctx context.Context, q Querier, userID string, d *DehydratedDevice) error {
	_, err := q.ExecContext(ctx, `INSERT INTO e2ee_dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data, created_ts = excluded.created_ts`,
		userID, d.DeviceID, string(d.DeviceData), d.CreatedTS)
	return err
}

// cleanupDehydrated is a device cleanup (see cleanupDevices): deleting the
// dehydrated device by any path (DELETE /devices, deactivation, a
// replacement) forgets its device_data.
func cleanupDehydrated(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	for start := 0; start < len(deviceIDs); start += 500 {
		chunk := deviceIDs[start:min(start+500, len(deviceIDs))]
		args := []any{userID}
		for _, d := range chunk {
			args = append(args, d)
		}
		if _, err := q.ExecContext(ctx, `DELETE FROM e2ee_dehydrated_devices WHERE user_id = $1 AND device_id IN `+inPlaceholders(2, len(chunk)), args...); err != nil {
			return err
		}
	}
	return nil
}

// DehydratedEvents pages through the to-device messages queued for a
// dehydrated device: at most limit of them, in delivery order, after the
// cursor (afterPos, afterID) and at visible positions only (upTo: the
// stream's current position), so a message still being committed is not
// skipped by a later page. Unlike /sync nothing is deleted: MSC3814 keeps
// them until the device is replaced or deleted, so an aborted rehydration
// can start again. It returns the cursor of the last message (the given
// one when there is none).
func DehydratedEvents(ctx context.Context, q Querier, userID, deviceID string, afterPos, afterID, upTo int64, limit int) ([]ToDeviceEvent, int64, int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, pos, sender, type, content FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2
		AND pos <= $3 AND (pos > $4 OR (pos = $4 AND id > $5)) ORDER BY pos, id LIMIT $6`, userID, deviceID, upTo, afterPos, afterID, limit)
	if err != nil {
		return nil, 0, 0, err
	}
	defer rows.Close()
	out := []ToDeviceEvent{}
	for rows.Next() {
		var ev ToDeviceEvent
		var content string
		if err := rows.Scan(&afterID, &afterPos, &ev.Sender, &ev.Type, &content); err != nil {
			return nil, 0, 0, err
		}
		ev.Content = json.RawMessage(content)
		out = append(out, ev)
	}
	return out, afterPos, afterID, rows.Err()
}

// CountDeviceTokens counts a device's access tokens (a dehydrated device
// has none; tests and admin checks).
func CountDeviceTokens(ctx context.Context, q Querier, userID, deviceID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&n)
	return n, err
}
