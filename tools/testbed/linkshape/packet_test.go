package linkshape

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPacketLinkRefusedCrossingClosesTheClient: when the far end refuses
// the connection over the link (nothing listens there), the client's
// loopback connection is closed, and nothing else happens (a failed dial
// once came back as a nil connection that was closed anyway).
func TestPacketLinkRefusedCrossingClosesTheClient(t *testing.T) {
	p, err := newPacketLink(Link{Name: "test", RTT: time.Millisecond, Packets: true})
	require.NoError(t, err)
	defer p.close()
	addr, err := p.proxy("127.0.0.1:1")
	require.NoError(t, err)
	p.mu.Lock()
	far := p.listeners[0] // the far end's listener on the link
	p.mu.Unlock()
	require.NoError(t, far.Close())

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF)
}
