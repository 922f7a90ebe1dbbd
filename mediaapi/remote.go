package mediaapi

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"enclave/storage"
)

var errRemoteFailed = errors.New("media: remote fetch failed")

// remoteMedia returns the cached copy of remote media, fetching and sealing
// it on first use. Without a RemoteFetcher (no federation yet) remote media
// is not found.
func (r *Repo) remoteMedia(ctx context.Context, origin, mediaID string) (*mediaRow, error) {
	row, err := selectMedia(ctx, r.db, origin, mediaID)
	if err == nil || !errors.Is(err, storage.ErrNotFound) {
		return row, err
	}
	h := r.remote.Load()
	if h == nil {
		return nil, storage.ErrNotFound
	}
	unlock := r.fetchMu.lock(mediaKey(origin, mediaID))
	defer unlock()
	// Someone else may have fetched it while we waited for the lock.
	if row, err := selectMedia(ctx, r.db, origin, mediaID); err == nil || !errors.Is(err, storage.ErrNotFound) {
		return row, err
	}
	rm, err := h.f.FetchMedia(ctx, origin, mediaID)
	if errors.Is(err, ErrRemoteNotFound) {
		return nil, err
	}
	if err != nil {
		logrus.WithError(err).WithField("origin", origin).Warn("media: remote fetch failed")
		return nil, errRemoteFailed
	}
	defer rm.Body.Close()
	blob, err := r.blobs.put(rm.Body, r.opts.MaxUploadBytes)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, err
		}
		logrus.WithError(err).WithField("origin", origin).Warn("media: remote fetch failed")
		return nil, errRemoteFailed
	}
	m := meta{ContentType: normaliseContentType(rm.ContentType), SHA256: blob.SHA256}
	if utf8.ValidString(rm.FileName) {
		m.FileName = truncateUTF8(rm.FileName, maxFileNameBytes)
	}
	row, err = r.sealRow(blob, m)
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return nil, err
	}
	now := time.Now().UnixMilli()
	row.Origin, row.MediaID, row.CreatedTS, row.UploadedTS = origin, mediaID, now, now
	err = r.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := r.reserve(ctx, tx, "", blob.Size); err != nil {
			return err
		}
		return insertMedia(ctx, tx, row)
	})
	if err != nil {
		r.blobs.remove(blob.BlobID)
		if storage.IsUniqueViolation(err) { // another process cached it first
			return selectMedia(ctx, r.db, origin, mediaID)
		}
		if errors.Is(err, errQuota) {
			return nil, errTooLarge
		}
		return nil, err
	}
	r.emit(ctx, "", mediaID, blob.Size, blob.SHA256, "remote_fetch")
	return row, nil
}
