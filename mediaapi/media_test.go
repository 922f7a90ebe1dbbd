package mediaapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"

	"golang.org/x/image/draw"
)

func TestThumbGeometry(t *testing.T) {
	tests := []struct {
		sw, sh int
		spec   thumbSpec
		w, h   int
		crop   image.Rectangle
	}{
		// The sizes Element asks for, from a 4:3 photo.
		{4000, 3000, thumbSpec{32, 32, "crop"}, 32, 32, image.Rect(500, 0, 3500, 3000)},
		{4000, 3000, thumbSpec{96, 96, "crop"}, 96, 96, image.Rect(500, 0, 3500, 3000)},
		{4000, 3000, thumbSpec{320, 240, "scale"}, 320, 240, image.Rect(0, 0, 4000, 3000)},
		{4000, 3000, thumbSpec{640, 480, "scale"}, 640, 480, image.Rect(0, 0, 4000, 3000)},
		{4000, 3000, thumbSpec{800, 600, "scale"}, 800, 600, image.Rect(0, 0, 4000, 3000)},
		// Wide and tall sources fit the box.
		{1600, 900, thumbSpec{320, 240, "scale"}, 320, 180, image.Rect(0, 0, 1600, 900)},
		{900, 1600, thumbSpec{320, 240, "scale"}, 135, 240, image.Rect(0, 0, 900, 1600)},
		{900, 1600, thumbSpec{96, 96, "crop"}, 96, 96, image.Rect(0, 350, 900, 1250)},
		// Never upscaled.
		{20, 10, thumbSpec{320, 240, "scale"}, 20, 10, image.Rect(0, 0, 20, 10)},
		{20, 10, thumbSpec{96, 96, "crop"}, 10, 10, image.Rect(5, 0, 15, 10)},
		{100, 40, thumbSpec{96, 96, "crop"}, 40, 40, image.Rect(30, 0, 70, 40)},
		{1, 5000, thumbSpec{32, 32, "scale"}, 1, 32, image.Rect(0, 0, 1, 5000)},
	}
	for _, tt := range tests {
		w, h, crop := thumbGeometry(tt.sw, tt.sh, tt.spec)
		if w != tt.w || h != tt.h || crop != tt.crop {
			t.Errorf("%dx%d %+v: got %dx%d from %v, want %dx%d from %v", tt.sw, tt.sh, tt.spec, w, h, crop, tt.w, tt.h, tt.crop)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	tests := []struct{ ct, name, want string }{
		{"image/png", "cat.png", `inline; filename=cat.png`},
		{"IMAGE/JPEG", "", "inline"},
		{"text/plain; charset=utf-8", "a b.txt", `inline; filename="a b.txt"`},
		{"text/html", "x.html", `attachment; filename=x.html`},
		{"image/svg+xml", "", "attachment"},
		{"application/octet-stream", "rapport été.pdf", `attachment; filename*=utf-8''rapport%20%C3%A9t%C3%A9.pdf`},
		{"application/pdf", `evil"/name.pdf`, `attachment; filename="evil\"_name.pdf"`},
	}
	for _, tt := range tests {
		if got := contentDisposition(tt.ct, tt.name); got != tt.want {
			t.Errorf("%q %q: got %s, want %s", tt.ct, tt.name, got, tt.want)
		}
	}
}

func TestMediaIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newMediaID()
		if len(id) != 24 || !mediaIDPattern.MatchString(id) || strings.ContainsAny(id, "_-") {
			t.Fatalf("bad media ID %q", id)
		}
		if seen[id] {
			t.Fatalf("repeated media ID %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "../etc", "a/b", "a.b", "%2e%2e", strings.Repeat("a", 256)} {
		if mediaIDPattern.MatchString(bad) {
			t.Errorf("%q accepted as a media ID", bad)
		}
	}
	for _, good := range []string{"localhost", "example.org:8448", "[::1]:8448", "1.2.3.4"} {
		if !serverNamePattern.MatchString(good) {
			t.Errorf("server name %q refused", good)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", "x:y:z", "evil.org#", "a:123456"} {
		if serverNamePattern.MatchString(bad) {
			t.Errorf("server name %q accepted", bad)
		}
	}
}

func TestRenderThumbFormats(t *testing.T) {
	src := image.NewNRGBA(image.Rect(0, 0, 400, 300))
	for y := range 300 {
		for x := range 400 {
			src.Set(x, y, color.NRGBA{uint8(x), uint8(y), 100, 200})
		}
	}
	var pngBuf, jpgBuf, gifBuf bytes.Buffer
	_ = png.Encode(&pngBuf, src)
	_ = jpeg.Encode(&jpgBuf, src, nil)
	_ = gif.Encode(&gifBuf, src, nil)
	inputs := map[string]struct {
		data   []byte
		wantCT string
	}{
		"png":  {pngBuf.Bytes(), "image/png"},
		"jpeg": {jpgBuf.Bytes(), "image/jpeg"},
		"gif":  {gifBuf.Bytes(), "image/png"},
		"webp": {solidWebP(400, 300, 10, 200, 30, 255), "image/png"},
	}
	for name, in := range inputs {
		data, ct, w, h, err := renderThumb(bytes.NewReader(in.data), thumbSpec{96, 96, "crop"}, DefaultMaxImagePixels)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		img, format, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: output does not decode: %v", name, err)
		}
		if ct != in.wantCT || "image/"+format != ct || w != 96 || h != 96 || img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
			t.Errorf("%s: got %s (%s) %dx%d", name, ct, format, img.Bounds().Dx(), img.Bounds().Dy())
		}
	}
	// The WebP's colour survives decoding and scaling.
	data, _, _, _, err := renderThumb(bytes.NewReader(inputs["webp"].data), thumbSpec{32, 32, "crop"}, DefaultMaxImagePixels)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if r, g, b, _ := img.At(16, 16).RGBA(); r>>8 != 10 || g>>8 != 200 || b>>8 != 30 {
		t.Errorf("webp thumbnail colour %d,%d,%d", r>>8, g>>8, b>>8)
	}
	// Decompression bombs are refused from the header alone.
	if _, _, _, _, err := renderThumb(bytes.NewReader(solidWebP(16000, 16000, 0, 0, 0, 255)), thumbSpec{32, 32, "crop"}, DefaultMaxImagePixels); !errors.Is(err, errImageTooLarge) {
		t.Errorf("256 MP image: %v", err)
	}
	if _, _, _, _, err := renderThumb(bytes.NewReader([]byte("%PDF-1.7 not an image")), thumbSpec{32, 32, "crop"}, DefaultMaxImagePixels); !errors.Is(err, errNotImage) {
		t.Errorf("non-image: %v", err)
	}
}

// solidWebP builds a lossless (VP8L) WebP of one colour: every prefix code
// is a one-symbol "simple" code, so the pixels take no bits at all.
func solidWebP(w, h int, r, g, b, a byte) []byte {
	var out []byte
	var acc uint64
	var n uint
	put := func(v uint64, bits uint) {
		acc |= v << n
		n += bits
		for n >= 8 {
			out = append(out, byte(acc))
			acc >>= 8
			n -= 8
		}
	}
	put(0x2f, 8)                                // VP8L signature
	put(uint64(w-1), 14)                        // width - 1
	put(uint64(h-1), 14)                        // height - 1
	put(1, 1)                                   // alpha used
	put(0, 3)                                   // version
	put(0, 1)                                   // no transform
	put(0, 1)                                   // no colour cache
	put(0, 1)                                   // no meta prefix codes
	for _, sym := range []byte{g, r, b, a, 0} { // green, red, blue, alpha, distance
		put(1, 1) // simple code
		put(0, 1) // one symbol
		put(1, 1) // 8-bit symbol
		put(uint64(sym), 8)
	}
	if n > 0 {
		out = append(out, byte(acc))
	}
	if len(out)%2 == 1 {
		out = append(out, 0)
	}
	var buf bytes.Buffer
	buf.WriteString("RIFF")
	_ = binary.Write(&buf, binary.LittleEndian, uint32(4+8+len(out)))
	buf.WriteString("WEBPVP8L")
	_ = binary.Write(&buf, binary.LittleEndian, uint32(len(out)))
	buf.Write(out)
	return buf.Bytes()
}

// The box pre-reduction must look like a direct CatmullRom scale, for JPEG
// (YCbCr) and other (RGBA) sources, including an off-origin crop.
func TestResizeMatchesDirectScale(t *testing.T) {
	ycc := image.NewYCbCr(image.Rect(0, 0, 1200, 900), image.YCbCrSubsampleRatio420)
	for y := range 900 {
		for x := range 1200 {
			ycc.Y[y*ycc.YStride+x] = uint8(x/10 + y/9 + 20*((x/40+y/40)%2))
		}
	}
	for y := range 450 {
		for x := range 600 {
			ycc.Cb[y*ycc.CStride+x] = uint8(x / 3)
			ycc.Cr[y*ycc.CStride+x] = uint8(255 - y/2)
		}
	}
	nrgba := image.NewNRGBA(image.Rect(0, 0, 1200, 900))
	for y := range 900 {
		for x := range 1200 {
			nrgba.Set(x, y, color.NRGBA{uint8(x / 5), uint8(y / 4), uint8(60 * ((x/50 + y/50) % 3)), uint8(128 + x/10)})
		}
	}
	for name, src := range map[string]image.Image{"ycbcr": ycc, "nrgba": nrgba} {
		for _, c := range []struct {
			r    image.Rectangle
			w, h int
		}{{image.Rect(0, 0, 1200, 900), 80, 60}, {image.Rect(150, 0, 1050, 900), 32, 32}, {image.Rect(0, 0, 1200, 900), 400, 300}} {
			got := resize(src, c.r, c.w, c.h)
			want := image.NewRGBA(image.Rect(0, 0, c.w, c.h))
			draw.CatmullRom.Scale(want, want.Bounds(), src, c.r, draw.Src, nil)
			var diff, n float64
			for i := range got.Pix {
				d := float64(got.Pix[i]) - float64(want.Pix[i])
				diff += d * d
				n++
			}
			if rms := math.Sqrt(diff / n); rms > 6 {
				t.Errorf("%s %v→%dx%d: RMS difference %.1f from a direct scale", name, c.r, c.w, c.h, rms)
			}
		}
	}
}

// withOrientation inserts an EXIF APP1 segment with the given Orientation
// right after a JPEG's SOI marker.
func withOrientation(jpg []byte, o int) []byte {
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, byte(o), 0, 0, 0, 0, 0, 0}
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := append([]byte{0xFF, 0xE1, byte((len(payload) + 2) >> 8), byte(len(payload) + 2)}, payload...)
	return append(append(append([]byte(nil), jpg[:2]...), seg...), jpg[2:]...)
}

