package mediaapi

import (
	"encoding/binary"
	"image"
	"io"
)

// Phone cameras store JPEGs in sensor orientation with an EXIF Orientation
// tag saying how to turn them. Thumbnails are re-encoded without EXIF, so
// the turn is applied here; otherwise portrait photos thumbnail sideways.
//
// Orientation values (EXIF 2.3): 1 normal, 2 mirrored, 3 rotated 180°,
// 4 flipped, 5 transposed, 6 rotated 90° clockwise, 7 transversed,
// 8 rotated 90° anticlockwise. 5–8 swap width and height.

// jpegOrientation reads the EXIF Orientation of a JPEG from its header
// segments (at most the first 256 KiB), returning 1 when absent or invalid.
func jpegOrientation(r io.Reader) int {
	br := io.LimitReader(r, 256<<10)
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil || hdr[0] != 0xFF || hdr[1] != 0xD8 {
		return 1
	}
	for {
		if _, err := io.ReadFull(br, hdr[:4]); err != nil || hdr[0] != 0xFF {
			return 1
		}
		marker, n := hdr[1], int(binary.BigEndian.Uint16(hdr[2:4]))-2
		if marker == 0xDA || marker == 0xD9 || n < 0 { // start of scan / end: no EXIF before the image data
			return 1
		}
		seg := make([]byte, n)
		if _, err := io.ReadFull(br, seg); err != nil {
			return 1
		}
		if marker == 0xE1 && len(seg) > 14 && string(seg[:6]) == "Exif\x00\x00" {
			return exifOrientation(seg[6:])
		}
	}
}

// exifOrientation finds tag 0x0112 in IFD0 of a TIFF structure.
func exifOrientation(t []byte) int {
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:4]) != 42 {
		return 1
	}
	off := int(bo.Uint32(t[4:8]))
	if off < 8 || off+2 > len(t) {
		return 1
	}
	count := int(bo.Uint16(t[off:]))
	for i := range count {
		e := off + 2 + 12*i
		if e+12 > len(t) {
			return 1
		}
		if bo.Uint16(t[e:]) == 0x0112 && bo.Uint16(t[e+2:]) == 3 {
			if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
				return v
			}
			return 1
		}
	}
	return 1
}

// orientedSize is the displayed size of a w×h stored image.
func orientedSize(w, h, o int) (int, int) {
	if o >= 5 {
		return h, w
	}
	return w, h
}

// toStored maps a displayed pixel (u, v) to the stored pixel it shows, for
// a stored image of w×h.
func toStored(u, v, w, h, o int) (int, int) {
	switch o {
	case 2:
		return w - 1 - u, v
	case 3:
		return w - 1 - u, h - 1 - v
	case 4:
		return u, h - 1 - v
	case 5:
		return v, u
	case 6:
		return v, h - 1 - u
	case 7:
		return w - 1 - v, h - 1 - u
	case 8:
		return w - 1 - v, u
	}
	return u, v
}

// storedRect maps a rectangle of the displayed image (of a w×h stored one)
// to the stored rectangle it covers.
func storedRect(r image.Rectangle, w, h, o int) image.Rectangle {
	x0, y0 := toStored(r.Min.X, r.Min.Y, w, h, o)
	x1, y1 := toStored(r.Max.X-1, r.Max.Y-1, w, h, o)
	return image.Rect(min(x0, x1), min(y0, y1), max(x0, x1)+1, max(y0, y1)+1)
}

// orient turns a stored-orientation image into display orientation.
func orient(src *image.RGBA, o int) *image.RGBA {
	if o <= 1 || o > 8 {
		return src
	}
	w, h := src.Bounds().Dx(), src.Bounds().Dy()
	dw, dh := orientedSize(w, h, o)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for v := range dh {
		for u := range dw {
			x, y := toStored(u, v, w, h, o)
			copy(dst.Pix[dst.PixOffset(u, v):][:4], src.Pix[src.PixOffset(x, y):][:4])
		}
	}
	return dst
}
