package portforward

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder records each Write as one message, like a WebSocket.
type recorder struct {
	net.Conn
	msgs [][]byte
	err  error
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	r.msgs = append(r.msgs, bytes.Clone(p))
	return len(p), nil
}

// frame builds a SPDY data frame the way the framer writes it: two header
// words, then the payload.
func frame(stream uint32, payload []byte) [][]byte {
	var w1, w2 [4]byte
	binary.BigEndian.PutUint32(w1[:], stream)
	binary.BigEndian.PutUint32(w2[:], uint32(len(payload)))
	return [][]byte{w1[:], w2[:], payload}
}

func TestFrameConnWritesWholeFrames(t *testing.T) {
	tests := []struct {
		name     string
		payloads []int
	}{
		{"one frame", []int{100}},
		{"empty payload (FIN)", []int{0}},
		{"several frames", []int{1, 0, 5000, 64 << 10}},
		{"large frame", []int{2 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			c := newFrameConn(r)
			var want [][]byte
			for i, n := range tt.payloads {
				payload := bytes.Repeat([]byte{byte(i + 1)}, n)
				var whole []byte
				for _, piece := range frame(uint32(i*2+1), payload) {
					whole = append(whole, piece...)
					if len(piece) == 0 {
						continue // the framer skips nothing, but an empty Write is legal
					}
					k, err := c.Write(piece)
					require.NoError(t, err)
					require.Equal(t, len(piece), k)
				}
				want = append(want, whole)
				require.Equal(t, want, r.msgs, "frame %d goes out whole as soon as it is complete", i)
			}
		})
	}
}

func TestFrameConnSplitAndJoinedWrites(t *testing.T) {
	r := &recorder{}
	c := newFrameConn(r)
	var all []byte
	for i := range 3 {
		for _, p := range frame(uint32(i+1), []byte("payload")) {
			all = append(all, p...)
		}
	}
	// Two frames and a half in one write, the rest byte by byte.
	cut := 2*(8+7) + 5
	_, err := c.Write(all[:cut])
	require.NoError(t, err)
	require.Equal(t, [][]byte{all[:2*(8+7)]}, r.msgs)
	for _, b := range all[cut:] {
		_, err := c.Write([]byte{b})
		require.NoError(t, err)
	}
	require.Equal(t, [][]byte{all[:2*(8+7)], all[2*(8+7):]}, r.msgs)
}

func TestFrameConnReportsErrorsSynchronously(t *testing.T) {
	r := &recorder{err: io.ErrClosedPipe}
	c := newFrameConn(r)
	pieces := frame(1, []byte("x"))
	_, err := c.Write(pieces[0])
	require.NoError(t, err, "a partial frame is only buffered")
	_, err = c.Write(pieces[1])
	require.NoError(t, err)
	_, err = c.Write(pieces[2])
	require.ErrorIs(t, err, io.ErrClosedPipe, "the write completing the frame reports the failure")
	_, err = c.Write([]byte{0})
	require.ErrorIs(t, err, io.ErrClosedPipe, "and so do later ones")
}
