package mediaapi

import (
	"context"
	"errors"

	"enclave/storage"
)

// More administration entry points: one item's details, bulk deletion by
// age and size, the remote cache purge and per-user statistics (the
// Synapse media admin API). The store has no last-access time, so "before"
// is the time the item was stored here (uploaded, or fetched from its
// origin): an item is never kept alive by being read.

// MediaDetails is one item with what its sealed metadata holds.
type MediaDetails struct {
	MediaInfo
	ContentType string
	FileName    string
	SHA256      string
}

// MediaDetails returns an item with its content type, file name and hash,
// unsealing only its metadata (not the content).
func (r *Repo) MediaDetails(ctx context.Context, serverName, mediaID string) (*MediaDetails, error) {
	row, err := selectMedia(ctx, r.db, serverName, mediaID)
	if err != nil {
		return nil, err
	}
	d := &MediaDetails{MediaInfo: MediaInfo{ServerName: row.Origin, MediaID: row.MediaID, UserID: row.UserID, Size: row.Size,
		CreatedTS: row.CreatedTS, UploadedTS: row.UploadedTS, Quarantined: row.QuarantinedTS != 0}}
	if row.UploadedTS == 0 || row.BlobID == "" {
		return d, nil // pending: nothing sealed yet
	}
	key, err := r.kek.Unwrap(row.WrappedKey, row.BlobID)
	if err != nil {
		return nil, errors.New("media " + row.Origin + "/" + row.MediaID + ": data key does not unwrap under key id " + r.kek.ID())
	}
	m, err := openMeta(key, row.BlobID, row.Meta)
	if err != nil {
		return nil, errors.New("media " + row.Origin + "/" + row.MediaID + ": sealed metadata does not open")
	}
	d.ContentType, d.FileName, d.SHA256 = m.ContentType, m.FileName, m.SHA256
	return d, nil
}

// MediaFilter picks stored items for bulk deletion.
type MediaFilter struct {
	Origin   string // whose items: this server's name (local) or a remote one
	Remote   bool   // every origin but Origin instead (the remote cache)
	BeforeTS int64  // stored before this (ms)
	SizeGt   int64  // larger than this many bytes (0: any size)
	Keep     map[string]bool
}

// DeleteMatching deletes the uploaded items the filter picks, except those
// whose media ID is in Keep (profile pictures and room avatars, when the
// caller keeps them), and returns the IDs deleted. Each deletion is its
// own transaction with its audit entry, as DeleteMedia.
func (r *Repo) DeleteMatching(ctx context.Context, f MediaFilter) ([]string, error) {
	op := "="
	if f.Remote {
		op = "<>"
	}
	rows, err := r.db.QueryContext(ctx, `SELECT origin, media_id FROM media WHERE origin `+op+` $1 AND uploaded_ts > 0 AND created_ts < $2 AND size > $3
		ORDER BY created_ts, media_id`, f.Origin, f.BeforeTS, f.SizeGt)
	if err != nil {
		return nil, err
	}
	type item struct{ origin, id string }
	var items []item
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.origin, &it.id); err != nil {
			rows.Close()
			return nil, err
		}
		items = append(items, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	deleted := []string{}
	for _, it := range items {
		if f.Keep[it.id] {
			continue
		}
		if err := r.DeleteMedia(ctx, it.origin, it.id); errors.Is(err, storage.ErrNotFound) {
			continue // deleted meanwhile
		} else if err != nil {
			return deleted, err
		}
		deleted = append(deleted, it.id)
	}
	return deleted, nil
}

// UserMediaStat is how much one user has stored.
type UserMediaStat struct {
	UserID string
	Count  int
	Bytes  int64
}

// UserMediaStats sums stored local media per uploader, for items stored in
// [fromTS, untilTS) (untilTS 0: no upper bound).
func (r *Repo) UserMediaStats(ctx context.Context, fromTS, untilTS int64) ([]UserMediaStat, error) {
	query := `SELECT user_id, COUNT(*), COALESCE(SUM(size), 0) FROM media WHERE origin = $1 AND user_id <> '' AND created_ts >= $2`
	args := []any{r.opts.ServerName, fromTS}
	if untilTS > 0 {
		query += ` AND created_ts < $3`
		args = append(args, untilTS)
	}
	rows, err := r.db.QueryContext(ctx, query+` GROUP BY user_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserMediaStat
	for rows.Next() {
		var s UserMediaStat
		if err := rows.Scan(&s.UserID, &s.Count, &s.Bytes); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
