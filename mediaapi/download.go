package mediaapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/sealing"
	"enclave/storage"
)

const (
	defaultWait = 20 * time.Second // timeout_ms default (spec)
	maxWait     = 60 * time.Second
)

// inlineTypes are the content types the spec lets servers serve inline;
// everything else is sent as an attachment so a browser never renders
// uploaded HTML or SVG in the homeserver's origin.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// contentDisposition is inline for safe types and attachment otherwise,
// with the file name (RFC 6266/2231 encoded when not plain ASCII).
func contentDisposition(contentType, fileName string) string {
	disp := "attachment"
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && inlineTypes[strings.ToLower(mt)] {
		disp = "inline"
	}
	if fileName == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": sanitizeFileName(fileName)}); v != "" {
		return v
	}
	return disp
}

// securityHeaders are sent with every media response (spec: content
// repository).
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "private, max-age=86400")
}

// object is an opened media object ready to stream.
type object struct {
	row  *mediaRow
	meta meta
	r    *sealing.Reader
	f    io.Closer
	key  []byte
}

func (o *object) Close() { o.f.Close() }

// GET …/download/{serverName}/{mediaId}[/{fileName}]
func (r *Repo) download(authed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		user, ok := r.reader(w, req, authed)
		if !ok {
			return
		}
		v := httpapi.Vars(req)
		r.serveDownload(w, req, v["serverName"], v["mediaId"], v["fileName"], user, authed)
	}
}

// reader admits a media read: with authed, the device's user (the
// authorizer has put the whole actor in req's context); otherwise, when
// media.legacy_unauthenticated allows token-less reads at all, the anonymous
// requester's IP and user agent, so that its audit entry names where the
// read came from. Off, the legacy paths answer 404 M_NOT_FOUND, as the
// spec allows since v1.11 for servers that serve media only to
// authenticated clients.
func (r *Repo) reader(w http.ResponseWriter, req *http.Request, authed bool) (user string, ok bool) {
	if authed {
		dev, ok := r.authenticate(w, req)
		if !ok {
			return "", false
		}
		return dev.UserID, true
	}
	if !r.opts.LegacyUnauthenticated {
		httpapi.WriteResponse(w, httpapi.NotFound("unauthenticated media is disabled: use /_matrix/client/v1/media"))
		return "", false
	}
	attachRequester(req)
	return "", true
}

// attachRequester puts req's peer address and user agent into its context
// for the audit entry of a read that has no authenticated actor (legacy
// paths, federation), unless an actor is already there.
func attachRequester(req *http.Request) {
	if _, ok := auditapi.ActorFrom(req.Context()); ok {
		return
	}
	ip := req.RemoteAddr
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	*req = *req.WithContext(auditapi.WithActor(req.Context(), auditapi.Actor{IP: ip, UserAgent: req.UserAgent()}))
}

// serveDownload streams one media item (fileName, if set, overrides the
// stored name) and records the download for user ("" when anonymous).
func (r *Repo) serveDownload(w http.ResponseWriter, req *http.Request, origin, mediaID, fileName, user string, authed bool) {
	obj, resp, ok := r.openMedia(req, origin, mediaID, authed)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	defer obj.Close()
	if fileName == "" {
		fileName = obj.meta.FileName
	}
	ct := obj.meta.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", ct)
	h.Set("Content-Disposition", contentDisposition(ct, fileName))
	r.emit(req.Context(), user, obj.row.MediaID, obj.row.Size, obj.meta.SHA256, "download")
	r.serveContent(w, req, time.UnixMilli(obj.row.UploadedTS), obj.r)
}

