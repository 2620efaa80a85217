package portforward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	gwebsocket "github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// recorder records WebSocket messages: each is sent when its writer is
// closed, and fails then if err is set (as a WebSocket flush would).
type recorder struct {
	net.Conn
	msgs [][]byte
	err  error
	open *bytes.Buffer
}

func (r *recorder) NextWriter(messageType int) (io.WriteCloser, error) {
	if messageType != gwebsocket.BinaryMessage {
		return nil, fmt.Errorf("message type %d, want binary", messageType)
	}
	if r.open != nil {
		return nil, errors.New("two messages open at once")
	}
	r.open = &bytes.Buffer{}
	return recorderMsg{r}, nil
}

type recorderMsg struct{ r *recorder }

func (m recorderMsg) Write(p []byte) (int, error) { return m.r.open.Write(p) }

func (m recorderMsg) Close() error {
	defer func() { m.r.open = nil }()
	if m.r.err != nil {
		return m.r.err
	}
	m.r.msgs = append(m.r.msgs, bytes.Clone(m.r.open.Bytes()))
	return nil
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
			c := newFrameConn(r, r)
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
	c := newFrameConn(r, r)
	var all []byte
	for i := range 3 {
		for _, p := range frame(uint32(i+1), []byte("payload")) {
			all = append(all, p...)
		}
	}
	// Two frames and a half in one write, the rest byte by byte: one
	// message per frame, each sent as soon as the frame is complete.
	const f = 8 + 7
	cut := 2*f + 5
	_, err := c.Write(all[:cut])
	require.NoError(t, err)
	require.Equal(t, [][]byte{all[:f], all[f : 2*f]}, r.msgs)
	for _, b := range all[cut:] {
		_, err := c.Write([]byte{b})
		require.NoError(t, err)
	}
	require.Equal(t, [][]byte{all[:f], all[f : 2*f], all[2*f:]}, r.msgs)
}

func TestFrameConnReportsErrorsSynchronously(t *testing.T) {
	r := &recorder{err: io.ErrClosedPipe}
	c := newFrameConn(r, r)
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

// TestFrameConnFlagsAreNotLength: byte 4 of a SPDY header is the flags
// (FIN on the data frame that closes a stream, on control frames too);
// only bytes 5-7 are the length, so a flagged frame is still one message
// of header + payload, and the next frame starts its own.
func TestFrameConnFlagsAreNotLength(t *testing.T) {
	header := func(word0 uint32, flags byte, length int) []byte {
		h := make([]byte, spdyHeaderLen)
		binary.BigEndian.PutUint32(h[0:4], word0)
		binary.BigEndian.PutUint32(h[4:8], uint32(flags)<<24|uint32(length))
		return h
	}
	frames := [][]byte{
		append(header(5, 0x01, 3), "fin"...),                      // data frame with FIN
		header(7, 0x01, 0),                                        // empty data frame with FIN
		append(header(0x80030001, 0x01, 10), make([]byte, 10)...), // SYN_STREAM control frame with FIN
		append(header(0x80030006, 0xff, 4), 1, 2, 3, 4),           // PING, all flag bits set
	}
	r := &recorder{}
	c := newFrameConn(r, r)
	for _, f := range frames {
		// As the framer writes them: two header words, then the payload.
		for _, piece := range [][]byte{f[:4], f[4:8], f[8:]} {
			if len(piece) == 0 {
				continue
			}
			_, err := c.Write(piece)
			require.NoError(t, err)
		}
	}
	require.Equal(t, frames, r.msgs)
	require.Nil(t, r.open, "no message left open")
}
