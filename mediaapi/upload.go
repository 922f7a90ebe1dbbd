package mediaapi

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/storage"
)

const (
	pendingLifetime   = 24 * time.Hour // unused_expires_at of /create
	maxPendingPerUser = 10
	maxFileNameBytes  = 255
)

// errQuota is an upload refused by media.max_user_bytes / max_total_bytes.
var errQuota = errors.New("media quota exceeded")

// authenticate answers the request itself when it carries no valid token.
func (r *Repo) authenticate(w http.ResponseWriter, req *http.Request) (*httpapi.Device, bool) {
	dev, resp, ok := r.api.Authenticate(req)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return nil, false
	}
	return dev, true
}

// POST /_matrix/media/v3/upload
func (r *Repo) upload(w http.ResponseWriter, req *http.Request) {
	dev, ok := r.authenticate(w, req)
	if !ok {
		return
	}
	if resp, ok := r.precheck(req, dev.UserID); !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	blob, resp, ok := r.receive(req)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	row, err := r.sealRow(blob, uploadMeta(req, blob.SHA256))
	if err != nil {
		r.blobs.remove(blob.BlobID)
		httpapi.WriteResponse(w, httpapi.InternalError(req, err))
		return
	}
	now := time.Now().UnixMilli()
	row.Origin, row.MediaID, row.UserID, row.CreatedTS, row.UploadedTS = r.opts.ServerName, newMediaID(), dev.UserID, now, now
	err = r.db.WithTx(req.Context(), func(tx *storage.Tx) error {
		if err := r.reserve(req.Context(), tx, dev.UserID, blob.Size); err != nil {
			return err
		}
		if err := insertMedia(req.Context(), tx, row); err != nil {
			return err
		}
		return r.recordUpload(req.Context(), tx, dev.UserID, row.MediaID, blob)
	})
	if err != nil {
		r.blobs.remove(blob.BlobID)
		httpapi.WriteResponse(w, r.storeError(req, err))
		return
	}
	r.bytes.WithLabelValues("stored").Add(float64(blob.Size))
	httpapi.WriteResponse(w, httpapi.JSON(http.StatusOK, map[string]string{"content_uri": mxc(row.Origin, row.MediaID)}))
}

// POST /_matrix/media/v1/create
func (r *Repo) create(req *http.Request, dev *httpapi.Device) httpapi.Response {
	ctx := req.Context()
	now := time.Now()
	row := &mediaRow{Origin: r.opts.ServerName, MediaID: newMediaID(), UserID: dev.UserID, CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(pendingLifetime).UnixMilli()}
	err := r.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := deleteExpiredPending(ctx, tx, dev.UserID, now.UnixMilli()); err != nil {
			return err
		}
		n, err := countPending(ctx, tx, dev.UserID, now.UnixMilli())
		if err != nil {
			return err
		}
		if n >= maxPendingPerUser {
			return errTooManyPending
		}
		return insertMedia(ctx, tx, row)
	})
	if errors.Is(err, errTooManyPending) {
		return httpapi.Response{Code: http.StatusTooManyRequests, Body: &httpapi.MatrixError{ErrCode: "M_LIMIT_EXCEEDED", Err: "too many pending uploads; upload to the media IDs already created first", RetryAfterMs: 60_000}}
	}
	if err != nil {
		return httpapi.InternalError(req, err)
	}
	return httpapi.JSON(http.StatusOK, map[string]any{"content_uri": mxc(row.Origin, row.MediaID), "unused_expires_at": row.ExpiresTS})
}

var errTooManyPending = errors.New("too many pending uploads")

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
func (r *Repo) uploadTo(w http.ResponseWriter, req *http.Request) {
	dev, ok := r.authenticate(w, req)
	if !ok {
		return
	}
	v := httpapi.Vars(req)
	origin, mediaID := v["serverName"], v["mediaId"]
	if origin != r.opts.ServerName || !mediaIDPattern.MatchString(mediaID) {
		httpapi.WriteResponse(w, httpapi.NotFound("unknown media ID"))
		return
	}
	existing, err := selectMedia(req.Context(), r.db, origin, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		httpapi.WriteResponse(w, httpapi.NotFound("unknown media ID"))
		return
	}
	if err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(req, err))
		return
	}
	if resp, ok := checkPendingFor(existing, dev.UserID); !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	if resp, ok := r.precheck(req, dev.UserID); !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	blob, resp, ok := r.receive(req)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	row, err := r.sealRow(blob, uploadMeta(req, blob.SHA256))
	if err != nil {
		r.blobs.remove(blob.BlobID)
		httpapi.WriteResponse(w, httpapi.InternalError(req, err))
		return
	}
	row.Origin, row.MediaID, row.UserID, row.UploadedTS = origin, mediaID, dev.UserID, time.Now().UnixMilli()
	var updated bool
	err = r.db.WithTx(req.Context(), func(tx *storage.Tx) error {
		if err := r.reserve(req.Context(), tx, dev.UserID, blob.Size); err != nil {
			return err
		}
		if updated, err = completePending(req.Context(), tx, row); err != nil || !updated {
			return err
		}
		return r.recordUpload(req.Context(), tx, dev.UserID, mediaID, blob)
	})
	if err == nil && !updated {
		err = errOverwrite
	}
	if err != nil {
		r.blobs.remove(blob.BlobID)
		httpapi.WriteResponse(w, r.storeError(req, err))
		return
	}
	r.bytes.WithLabelValues("stored").Add(float64(blob.Size))
	r.waiters.wake(mediaKey(origin, mediaID))
	httpapi.WriteResponse(w, httpapi.JSON(http.StatusOK, map[string]any{}))
}

