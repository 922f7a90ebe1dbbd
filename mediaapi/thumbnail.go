package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"time"

	_ "image/gif" // decoders registered for image.Decode

	_ "golang.org/x/image/webp"

	"enclave/internal/httpapi"
	"enclave/storage"
)

const (
	maxThumbsPerMedia = 16    // cached sizes per media item; more are made but not kept
	maxThumbSide      = 10000 // requests beyond are clamped (no upscaling anyway)
	// maxThumbPixels bounds a thumbnail's area (about 2048×2048): larger
	// requests are scaled down to it, keeping their aspect ratio, so one
	// render's buffers stay in tens of megabytes.
	maxThumbPixels = 1 << 22
	jpegQuality    = 85
)

var (
	errNotImage      = errors.New("media: cannot thumbnail this content")
	errImageTooLarge = errors.New("media: image too large to thumbnail")
)

type thumbSpec struct {
	W, H   int
	Method string // "crop" or "scale"
}

func parseThumbSpec(req *http.Request) (thumbSpec, httpapi.Response, bool) {
	q := req.URL.Query()
	var s thumbSpec
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &s.W}, {"height", &s.H}} {
		v := q.Get(p.name)
		if v == "" {
			return s, httpapi.MissingParam("%s is required", p.name), false
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return s, httpapi.InvalidParam("%s must be a positive integer", p.name), false
		}
		*p.dst = min(n, maxThumbSide)
	}
	if a := int64(s.W) * int64(s.H); a > maxThumbPixels {
		f := math.Sqrt(float64(maxThumbPixels) / float64(a))
		s.W, s.H = max(1, int(float64(s.W)*f)), max(1, int(float64(s.H)*f))
	}
	switch m := q.Get("method"); m {
	case "", "scale":
		s.Method = "scale"
	case "crop":
		s.Method = "crop"
	default:
		return s, httpapi.InvalidParam("method must be crop or scale"), false
	}
	return s, httpapi.Response{}, true
}

// GET …/thumbnail/{serverName}/{mediaId}?width=&height=&method=
func (r *Repo) thumbnail(authed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		user, ok := r.reader(w, req, authed)
		if !ok {
			return
		}
		v := httpapi.Vars(req)
		r.serveThumbnail(w, req, v["serverName"], v["mediaId"], user, authed)
	}
}

// serveThumbnail answers a thumbnail of one media item, sized by the
// request's width, height and method, and records it for user.
func (r *Repo) serveThumbnail(w http.ResponseWriter, req *http.Request, origin, mediaID, user string, authed bool) {
	spec, resp, ok := parseThumbSpec(req)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	obj, resp, ok := r.openMedia(req, origin, mediaID, authed)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	defer obj.Close()
	if r.serveCachedThumb(w, req, obj, spec, user) {
		return
	}
	// Once a media item has its fill of cached sizes, further sizes get
	// the nearest cached one instead of a fresh decode each time (the
	// legacy endpoint is unauthenticated: no CPU for the asking).
	if alt, ok := r.nearestCachedThumb(req.Context(), obj, spec); ok && r.serveCachedThumb(w, req, obj, alt, user) {
		return
	}
	data, ct, err := r.makeThumb(req.Context(), obj, spec)
	switch {
	case errors.Is(err, errNotImage):
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "cannot generate thumbnails for the requested content"))
		return
	case errors.Is(err, errImageTooLarge):
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "content is too large to thumbnail"))
		return
	case errors.Is(err, errCachedMeanwhile):
		if r.serveCachedThumb(w, req, obj, spec, user) {
			return
		}
		httpapi.WriteResponse(w, httpapi.InternalError(req, err))
		return
	case err != nil:
		if req.Context().Err() == nil {
			httpapi.WriteResponse(w, httpapi.InternalError(req, err))
		}
		return
	}
	r.emit(req.Context(), user, obj.row.MediaID, obj.row.Size, obj.meta.SHA256, "thumbnail")
	r.writeThumb(w, req, ct, time.Now(), bytes.NewReader(data))
}

func (r *Repo) writeThumb(w http.ResponseWriter, req *http.Request, ct string, mod time.Time, body io.ReadSeeker) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", ct)
	name := "thumbnail.png"
	if ct == "image/jpeg" {
		name = "thumbnail.jpg"
	}
	h.Set("Content-Disposition", `inline; filename="`+name+`"`)
	r.serveContent(w, req, mod, body)
}

