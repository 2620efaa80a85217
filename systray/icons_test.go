package systray

import (
	"bytes"
	"encoding/binary"
	"image/png"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIconShapes(t *testing.T) {
	for _, size := range IconSizes() {
		c, q := size/2, size/4 // centre; a quarter in from the edge
		cases := []struct {
			state IconState
			// alpha at (q, c) left of centre, (c, c) centre and (size-1-q, c) right of centre
			left, centre, right bool
		}{
			{IconConnected, true, true, true},
			{IconDegraded, true, false, false},
			{IconDisconnected, false, false, false},
			{IconError, true, true, true},
		}
		for _, tc := range cases {
			img := DrawIcon(tc.state, size)
			require.Equal(t, size, img.Bounds().Dx())
			opaque := func(x, y int) bool { return img.NRGBAAt(x, y).A > 128 }
			require.Equal(t, tc.left, opaque(q, c), "%s %dpx left", tc.state, size)
			require.Equal(t, tc.centre, opaque(c, c), "%s %dpx centre", tc.state, size)
			require.Equal(t, tc.right, opaque(size-1-q, c), "%s %dpx right", tc.state, size)
			// The ring at the edge is drawn in the state's colour; corners
			// stay transparent.
			require.Equal(t, IconColor(tc.state), img.NRGBAAt(c, 1), "%s %dpx top ring", tc.state, size)
			require.Zero(t, img.NRGBAAt(0, 0).A)
		}
		// The error cross is white at the centre.
		require.Equal(t, uint8(0xff), DrawIcon(IconError, size).NRGBAAt(c, c).G)
	}
}

func TestIconPNGDistinct(t *testing.T) {
	seen := map[string]IconState{}
	for _, s := range []IconState{IconDisconnected, IconConnected, IconDegraded, IconError} {
		b := IconPNG(s, 32)
		img, err := png.Decode(bytes.NewReader(b))
		require.NoError(t, err)
		require.Equal(t, 32, img.Bounds().Dx())
		prev, dup := seen[string(b)]
		require.False(t, dup, "%s looks like %s", s, prev)
		seen[string(b)] = s
	}
}

func TestIconICO(t *testing.T) {
	b := IconICO(IconDegraded)
	le := binary.LittleEndian
	require.Equal(t, uint16(0), le.Uint16(b[0:]))
	require.Equal(t, uint16(1), le.Uint16(b[2:]))
	n := int(le.Uint16(b[4:]))
	require.Equal(t, len(IconSizes()), n)
	for i, size := range IconSizes() {
		e := b[6+16*i:]
		require.Equal(t, byte(size), e[0])
		require.Equal(t, byte(size), e[1])
		require.Equal(t, uint16(32), le.Uint16(e[6:]))
		length, off := le.Uint32(e[8:]), le.Uint32(e[12:])
		img, err := png.Decode(bytes.NewReader(b[off : off+length]))
		require.NoError(t, err)
		require.Equal(t, size, img.Bounds().Dx())
	}
}
