package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
)

// Server-side key backup (spec: "Server-side key backups"). The server
// stores opaque encrypted session data; it only compares the metadata
// (verification, first message index, forward count) to keep the better
// copy of each session key.

// BackupVersion is a row of e2ee_backup_versions.
type BackupVersion struct {
	UserID    string
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	ETag      int64
	Deleted   bool
}

// BackupKey is one session's backed-up key.
type BackupKey struct {
	RoomID            string          `json:"-"`
	SessionID         string          `json:"-"`
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// Better reports whether k should replace old (spec: a verified key beats
// an unverified one, then the lower first_message_index, then the lower
// forwarded_count; on a tie the stored key stays).
func (k *BackupKey) Better(old *BackupKey) bool {
	if k.IsVerified != old.IsVerified {
		return k.IsVerified
	}
	if k.FirstMessageIndex != old.FirstMessageIndex {
		return k.FirstMessageIndex < old.FirstMessageIndex
	}
	return k.ForwardedCount < old.ForwardedCount
}

// CreateBackupVersion adds a new backup version (one above any the user
// ever had) and returns it.
func CreateBackupVersion(ctx context.Context, q Querier, userID, algorithm string, authData []byte) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `INSERT INTO e2ee_backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
		SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, FALSE FROM e2ee_backup_versions WHERE user_id = $1 RETURNING version`,
		userID, algorithm, string(authData)).Scan(&v)
	return v, err
}

// GetBackupVersion loads a live version (version 0: the latest), or ErrNotFound.
func GetBackupVersion(ctx context.Context, q Querier, userID string, version int64) (*BackupVersion, error) {
	query := `SELECT version, algorithm, auth_data, etag FROM e2ee_backup_versions WHERE user_id = $1 AND deleted = FALSE AND version = $2`
	args := []any{userID, version}
	if version == 0 {
		query = `SELECT version, algorithm, auth_data, etag FROM e2ee_backup_versions WHERE user_id = $1 AND deleted = FALSE ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	b := &BackupVersion{UserID: userID}
	var ad string
	err := q.QueryRowContext(ctx, query, args...).Scan(&b.Version, &b.Algorithm, &ad, &b.ETag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	b.AuthData = json.RawMessage(ad)
	return b, nil
}

// UpdateBackupAuthData replaces a live version's auth_data; false if no
// such live version.
func UpdateBackupAuthData(ctx context.Context, q Querier, userID string, version int64, authData []byte) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE e2ee_backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3 AND deleted = FALSE`, string(authData), userID, version)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeleteBackupVersion flags a version deleted and drops its keys; false if
// no such live version.
func DeleteBackupVersion(ctx context.Context, q Querier, userID string, version int64) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE e2ee_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, version)
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	_, err = q.ExecContext(ctx, `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`, userID, version)
	return err == nil, err
}

// CountBackupKeys counts the keys stored in a version.
func CountBackupKeys(ctx context.Context, q Querier, userID string, version int64) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`, userID, version).Scan(&n)
	return n, err
}

// PutBackupKeys stores keys into a version, each only where it is better
// than the stored copy, and bumps the version's etag when anything
// changed. Run it in a transaction.
func PutBackupKeys(ctx context.Context, q Querier, userID string, version int64, keys []BackupKey) (changed bool, err error) {
	for i := range keys {
		k := &keys[i]
		var old BackupKey
		var sd string
		err := q.QueryRowContext(ctx, `SELECT first_message_index, forwarded_count, is_verified, session_data FROM e2ee_backup_keys
			WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, version, k.RoomID, k.SessionID).
			Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified, &sd)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := q.ExecContext(ctx, `INSERT INTO e2ee_backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData)); err != nil {
				return false, err
			}
		case err != nil:
			return false, err
		case k.Better(&old):
			if _, err := q.ExecContext(ctx, `UPDATE e2ee_backup_keys SET first_message_index = $1, forwarded_count = $2, is_verified = $3, session_data = $4
				WHERE user_id = $5 AND version = $6 AND room_id = $7 AND session_id = $8`,
				k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData), userID, version, k.RoomID, k.SessionID); err != nil {
				return false, err
			}
		default:
			continue
		}
		changed = true
	}
	if changed {
		err = bumpBackupETag(ctx, q, userID, version)
	}
	return changed, err
}

func bumpBackupETag(ctx context.Context, q Querier, userID string, version int64) error {
	_, err := q.ExecContext(ctx, `UPDATE e2ee_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version)
	return err
}

// GetBackupKeys lists a version's keys, optionally of one room ("" = all)
// and one session ("" = all).
func GetBackupKeys(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	query := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		args = append(args, roomID)
		query += ` AND room_id = $` + strconv.Itoa(len(args))
	}
	if sessionID != "" {
		args = append(args, sessionID)
		query += ` AND session_id = $` + strconv.Itoa(len(args))
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY room_id, session_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var sd string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &sd); err != nil {
			return nil, err
		}
		k.SessionData = json.RawMessage(sd)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes a version's keys, optionally of one room and
// one session, bumping the etag when any went.
func DeleteBackupKeys(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) error {
	query := `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		args = append(args, roomID)
		query += ` AND room_id = $` + strconv.Itoa(len(args))
	}
	if sessionID != "" {
		args = append(args, sessionID)
		query += ` AND session_id = $` + strconv.Itoa(len(args))
	}
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return bumpBackupETag(ctx, q, userID, version)
	}
	return nil
}
