package mediaapi

import (
	"image"
	"image/color"
	stddraw "image/draw"

	"golang.org/x/image/draw"
)

// resize scales the region r of src to a w×h RGBA image.
//
// CatmullRom over a 12-megapixel photo costs about a second (its kernel
// widens with the reduction), so large reductions first average k×k blocks
// (a box filter, which is also fair anti-aliasing for big factors) down to
// at least twice the target, and CatmullRom does only the last, small
// step.
//
// CatmullRom's two passes keep a w × (source height) buffer of 32 bytes a
// sample; when that would pass maxKernelTmp (large outputs of a large
// source), the box filter takes the whole integer factor and bilinear
// interpolation the remaining (less than 2×) step.
func resize(src image.Image, r image.Rectangle, w, h int) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	k := min(r.Dx()/w, r.Dy()/h) / 2
	if k >= 2 {
		src = boxReduce(src, r, k)
		r = src.Bounds()
	}
	if int64(w)*int64(r.Dy())*32 > maxKernelTmp {
		if k := min(r.Dx()/w, r.Dy()/h); k >= 2 {
			src = boxReduce(src, r, k)
			r = src.Bounds()
		}
		draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, r, draw.Src, nil)
		return dst
	}
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, r, draw.Src, nil)
	return dst
}

// maxKernelTmp bounds CatmullRom's temporary buffer (an 800×600 thumbnail
// of a 12-megapixel photo needs 38 MB).
const maxKernelTmp = 48 << 20

// boxReduce averages k×k blocks of region r (partial blocks at the right
// and bottom edges average what they cover).
func boxReduce(src image.Image, r image.Rectangle, k int) *image.RGBA {
	ow, oh := (r.Dx()+k-1)/k, (r.Dy()+k-1)/k
	out := image.NewRGBA(image.Rect(0, 0, ow, oh))
	if yc, ok := src.(*image.YCbCr); ok {
		boxYCbCr(yc, r, k, out)
		return out
	}
	// Other formats: converted to premultiplied RGBA (where averaging alpha
	// is correct) one band of k rows at a time, never as a whole copy of
	// the source, then their bytes averaged.
	rgba, whole := src.(*image.RGBA)
	var band *image.RGBA
	if !whole {
		band = image.NewRGBA(image.Rect(0, 0, r.Dx(), k))
	}
	ocol := make([]int, r.Dx())
	for x := range ocol {
		ocol[x] = x / k * 4
	}
	sums := make([]uint32, ow*4)
	counts := make([]uint32, ow)
	for oy := range oh {
		clear(sums)
		clear(counts)
		y0, y1 := r.Min.Y+oy*k, min(r.Min.Y+(oy+1)*k, r.Max.Y)
		if !whole {
			stddraw.Draw(band, image.Rect(0, 0, r.Dx(), y1-y0), src, image.Pt(r.Min.X, y0), stddraw.Src)
		}
		for y := y0; y < y1; y++ {
			var row []byte
			if whole {
				row = rgba.Pix[rgba.PixOffset(r.Min.X, y):][:4*r.Dx()]
			} else {
				row = band.Pix[band.PixOffset(0, y-y0):][:4*r.Dx()]
			}
			for x, o := range ocol {
				p := row[x*4 : x*4+4 : x*4+4]
				s := sums[o : o+4 : o+4]
				s[0] += uint32(p[0])
				s[1] += uint32(p[1])
				s[2] += uint32(p[2])
				s[3] += uint32(p[3])
				counts[o/4]++
			}
		}
		line := out.Pix[out.PixOffset(0, oy):]
		for o := range ow {
			n := counts[o]
			for c := range 4 {
				line[o*4+c] = uint8((sums[o*4+c] + n/2) / n)
			}
		}
	}
	return out
}

// boxYCbCr averages in YCbCr (an affine map of RGB, so the mean converts to
// the mean colour) straight from a decoded JPEG's planes.
func boxYCbCr(src *image.YCbCr, r image.Rectangle, k int, out *image.RGBA) {
	ow, oh := out.Bounds().Dx(), out.Bounds().Dy()
	// Chroma offsets are separable (row part + column part) for every
	// subsampling ratio; tabulate the column parts and output columns once.
	base := src.COffset(r.Min.X, r.Min.Y)
	ccol := make([]int, r.Dx())
	ocol := make([]int, r.Dx())
	for x := range ccol {
		ccol[x] = src.COffset(r.Min.X+x, r.Min.Y) - base
		ocol[x] = x / k
	}
	sy := make([]uint32, ow)
	scb := make([]uint32, ow)
	scr := make([]uint32, ow)
	counts := make([]uint32, ow)
	for oy := range oh {
		clear(sy)
		clear(scb)
		clear(scr)
		clear(counts)
		for y := r.Min.Y + oy*k; y < min(r.Min.Y+(oy+1)*k, r.Max.Y); y++ {
			yrow := src.Y[src.YOffset(r.Min.X, y):][:len(ccol)]
			crow := src.COffset(r.Min.X, y)
			cb, cr := src.Cb[crow:], src.Cr[crow:]
			for x, yv := range yrow {
				o, ci := ocol[x], ccol[x]
				sy[o] += uint32(yv)
				scb[o] += uint32(cb[ci])
				scr[o] += uint32(cr[ci])
				counts[o]++
			}
		}
		line := out.Pix[out.PixOffset(0, oy):]
		for o := range ow {
			n := counts[o]
			rr, gg, bb := color.YCbCrToRGB(uint8((sy[o]+n/2)/n), uint8((scb[o]+n/2)/n), uint8((scr[o]+n/2)/n))
			line[o*4], line[o*4+1], line[o*4+2], line[o*4+3] = rr, gg, bb, 0xff
		}
	}
}