func TestThumbnailEXIFOrientation(t *testing.T) {
	// Stored 400×300 with a distinct colour in each quadrant.
	quad := []color.RGBA{{220, 30, 30, 255}, {30, 220, 30, 255}, {30, 30, 220, 255}, {220, 220, 30, 255}}
	src := image.NewRGBA(image.Rect(0, 0, 400, 300))
	for y := range 300 {
		for x := range 400 {
			src.SetRGBA(x, y, quad[x/200+2*(y/150)])
		}
	}
	var buf bytes.Buffer
	_ = jpeg.Encode(&buf, src, &jpeg.Options{Quality: 95})
	for o := 1; o <= 8; o++ {
		jpg := withOrientation(buf.Bytes(), o)
		if got := jpegOrientation(bytes.NewReader(jpg)); got != o {
			t.Fatalf("orientation %d read as %d", o, got)
		}
		data, _, w, h, err := renderThumb(bytes.NewReader(jpg), thumbSpec{320, 240, "scale"}, DefaultMaxImagePixels)
		if err != nil {
			t.Fatal(err)
		}
		wantW, wantH := 320, 240
		if o >= 5 {
			wantW, wantH = 180, 240
		}
		if w != wantW || h != wantH {
			t.Errorf("orientation %d: %dx%d, want %dx%d", o, w, h, wantW, wantH)
		}
		img, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		// Each displayed quadrant shows the stored quadrant it maps to.
		for _, p := range [][2]int{{w / 4, h / 4}, {3 * w / 4, h / 4}, {w / 4, 3 * h / 4}, {3 * w / 4, 3 * h / 4}} {
			sx, sy := toStored(p[0]*400/w, p[1]*300/h, 400, 300, o)
			if o >= 5 {
				sx, sy = toStored(p[0]*300/w, p[1]*400/h, 400, 300, o)
			}
			want := quad[sx/200+2*(sy/150)]
			r, g, b, _ := img.At(p[0], p[1]).RGBA()
			if d := mediaColourDist(r>>8, g>>8, b>>8, want); d > 40 {
				t.Errorf("orientation %d: display %v is %d,%d,%d, want %v", o, p, r>>8, g>>8, b>>8, want)
			}
		}
	}
	if jpegOrientation(bytes.NewReader(buf.Bytes())) != 1 || jpegOrientation(bytes.NewReader([]byte("junk"))) != 1 {
		t.Error("no EXIF must read as orientation 1")
	}
}