// serveCachedThumb serves a cached thumbnail, reporting false on a miss.
func (r *Repo) serveCachedThumb(w http.ResponseWriter, req *http.Request, obj *object, spec thumbSpec, user string) bool {
	t, err := selectThumb(req.Context(), r.db, obj.row.Origin, obj.row.MediaID, spec.W, spec.H, spec.Method)
	if err != nil {
		return false
	}
	key, err := r.kek.Unwrap(t.WrappedKey, t.BlobID)
	if err != nil {
		return false
	}
	m, err := openMeta(key, t.BlobID, t.Meta)
	if err != nil {
		return false
	}
	sr, f, err := r.blobs.open(t.BlobID, key)
	if err != nil {
		return false
	}
	defer f.Close()
	if sr.Size() != t.Size {
		return false
	}
	r.emit(req.Context(), user, obj.row.MediaID, obj.row.Size, obj.meta.SHA256, "thumbnail")
	r.writeThumb(w, req, m.ContentType, time.UnixMilli(t.CreatedTS), sr)
	return true
}

// nearestCachedThumb picks, when the media's thumbnail cache is full, the
// cached size best standing in for spec: the smallest of the same method
// that is at least as large, else the largest of that method, else the
// largest of any.
func (r *Repo) nearestCachedThumb(ctx context.Context, obj *object, spec thumbSpec) (thumbSpec, bool) {
	sizes, err := thumbSizes(ctx, r.db, obj.row.Origin, obj.row.MediaID)
	if err != nil || len(sizes) < maxThumbsPerMedia {
		return thumbSpec{}, false
	}
	area := func(s thumbSpec) int { return s.W * s.H }
	var best thumbSpec
	rank := func(s thumbSpec) int {
		switch {
		case s.Method == spec.Method && s.W >= spec.W && s.H >= spec.H:
			return 3
		case s.Method == spec.Method:
			return 2
		}
		return 1
	}
	for _, s := range sizes {
		switch rb, rs := rank(best), rank(s); {
		case best.W == 0, rs > rb:
			best = s
		case rs == rb && rs == 3 && area(s) < area(best):
			best = s
		case rs == rb && rs < 3 && area(s) > area(best):
			best = s
		}
	}
	return best, true
}

var errCachedMeanwhile = errors.New("media: thumbnail cached meanwhile")

// makeThumb generates a thumbnail and caches it sealed. Requests for one
// media item take turns on its shared decode (decode.go); the first
// decodes, within the decode budget, and the rest render from its image.
// At most cap(thumbSem) decodes or renders run at once (CPU).
func (r *Repo) makeThumb(ctx context.Context, obj *object, spec thumbSpec) ([]byte, string, error) {
	key := mediaKey(obj.row.Origin, obj.row.MediaID)
	e := r.sources.acquire(key)
	defer r.sources.release(key, e)
	if _, err := selectThumb(ctx, r.db, obj.row.Origin, obj.row.MediaID, spec.W, spec.H, spec.Method); err == nil {
		return nil, "", errCachedMeanwhile
	}
	if e.err != nil {
		return nil, "", e.err
	}
	select {
	case r.thumbSem <- struct{}{}:
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	defer func() { <-r.thumbSem }()
	if e.src == nil {
		if err := r.decodeInto(ctx, e, obj.r); err != nil {
			return nil, "", err
		}
	}
	data, ct, w, h, err := render(e.src, spec)
	if e.cost >= freeOSAfter {
		// A render of a large image leaves tens of MB of buffers; with
		// the decoded image live, the heap would otherwise grow to twice
		// that before the next collection.
		runtime.GC()
	}
	if err != nil {
		return nil, "", err
	}
	r.storeThumb(ctx, obj, spec, data, meta{ContentType: ct, Width: w, Height: h})
	return data, ct, nil
}

// decodeInto decodes src into e within the decode budget; a refusal or a
// broken image is kept for the requests waiting on e.
func (r *Repo) decodeInto(ctx context.Context, e *sourceEntry, src io.ReadSeeker) error {
	p, err := probe(src, r.opts.MaxImagePixels, r.sources.budget.total)
	if err != nil {
		if errors.Is(err, errNotImage) || errors.Is(err, errImageTooLarge) {
			e.err = err
		}
		return err
	}
	if err := r.sources.budget.acquire(ctx, p.cost); err != nil {
		return err
	}
	e.cost = p.cost // released with the entry, once nobody renders from it
	s, err := decode(src, p)
	if err != nil {
		e.err = err
		return err
	}
	e.src = s
	return nil
}

// storeThumb caches a thumbnail; failures only cost a regeneration later.
func (r *Repo) storeThumb(ctx context.Context, obj *object, spec thumbSpec, data []byte, m meta) {
	blob, err := r.blobs.put(bytes.NewReader(data), 0)
	if err != nil {
		return
	}
	m.SHA256 = blob.SHA256
	wk, err := r.kek.Wrap(blob.DataKey, blob.BlobID)
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return
	}
	sm, err := sealMeta(blob.DataKey, blob.BlobID, m)
	if err != nil {
		r.blobs.remove(blob.BlobID)
		return
	}
	t := &thumbRow{Origin: obj.row.Origin, MediaID: obj.row.MediaID, Width: spec.W, Height: spec.H, Method: spec.Method,
		BlobID: blob.BlobID, Size: blob.Size, KEKID: r.kek.ID(), WrappedKey: wk, Meta: sm, CreatedTS: time.Now().UnixMilli()}
	errFull := errors.New("thumbnail cache full for this media")
	err = r.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := lockKEK(ctx, tx, r.kek.ID()); err != nil {
			return err
		}
		// The media may have been deleted while we worked.
		if _, err := selectMedia(ctx, tx, obj.row.Origin, obj.row.MediaID); err != nil {
			return err
		}
		if n, err := countThumbs(ctx, tx, obj.row.Origin, obj.row.MediaID); err != nil {
			return err
		} else if n >= maxThumbsPerMedia {
			return errFull
		}
		return insertThumb(ctx, tx, t)
	})
	if err != nil {
		r.blobs.remove(blob.BlobID)
	}
}