// openMedia finds media (fetching remote media through the federation
// fetcher, waiting for a pending upload up to timeout_ms) and opens its
// sealed blob. On failure resp is the spec's error.
func (r *Repo) openMedia(req *http.Request, origin, mediaID string, authed bool) (*object, httpapi.Response, bool) {
	ctx := req.Context()
	if !serverNamePattern.MatchString(origin) || !mediaIDPattern.MatchString(mediaID) {
		return nil, httpapi.NotFound("media not found"), false
	}
	var row *mediaRow
	var err error
	if origin == r.opts.ServerName {
		row, err = r.waitForUpload(ctx, origin, mediaID, waitTimeout(req))
	} else {
		if !authed && req.URL.Query().Get("allow_remote") == "false" {
			return nil, httpapi.NotFound("remote media not fetched (allow_remote=false)"), false
		}
		row, err = r.remoteMedia(ctx, origin, mediaID)
	}
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, ErrRemoteNotFound):
		return nil, httpapi.NotFound("media not found"), false
	case errors.Is(err, errNotYetUploaded):
		return nil, httpapi.Errf(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "content has not yet been uploaded"), false
	case errors.Is(err, errTooLarge):
		return nil, httpapi.Errf(http.StatusBadGateway, "M_TOO_LARGE", "remote content is too large"), false
	case errors.Is(err, errRemoteFailed):
		return nil, httpapi.Errf(http.StatusBadGateway, "M_UNKNOWN", "could not fetch remote media"), false
	case err != nil:
		return nil, httpapi.InternalError(req, err), false
	}
	if row.QuarantinedTS != 0 {
		return nil, httpapi.NotFound("media not found"), false
	}
	obj, err := r.openRow(row)
	if err != nil {
		return nil, httpapi.InternalError(req, err), false
	}
	return obj, httpapi.Response{}, true
}

func (r *Repo) openRow(row *mediaRow) (*object, error) {
	key, err := r.kek.Unwrap(row.WrappedKey, row.BlobID)
	if err != nil {
		return nil, errors.New("media " + row.Origin + "/" + row.MediaID + ": data key does not unwrap under key id " + r.kek.ID() + " (row sealed under " + row.KEKID + ")")
	}
	m, err := openMeta(key, row.BlobID, row.Meta)
	if err != nil {
		return nil, errors.New("media " + row.Origin + "/" + row.MediaID + ": sealed metadata does not open")
	}
	sr, f, err := r.blobs.open(row.BlobID, key)
	if err != nil {
		return nil, err
	}
	// Authenticate the first segment before any header goes out, so a
	// damaged blob is a clean 500 rather than a truncated 200.
	if _, err := sr.Read(make([]byte, 1)); err != nil && err != io.EOF {
		f.Close()
		return nil, err
	}
	if _, err := sr.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if sr.Size() != row.Size {
		f.Close()
		logrus.WithField("media_id", row.MediaID).Error("media: sealed blob size does not match its record")
		return nil, errors.New("media: blob size mismatch")
	}
	return &object{row: row, meta: m, r: sr, f: f, key: key}, nil
}

var errNotYetUploaded = errors.New("media not yet uploaded")

func waitTimeout(req *http.Request) time.Duration {
	d := defaultWait
	if s := req.URL.Query().Get("timeout_ms"); s != "" {
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms >= 0 {
			d = time.Duration(ms) * time.Millisecond
		}
	}
	return min(d, maxWait)
}

// waitForUpload returns the media row once it has content, waiting up to
// timeout for a pending upload.
func (r *Repo) waitForUpload(ctx context.Context, origin, mediaID string, timeout time.Duration) (*mediaRow, error) {
	deadline := time.Now().Add(timeout)
	for {
		key := mediaKey(origin, mediaID)
		ch := r.waiters.wait(key) // before the read, so an upload in between still wakes us
		row, err := selectMedia(ctx, r.db, origin, mediaID)
		if err != nil {
			return nil, err
		}
		if row.UploadedTS != 0 {
			return row, nil
		}
		if row.ExpiresTS <= time.Now().UnixMilli() {
			return nil, storage.ErrNotFound
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errNotYetUploaded
		}
		// Poll too, in case another process completed it.
		t := time.NewTimer(min(left, 2*time.Second))
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}
