package mediaapi

import (
	"context"
	"encoding/binary"
	"image"
	"image/color"
	"io"
	"runtime/debug"
	"sync"
)

// Thumbnail decoding is where a small upload costs the most memory: a PNG
// of a few hundred KB may declare 7000×7000 pixels, which decode to
// 196 MB, and before the bounds below forty concurrent thumbnail sizes of
// one such image took the server from 58 MB to 1.5 GB. So:
//
//   - an image's header is read first (probe) and it is refused with 413
//     M_TOO_LARGE when it declares more than media.max_image_pixels or its
//     decode would need more than the decode budget;
//   - decodes reserve their estimated bytes from one budget (a semaphore
//     weighted by bytes, 4 bytes per allowed pixel), so concurrent decodes
//     of different media together stay within it;
//   - requests for one media item share one decoded image (sources): the
//     first decodes, the others render their sizes from it, and it is
//     dropped, its memory returned to the OS, when the last one is done;
//   - renders are bounded on their own (resize.go, parseThumbSpec).

// decodeBudget is a weighted semaphore over bytes of decoded images.
type decodeBudget struct {
	mu      sync.Mutex
	total   int64
	used    int64
	waiters []*budgetWaiter // FIFO, so a large decode is not starved
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newDecodeBudget(total int64) *decodeBudget { return &decodeBudget{total: total} }

// acquire reserves n bytes (at most the total), waiting for ctx.
func (b *decodeBudget) acquire(ctx context.Context, n int64) error {
	n = min(n, b.total)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.total {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready: // granted meanwhile: hand it back
			b.used -= n
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
		}
		b.grant()
		b.mu.Unlock()
		return ctx.Err()
	}
}

func (b *decodeBudget) release(n int64) {
	n = min(n, b.total)
	b.mu.Lock()
	b.used -= n
	b.grant()
	b.mu.Unlock()
}

// grant wakes waiters in order while they fit (b.mu held).
func (b *decodeBudget) grant() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.total {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}

// source is a decoded image ready to render thumbnails from.
type source struct {
	img    image.Image
	format string
	orient int // EXIF orientation (JPEG), 1 otherwise
}

// sourceEntry is one media item's shared decode: its mutex serialises the
// thumbnail work on that item, and the decoded image lives as long as
// someone holds or waits for the entry.
type sourceEntry struct {
	mu   sync.Mutex
	refs int
	src  *source
	err  error // the decode's failure, shared with the waiters
	cost int64 // bytes reserved from the budget for src
}

// sources single-flights decodes per media item.
type sources struct {
	mu     sync.Mutex
	m      map[string]*sourceEntry
	budget *decodeBudget
}

// freeOSAfter is the decode size from which the memory is handed back to
// the OS at once, rather than kept by the Go heap for reuse.
const freeOSAfter = 16 << 20

// acquire returns key's entry, locked; release it with release.
func (s *sources) acquire(key string) *sourceEntry {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]*sourceEntry{}
	}
	e := s.m[key]
	if e == nil {
		e = &sourceEntry{}
		s.m[key] = e
	}
	e.refs++
	s.mu.Unlock()
	e.mu.Lock()
	return e
}

func (s *sources) release(key string, e *sourceEntry) {
	e.mu.Unlock()
	s.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last {
		delete(s.m, key)
	}
	s.mu.Unlock()
	if last && e.cost > 0 {
		e.src = nil
		s.budget.release(e.cost)
		if e.cost >= freeOSAfter {
			debug.FreeOSMemory()
		}
	}
}

// probed is what an image's header says.
type probed struct {
	format string
	w, h   int
	orient int
	cost   int64 // estimated bytes to decode it
}

// probe reads src's header and refuses images over maxPixels, or whose
// decode would need more than maxBytes (errImageTooLarge); src is left
// at its start.
func probe(src io.ReadSeeker, maxPixels, maxBytes int64) (probed, error) {
	cfg, format, err := image.DecodeConfig(src)
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return probed{}, errNotImage
	}
	p := probed{format: format, w: cfg.Width, h: cfg.Height, orient: 1}
	px := int64(cfg.Width) * int64(cfg.Height)
	if px > maxPixels {
		return probed{}, errImageTooLarge
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return probed{}, err
	}
	switch format {
	case "jpeg":
		p.cost = jpegDecodeCost(src, px)
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return probed{}, err
		}
		p.orient = jpegOrientation(src)
	case "png":
		p.cost = px * bytesPerPixel(cfg.ColorModel)
		var hdr [29]byte
		if _, err := io.ReadFull(src, hdr[:]); err == nil && hdr[28] == 1 {
			p.cost *= 2 // Adam7: each pass is decoded apart, then merged
		}
	case "gif":
		p.cost = px // paletted, first frame only
	default: // webp: lossless decodes through a pixel buffer besides the image
		p.cost = px * 8
	}
	if p.cost > maxBytes {
		return probed{}, errImageTooLarge
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return probed{}, err
	}
	return p, nil
}

// decode decodes a probed image.
func decode(src io.ReadSeeker, p probed) (*source, error) {
	img, _, err := image.Decode(src)
	if err != nil {
		return nil, errNotImage
	}
	return &source{img: img, format: p.format, orient: p.orient}, nil
}

func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.RGBA64Model, color.NRGBA64Model:
		return 8
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 4
}

// jpegDecodeCost estimates the bytes image/jpeg allocates for a JPEG of px
// pixels from its frame header: the component planes (subsampled), for a
// progressive JPEG also their int32 coefficients (4 bytes per sample), and
// for four components the CMYK image built from them.
func jpegDecodeCost(r io.Reader, px int64) int64 {
	br := io.LimitReader(r, 1<<20)
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil || hdr[0] != 0xFF || hdr[1] != 0xD8 {
		return px * 16
	}
	for {
		if _, err := io.ReadFull(br, hdr[:4]); err != nil || hdr[0] != 0xFF {
			return px * 16
		}
		marker, n := hdr[1], int(binary.BigEndian.Uint16(hdr[2:4]))-2
		if n < 0 || marker == 0xDA || marker == 0xD9 {
			return px * 16
		}
		seg := make([]byte, n)
		if _, err := io.ReadFull(br, seg); err != nil {
			return px * 16
		}
		if marker < 0xC0 || marker > 0xCF || marker == 0xC4 || marker == 0xC8 || marker == 0xCC {
			continue
		}
		// SOFn: precision, height, width, component count, then per
		// component id, sampling factors (H<<4|V) and table.
		if len(seg) < 6 || len(seg) < 6+3*int(seg[5]) {
			return px * 16
		}
		nc := int(seg[5])
		hmax, vmax := 1, 1
		for i := range nc {
			f := seg[6+3*i+1]
			hmax, vmax = max(hmax, int(f>>4)), max(vmax, int(f&15))
		}
		var planes int64
		for i := range nc {
			f := seg[6+3*i+1]
			planes += px * int64(max(1, int(f>>4))*max(1, int(f&15))) / int64(hmax*vmax)
		}
		cost := planes
		if marker == 0xC2 || marker == 0xC6 || marker == 0xCA || marker == 0xCE {
			cost += 4 * planes
		}
		if nc == 4 {
			cost += 4 * px
		}
		return cost + px/8 // block padding
	}
}