// renderThumb decodes src (JPEG, PNG, GIF or WebP, after checking the
// declared dimensions against maxPixels and its decode cost against
// 4 bytes a pixel) and renders the thumbnail.
func renderThumb(src io.ReadSeeker, spec thumbSpec, maxPixels int64) (data []byte, contentType string, w, h int, err error) {
	p, err := probe(src, maxPixels, 4*maxPixels)
	if err != nil {
		return nil, "", 0, 0, err
	}
	s, err := decode(src, p)
	if err != nil {
		return nil, "", 0, 0, err
	}
	return render(s, spec)
}

// render makes the thumbnail of a decoded image: JPEG for JPEG sources,
// PNG (keeping transparency) otherwise. Only the first frame of an
// animation is used (animated thumbnails are not offered).
func render(s *source, spec thumbSpec) (data []byte, contentType string, w, h int, err error) {
	img, o := s.img, s.orient
	// Geometry is worked out on the image as displayed (EXIF orientation
	// applied); the scaling runs on the stored pixels and only the small
	// result is turned.
	b := img.Bounds()
	dw, dh := orientedSize(b.Dx(), b.Dy(), o)
	w, h, crop := thumbGeometry(dw, dh, spec)
	rw, rh := orientedSize(w, h, o)
	dst := orient(resize(img, storedRect(crop, b.Dx(), b.Dy(), o).Add(b.Min), rw, rh), o)
	var buf bytes.Buffer
	if s.format == "jpeg" {
		contentType = "image/jpeg"
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: jpegQuality})
	} else {
		contentType = "image/png"
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, dst)
	}
	if err != nil {
		return nil, "", 0, 0, err
	}
	return buf.Bytes(), contentType, w, h, nil
}

// thumbGeometry picks the output size and the source region to scale.
//
//   - scale: the largest size with the source's aspect ratio that fits the
//     requested box (the client letterboxes);
//   - crop: exactly the requested size, from the largest centred region of
//     the source with the requested aspect ratio.
//
// Never upscaled: a source smaller than asked keeps its own size (for crop,
// the centred region at its own size).
func thumbGeometry(sw, sh int, s thumbSpec) (w, h int, crop image.Rectangle) {
	if s.Method == "crop" {
		cw, ch := sw, sh
		if int64(sw)*int64(s.H) > int64(sh)*int64(s.W) {
			cw = max(1, int((int64(sh)*int64(s.W)+int64(s.H)/2)/int64(s.H)))
		} else {
			ch = max(1, int((int64(sw)*int64(s.H)+int64(s.W)/2)/int64(s.W)))
		}
		x0, y0 := (sw-cw)/2, (sh-ch)/2
		crop = image.Rect(x0, y0, x0+cw, y0+ch)
		if cw >= s.W && ch >= s.H {
			return s.W, s.H, crop
		}
		return cw, ch, crop
	}
	crop = image.Rect(0, 0, sw, sh)
	if sw <= s.W && sh <= s.H {
		return sw, sh, crop
	}
	if int64(sw)*int64(s.H) > int64(sh)*int64(s.W) {
		return s.W, max(1, int((int64(sh)*int64(s.W)+int64(sw)/2)/int64(sw))), crop
	}
	return max(1, int((int64(sw)*int64(s.H)+int64(sh)/2)/int64(sh))), s.H, crop
}
