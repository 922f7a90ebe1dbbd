package mediaapi

import (
	"context"
	"database/sql"
	"errors"

	"enclave/storage"
)

// mediaRow is one row of media. A row with UploadedTS 0 is a pending
// upload made by /create: it has no blob, key or meta yet.
type mediaRow struct {
	Origin, MediaID, UserID string
	CreatedTS, ExpiresTS    int64
	UploadedTS              int64
	BlobID                  string
	Size                    int64
	KEKID                   string
	WrappedKey, Meta        []byte
	QuarantinedTS           int64
}

const mediaCols = `origin, media_id, user_id, created_ts, expires_ts, uploaded_ts, blob_id, size, kek_id, wrapped_key, meta, quarantined_ts`

func scanMedia(sc interface{ Scan(...any) error }) (*mediaRow, error) {
	var m mediaRow
	var blob, kek sql.NullString
	if err := sc.Scan(&m.Origin, &m.MediaID, &m.UserID, &m.CreatedTS, &m.ExpiresTS, &m.UploadedTS, &blob, &m.Size, &kek, &m.WrappedKey, &m.Meta, &m.QuarantinedTS); err != nil {
		return nil, err
	}
	m.BlobID, m.KEKID = blob.String, kek.String
	return &m, nil
}

func selectMedia(ctx context.Context, q storage.Querier, origin, mediaID string) (*mediaRow, error) {
	m, err := scanMedia(q.QueryRowContext(ctx, `SELECT `+mediaCols+` FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	return m, err
}

func insertMedia(ctx context.Context, q storage.Querier, m *mediaRow) error {
	_, err := q.ExecContext(ctx, `INSERT INTO media (`+mediaCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		m.Origin, m.MediaID, m.UserID, m.CreatedTS, m.ExpiresTS, m.UploadedTS, storage.NullString(m.BlobID), m.Size,
		storage.NullString(m.KEKID), m.WrappedKey, m.Meta, m.QuarantinedTS)
	return err
}

// completePending fills in a pending upload; it reports false if the row
// is no longer pending (uploaded meanwhile) or not the user's.
func completePending(ctx context.Context, q storage.Querier, m *mediaRow) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE media SET uploaded_ts = $1, blob_id = $2, size = $3, kek_id = $4, wrapped_key = $5, meta = $6
		WHERE origin = $7 AND media_id = $8 AND user_id = $9 AND uploaded_ts = 0`,
		m.UploadedTS, m.BlobID, m.Size, m.KEKID, m.WrappedKey, m.Meta, m.Origin, m.MediaID, m.UserID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// usedBytes sums stored media, for one user or (userID "") everyone.
func usedBytes(ctx context.Context, q storage.Querier, userID string) (int64, error) {
	var n sql.NullInt64
	var err error
	if userID == "" {
		err = q.QueryRowContext(ctx, `SELECT SUM(size) FROM media`).Scan(&n)
	} else {
		err = q.QueryRowContext(ctx, `SELECT SUM(size) FROM media WHERE user_id = $1`, userID).Scan(&n)
	}
	return n.Int64, err
}

func countPending(ctx context.Context, q storage.Querier, userID string, now int64) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND uploaded_ts = 0 AND expires_ts > $2`, userID, now).Scan(&n)
	return n, err
}

func deleteExpiredPending(ctx context.Context, q storage.Querier, userID string, now int64) error {
	_, err := q.ExecContext(ctx, `DELETE FROM media WHERE user_id = $1 AND uploaded_ts = 0 AND expires_ts <= $2`, userID, now)
	return err
}

// thumbRow is a cached, sealed thumbnail, keyed by the size and method the
// client asked for (never by anything derived from the image).
type thumbRow struct {
	Origin, MediaID string
	Width, Height   int
	Method          string
	BlobID          string
	Size            int64
	KEKID           string
	WrappedKey      []byte
	Meta            []byte
	CreatedTS       int64
}

func selectThumb(ctx context.Context, q storage.Querier, origin, mediaID string, w, h int, method string) (*thumbRow, error) {
	t := thumbRow{Origin: origin, MediaID: mediaID, Width: w, Height: h, Method: method}
	err := q.QueryRowContext(ctx, `SELECT blob_id, size, kek_id, wrapped_key, meta, created_ts FROM media_thumbnails
		WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`, origin, mediaID, w, h, method).
		Scan(&t.BlobID, &t.Size, &t.KEKID, &t.WrappedKey, &t.Meta, &t.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func countThumbs(ctx context.Context, q storage.Querier, origin, mediaID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID).Scan(&n)
	return n, err
}

func insertThumb(ctx context.Context, q storage.Querier, t *thumbRow) error {
	_, err := q.ExecContext(ctx, `INSERT INTO media_thumbnails (origin, media_id, width, height, method, blob_id, size, kek_id, wrapped_key, meta, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		t.Origin, t.MediaID, t.Width, t.Height, t.Method, t.BlobID, t.Size, t.KEKID, t.WrappedKey, t.Meta, t.CreatedTS)
	return err
}

func thumbSizes(ctx context.Context, q storage.Querier, origin, mediaID string) ([]thumbSpec, error) {
	rows, err := q.QueryContext(ctx, `SELECT width, height, method FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []thumbSpec
	for rows.Next() {
		var s thumbSpec
		if err := rows.Scan(&s.W, &s.H, &s.Method); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func thumbBlobIDs(ctx context.Context, q storage.Querier, origin, mediaID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT blob_id FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// canary is the store's record of which KEK seals its media.
type canary struct {
	KEKID  string
	Sealed []byte
}

func selectCanary(ctx context.Context, q storage.Querier) (*canary, error) {
	var c canary
	err := q.QueryRowContext(ctx, `SELECT kek_id, canary FROM media_kek WHERE id = 1`).Scan(&c.KEKID, &c.Sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// lockKEK takes the canary row's lock inside a write transaction and
// checks the store is still sealed under kekID. Every write of wrapped keys
// (and the quota checks beside them) runs under this lock, so writes and
// `enclave keys rotate` serialise: nothing is ever wrapped under a key the
// rotation already retired.
func lockKEK(ctx context.Context, tx *storage.Tx, kekID string) error {
	res, err := tx.ExecContext(ctx, `UPDATE media_kek SET kek_id = kek_id WHERE id = 1 AND kek_id = $1`, kekID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return errKeyChanged
	}
	return nil
}

var errKeyChanged = errors.New("media: the store's key-encryption key was rotated while this server was running; restart it with the new key")

func countSealedObjects(ctx context.Context, q storage.Querier) (int64, error) {
	var a, b int64
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE wrapped_key IS NOT NULL`).Scan(&a); err != nil {
		return 0, err
	}
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM media_thumbnails`).Scan(&b); err != nil {
		return 0, err
	}
	return a + b, nil
}