var errOverwrite = errors.New("media already uploaded")

// recordUpload writes an upload's audit entry in the transaction that
// stores the media row, so an upload that cannot be recorded fails: size
// and the plaintext's SHA-256, nothing sealed (name, content type).
// Reads (downloads, thumbnails, remote fetches) go through the audit hook.
func (r *Repo) recordUpload(ctx context.Context, tx *storage.Tx, user, mediaID string, b *sealedBlob) error {
	return r.opts.Audit.Record(ctx, tx, auditapi.Entry{Actor: auditapi.Actor{UserID: user}, Action: auditapi.ActionMediaUpload, Target: mediaID,
		Details: map[string]any{"size": b.Size, "sha256": b.SHA256}})
}

// checkPendingFor says whether user may upload into the pending row m.
func checkPendingFor(m *mediaRow, user string) (httpapi.Response, bool) {
	switch {
	case m.UserID != user:
		return httpapi.Forbidden("this media ID was created by another user"), false
	case m.UploadedTS != 0:
		return httpapi.Errf(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded"), false
	case m.ExpiresTS <= time.Now().UnixMilli():
		return httpapi.NotFound("this media ID has expired"), false
	}
	return httpapi.Response{}, true
}

// precheck refuses, before reading a byte, an upload whose declared
// length is over the size limit or the quota.
func (r *Repo) precheck(req *http.Request, user string) (httpapi.Response, bool) {
	if req.ContentLength > r.opts.MaxUploadBytes {
		return tooLarge(r.opts.MaxUploadBytes), false
	}
	if req.ContentLength > 0 && (r.opts.MaxUserBytes > 0 || r.opts.MaxTotalBytes > 0) {
		if err := r.checkQuota(req.Context(), r.db, user, req.ContentLength); err != nil {
			return r.storeError(req, err), false
		}
	}
	return httpapi.Response{}, true
}

func tooLarge(limit int64) httpapi.Response {
	return httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "upload exceeds the %d byte limit", limit)
}

// receive streams the request body into a sealed blob.
func (r *Repo) receive(req *http.Request) (*sealedBlob, httpapi.Response, bool) {
	blob, err := r.blobs.put(req.Body, r.opts.MaxUploadBytes)
	if errors.Is(err, errTooLarge) {
		return nil, tooLarge(r.opts.MaxUploadBytes), false
	}
	if err != nil {
		if req.Context().Err() != nil {
			return nil, httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "upload interrupted"), false
		}
		logrus.WithError(err).Warn("media: upload failed")
		return nil, httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "could not read the upload"), false
	}
	return blob, httpapi.Response{}, true
}

// uploadMeta takes the content type (header) and file name (query) of an
// upload, normalised; both end up sealed.
func uploadMeta(req *http.Request, sha string) meta {
	m := meta{ContentType: normaliseContentType(req.Header.Get("Content-Type")), SHA256: sha}
	if fn := req.URL.Query().Get("filename"); fn != "" && utf8.ValidString(fn) {
		m.FileName = truncateUTF8(fn, maxFileNameBytes)
	}
	return m
}

func normaliseContentType(ct string) string {
	if ct == "" || len(ct) > 255 {
		return "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "application/octet-stream"
	}
	return mime.FormatMediaType(mt, params)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// sealRow wraps the blob's data key and seals its meta.
func (r *Repo) sealRow(b *sealedBlob, m meta) (*mediaRow, error) {
	wk, err := r.kek.Wrap(b.DataKey, b.BlobID)
	if err != nil {
		return nil, err
	}
	sm, err := sealMeta(b.DataKey, b.BlobID, m)
	if err != nil {
		return nil, err
	}
	return &mediaRow{BlobID: b.BlobID, Size: b.Size, KEKID: r.kek.ID(), WrappedKey: wk, Meta: sm}, nil
}

// reserve runs in the transaction that records a new object: it takes the
// KEK lock (which also serialises concurrent quota checks) and checks the
// quota with the object's real size.
func (r *Repo) reserve(ctx context.Context, tx *storage.Tx, user string, size int64) error {
	if err := lockKEK(ctx, tx, r.kek.ID()); err != nil {
		return err
	}
	return r.checkQuota(ctx, tx, user, size)
}

func (r *Repo) checkQuota(ctx context.Context, q storage.Querier, user string, size int64) error {
	if r.opts.MaxUserBytes > 0 && user != "" {
		used, err := usedBytes(ctx, q, user)
		if err != nil {
			return err
		}
		if used+size > r.opts.MaxUserBytes {
			return errQuota
		}
	}
	if r.opts.MaxTotalBytes > 0 {
		used, err := usedBytes(ctx, q, "")
		if err != nil {
			return err
		}
		if used+size > r.opts.MaxTotalBytes {
			return errQuota
		}
	}
	return nil
}

func (r *Repo) storeError(req *http.Request, err error) httpapi.Response {
	switch {
	case errors.Is(err, errQuota):
		return httpapi.Forbidden("media quota exceeded: delete media or ask an administrator")
	case errors.Is(err, errOverwrite):
		return httpapi.Errf(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")
	case errors.Is(err, errKeyChanged):
		logrus.Error(err.Error())
		return httpapi.Errf(http.StatusServiceUnavailable, "M_UNKNOWN", "media storage is being re-keyed; try again later")
	}
	return httpapi.InternalError(req, err)
}

// sanitizeFileName keeps a download file name to one harmless path element.
func sanitizeFileName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, s)
	return s
}
