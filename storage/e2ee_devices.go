package storage

import (
	"context"
)

// cleanupE2EEDevices is a device cleanup (see cleanupDevices):
// deleting a device, by any path (DELETE /devices, logout, deactivation),
// deletes its keys, signatures and queued to-device messages and records a
// device-list change so the user's room-mates stop encrypting to it.
func cleanupE2EEDevices(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	defer keysWritten(q, userID)
	hadKeys := false
	for start := 0; start < len(deviceIDs); start += 500 {
		chunk := deviceIDs[start:min(start+500, len(deviceIDs))]
		args := []any{userID}
		for _, d := range chunk {
			args = append(args, d)
		}
		in := inPlaceholders(2, len(chunk))
		var n int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2ee_device_keys WHERE user_id = $1 AND device_id IN `+in, args...).Scan(&n); err != nil {
			return err
		}
		hadKeys = hadKeys || n > 0
		var maxPos *int64
		if err := q.QueryRowContext(ctx, `SELECT MAX(pos) FROM e2ee_to_device WHERE user_id = $1 AND device_id IN `+in, args...).Scan(&maxPos); err != nil {
			return err
		}
		if maxPos != nil {
			if err := raiseStreamMark(ctx, q, *maxPos); err != nil {
				return err
			}
		}
		for _, stmt := range []string{
			`DELETE FROM e2ee_device_keys WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM e2ee_to_device WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM e2ee_signatures WHERE target_user = $1 AND target_key IN ` + in,
		} {
			if _, err := q.ExecContext(ctx, stmt, args...); err != nil {
				return err
			}
		}
	}
	if !hadKeys {
		return nil // nobody could have encrypted to it: no one needs telling
	}
	if tx := q.Txn(); tx != nil {
		_, err := RecordDeviceListChange(ctx, tx, userID, deviceIDs, true, "")
		return err
	}
	return q.Store().WithTx(ctx, func(tx *Tx) error {
		_, err := RecordDeviceListChange(ctx, tx, userID, deviceIDs, true, "")
		return err
	})
}
