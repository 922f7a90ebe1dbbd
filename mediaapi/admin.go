package mediaapi

import (
	"context"
	"errors"
	"time"

	"enclave/auditapi"
	"enclave/storage"
)

// Administration entry points for the admin API. They take the mxc://
// parts (serverName, mediaID) and return storage.ErrNotFound for unknown
// media.

// DeleteMedia removes media for good: its row, its sealed blob and every
// cached thumbnail. Rows go first (in one transaction), then the files, so
// a crash in between leaves only unreferenced ciphertext, never a row
// pointing at nothing.
func (r *Repo) DeleteMedia(ctx context.Context, serverName, mediaID string) error {
	var row *mediaRow
	var thumbs []string
	err := r.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if row, err = selectMedia(ctx, tx, serverName, mediaID); err != nil {
			return err
		}
		if thumbs, err = thumbBlobIDs(ctx, tx, serverName, mediaID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, serverName, mediaID); err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, `DELETE FROM media WHERE origin = $1 AND media_id = $2`, serverName, mediaID); err != nil {
			return err
		}
		return r.recordAdmin(ctx, tx, mediaID, "delete", row.Size)
	})
	if err != nil {
		return err
	}
	r.blobs.remove(row.BlobID)
	for _, b := range thumbs {
		r.blobs.remove(b)
	}
	r.waiters.wake(mediaKey(serverName, mediaID))
	return nil
}

// QuarantineMedia blocks every download and thumbnail of the media (they
// answer 404 M_NOT_FOUND) while keeping the sealed content for review.
// Cached thumbnails are dropped; UnquarantineMedia lifts the block.
func (r *Repo) QuarantineMedia(ctx context.Context, serverName, mediaID string) error {
	var thumbs []string
	err := r.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE media SET quarantined_ts = $1 WHERE origin = $2 AND media_id = $3`, time.Now().UnixMilli(), serverName, mediaID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		if thumbs, err = thumbBlobIDs(ctx, tx, serverName, mediaID); err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, serverName, mediaID); err != nil {
			return err
		}
		return r.recordAdmin(ctx, tx, mediaID, "quarantine", 0)
	})
	if err != nil {
		return err
	}
	for _, b := range thumbs {
		r.blobs.remove(b)
	}
	return nil
}

// UnquarantineMedia makes quarantined media downloadable again.
func (r *Repo) UnquarantineMedia(ctx context.Context, serverName, mediaID string) error {
	return r.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE media SET quarantined_ts = 0 WHERE origin = $1 AND media_id = $2`, serverName, mediaID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		return r.recordAdmin(ctx, tx, mediaID, "unquarantine", 0)
	})
}

// recordAdmin writes the audit entry of an administrative change in the
// change's transaction; the actor (the administrator) comes from ctx.
func (r *Repo) recordAdmin(ctx context.Context, tx *storage.Tx, mediaID, op string, size int64) error {
	details := map[string]any{"op": op}
	if size > 0 {
		details["size"] = size
	}
	return r.opts.Audit.Record(ctx, tx, auditapi.Entry{Action: auditapi.ActionMediaAdmin, Target: mediaID, Details: details})
}

// MediaInfo is what administrators see of a media item without unsealing
// anything.
type MediaInfo struct {
	ServerName  string `json:"server_name"`
	MediaID     string `json:"media_id"`
	UserID      string `json:"user_id,omitempty"`
	Size        int64  `json:"size"`
	CreatedTS   int64  `json:"created_ts"`
	UploadedTS  int64  `json:"uploaded_ts,omitempty"` // 0: created but not uploaded yet
	Quarantined bool   `json:"quarantined"`
}

// ListUserMedia lists a user's media, newest first.
func (r *Repo) ListUserMedia(ctx context.Context, userID string) ([]MediaInfo, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT origin, media_id, user_id, size, created_ts, uploaded_ts, quarantined_ts FROM media
		WHERE user_id = $1 ORDER BY created_ts DESC, media_id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MediaInfo
	for rows.Next() {
		var m MediaInfo
		var q int64
		if err := rows.Scan(&m.ServerName, &m.MediaID, &m.UserID, &m.Size, &m.CreatedTS, &m.UploadedTS, &q); err != nil {
			return nil, err
		}
		m.Quarantined = q != 0
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteUserMedia deletes all of a user's media (e.g. on erasure) and
// returns how many items went.
func (r *Repo) DeleteUserMedia(ctx context.Context, userID string) (int, error) {
	items, err := r.ListUserMedia(ctx, userID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range items {
		if err := r.DeleteMedia(ctx, m.ServerName, m.MediaID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// UsedBytes is the media stored for a user, or for everyone with "".
func (r *Repo) UsedBytes(ctx context.Context, userID string) (int64, error) {
	return usedBytes(ctx, r.db, userID)
}