func mediaColourDist(r, g, b uint32, c color.RGBA) int {
	d := func(a uint32, b uint8) int {
		if x := int(a) - int(b); x > 0 {
			return x
		}
		return int(b) - int(a)
	}
	return d(r, c.R) + d(g, c.G) + d(b, c.B)
}

// The decode budget admits in order while the reservations fit, and a
// waiter that gives up takes nothing.
func TestDecodeBudget(t *testing.T) {
	b := newDecodeBudget(100)
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.acquire(short, 50); err == nil {
		t.Fatal("50 more granted with 60 of 100 used")
	}
	if b.used != 60 || len(b.waiters) != 0 {
		t.Fatalf("after a cancelled wait: used %d, %d waiters", b.used, len(b.waiters))
	}
	got := make(chan struct{})
	go func() {
		if err := b.acquire(ctx, 100); err == nil {
			close(got)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("granted while 60 are held")
	default:
	}
	b.release(60)
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("not granted after the release")
	}
	if b.used != 100 || len(b.waiters) != 0 {
		t.Fatalf("used %d, %d waiters", b.used, len(b.waiters))
	}
}

// probe refuses images by their header: too many pixels, or a decode
// dearer than the budget (a progressive JPEG keeps its coefficients).
func TestProbeLimits(t *testing.T) {
	var buf bytes.Buffer
	_ = png.Encode(&buf, image.NewNRGBA(image.Rect(0, 0, 300, 200)))
	p, err := probe(bytes.NewReader(buf.Bytes()), 60_000, 4*60_000)
	if err != nil || p.format != "png" || p.cost != 4*60_000 {
		t.Fatalf("probe %+v, %v", p, err)
	}
	if _, err := probe(bytes.NewReader(buf.Bytes()), 59_999, 4*59_999); !errors.Is(err, errImageTooLarge) {
		t.Errorf("over max pixels: %v", err)
	}
	buf.Reset()
	_ = jpeg.Encode(&buf, image.NewYCbCr(image.Rect(0, 0, 800, 600), image.YCbCrSubsampleRatio420), nil)
	p, err = probe(bytes.NewReader(buf.Bytes()), DefaultMaxImagePixels, 4*DefaultMaxImagePixels)
	px := int64(800 * 600)
	if err != nil || p.cost < px*3/2 || p.cost > px*2 {
		t.Fatalf("baseline 4:2:0 JPEG: cost %d for %d pixels, %v", p.cost, px, err)
	}
	// The same frame header marked progressive (SOF2) costs five times the planes.
	b := bytes.Replace(buf.Bytes(), []byte{0xFF, 0xC0}, []byte{0xFF, 0xC2}, 1)
	if c := jpegDecodeCost(bytes.NewReader(b), px); c < px*15/2 || c > px*8 {
		t.Errorf("progressive 4:2:0 JPEG: cost %d for %d pixels", c, px)
	}
}
