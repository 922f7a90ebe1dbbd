package mediaapi

import (
	"context"
	"io"
	"time"
	"unicode/utf8"

	"enclave/storage"
)

// ImportedMedia is a file an import stored.
type ImportedMedia struct {
	URI    string // mxc://…
	Size   int64
	SHA256 string
}

// Import stores a file carried by another platform's export as user's
// upload, sealed like every upload, streaming from src (size limit as for
// uploads; the per-user quota does not apply to history the operator
// brings in). inTx runs in the transaction that records the media row, so
// the importer's record of the source file commits with it.
func (r *Repo) Import(ctx context.Context, user, fileName, contentType string, src io.Reader, inTx func(tx *storage.Tx, m ImportedMedia) error) (ImportedMedia, error) {
	blob, err := r.blobs.put(src, r.opts.MaxUploadBytes)
	if err != nil {
		return ImportedMedia{}, err
	}
	m := meta{ContentType: normaliseContentType(contentType), SHA256: blob.SHA256}
	if fileName != "" && utf8.ValidString(fileName) {
		m.FileName = truncateUTF8(fileName, maxFileNameBytes)
	}
	row, err := r.sealRow(blob, m)
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return ImportedMedia{}, err
	}
	now := time.Now().UnixMilli()
	row.Origin, row.MediaID, row.UserID, row.CreatedTS, row.UploadedTS = r.opts.ServerName, newMediaID(), user, now, now
	out := ImportedMedia{URI: mxc(row.Origin, row.MediaID), Size: blob.Size, SHA256: blob.SHA256}
	err = r.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := lockKEK(ctx, tx, r.kek.ID()); err != nil {
			return err
		}
		if err := insertMedia(ctx, tx, row); err != nil {
			return err
		}
		if err := r.recordUpload(ctx, tx, user, row.MediaID, blob); err != nil {
			return err
		}
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return ImportedMedia{}, err
	}
	return out, nil
}
