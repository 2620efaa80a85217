package systray

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
)

// IconSizes are the pixel sizes drawn for the tray: 16 for classic panels,
// 22 for GNOME/KDE panels, 32 for HiDPI panels that scale down.
func IconSizes() []int { return []int{16, 22, 32} }

// The icons are drawn by code rather than committed, so every size is crisp
// and the states differ by shape as well as colour (legible to colour-blind
// users and on monochrome panels):
//
//	connected     filled green disc
//	degraded      amber ring, left half filled
//	disconnected  grey ring, hollow
//	error         red disc with a white cross

// IconColor is the main colour of a state's icon; tests use it to check the
// pixels a tray host receives.
func IconColor(s IconState) color.NRGBA {
	switch s {
	case IconConnected:
		return color.NRGBA{0x2e, 0xa0, 0x4f, 0xff} // green
	case IconDegraded:
		return color.NRGBA{0xe8, 0x9a, 0x12, 0xff} // amber
	case IconError:
		return color.NRGBA{0xd9, 0x30, 0x25, 0xff} // red
	default:
		return color.NRGBA{0x8a, 0x8f, 0x98, 0xff} // grey
	}
}

// DrawIcon renders the icon for s at size×size pixels.
func DrawIcon(s IconState, size int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	const outer = 0.47 // radius of the disc, in units of the icon's side
	ring := math.Max(0.14, 1.6/float64(size))
	main := IconColor(s)
	// shape returns the colour and coverage of a point in unit coordinates.
	shape := func(x, y float64) (color.NRGBA, bool) {
		dx, dy := x-0.5, y-0.5
		r := math.Hypot(dx, dy)
		if r > outer {
			return color.NRGBA{}, false
		}
		switch s {
		case IconConnected:
			return main, true
		case IconError:
			// A cross of two bars inside the inner 55% of the disc.
			const half, bar = 0.19, 0.075
			u, v := (dx+dy)/math.Sqrt2, (dx-dy)/math.Sqrt2
			inCross := (math.Abs(u) < bar && math.Abs(v) < half*math.Sqrt2) ||
				(math.Abs(v) < bar && math.Abs(u) < half*math.Sqrt2)
			if inCross {
				return color.NRGBA{0xff, 0xff, 0xff, 0xff}, true
			}
			return main, true
		case IconDegraded:
			if r >= outer-ring || dx < 0 {
				return main, true
			}
			return color.NRGBA{}, false
		default: // disconnected
			if r >= outer-ring {
				return main, true
			}
			return color.NRGBA{}, false
		}
	}
	// 4×4 supersampling gives anti-aliased edges without a vector library.
	const ss = 4
	for py := 0; py < size; py++ {
		for px := 0; px < size; px++ {
			var rs, gs, bs, hits float64
			for sy := 0; sy < ss; sy++ {
				for sx := 0; sx < ss; sx++ {
					x := (float64(px) + (float64(sx)+0.5)/ss) / float64(size)
					y := (float64(py) + (float64(sy)+0.5)/ss) / float64(size)
					if c, ok := shape(x, y); ok {
						rs += float64(c.R)
						gs += float64(c.G)
						bs += float64(c.B)
						hits++
					}
				}
			}
			if hits == 0 {
				continue
			}
			img.SetNRGBA(px, py, color.NRGBA{
				R: uint8(rs/hits + 0.5), G: uint8(gs/hits + 0.5), B: uint8(bs/hits + 0.5),
				A: uint8(255*hits/(ss*ss) + 0.5),
			})
		}
	}
	return img
}

// IconPNG is the icon for s as a PNG of size×size pixels.
func IconPNG(s IconState, size int) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, DrawIcon(s, size)); err != nil {
		// Encoding an in-memory NRGBA image cannot fail.
		panic(fmt.Sprintf("encode %s icon: %v", s, err))
	}
	return buf.Bytes()
}

// IconICO is the icon for s as a Windows .ico holding every IconSizes
// image as an embedded PNG (supported since Windows Vista).
func IconICO(s IconState) []byte {
	sizes := IconSizes()
	pngs := make([][]byte, len(sizes))
	for i, size := range sizes {
		pngs[i] = IconPNG(s, size)
	}
	var buf bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { _ = binary.Write(&buf, le, v) }
	w(uint16(0))          // reserved
	w(uint16(1))          // type: icon
	w(uint16(len(sizes))) // image count
	offset := 6 + 16*len(sizes)
	for i, size := range sizes {
		w(uint8(size)) // width (sizes here are < 256)
		w(uint8(size)) // height
		w(uint8(0))    // palette size
		w(uint8(0))    // reserved
		w(uint16(1))   // colour planes
		w(uint16(32))  // bits per pixel
		w(uint32(len(pngs[i])))
		w(uint32(offset))
		offset += len(pngs[i])
	}
	for _, p := range pngs {
		buf.Write(p)
	}
	return buf.Bytes()
}
