//go:build linux

package peeruid

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// accepted connects to a fresh listener on network/addr and returns both
// ends.
func accepted(t *testing.T, network, listen, dial string) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, listen)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", listen, err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	client, err = net.DialTimeout("tcp", net.JoinHostPort(dial, port), 10*time.Second)
	if err != nil {
		t.Skipf("cannot dial %s: %v", dial, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = server.Close() })
	return client, server
}

func TestLookupOwnConnection(t *testing.T) {
	for _, tc := range []struct{ name, network, listen, dial string }{
		{"IPv4", "tcp4", "127.0.0.1:0", "127.0.0.1"},
		{"IPv4, another loopback address", "tcp4", "127.246.0.1:0", "127.246.0.1"},
		{"IPv6", "tcp6", "[::1]:0", "::1"},
		// A client socket of the IPv6 family reaching an IPv4 listener:
		// its row is in tcp6, with IPv4-mapped addresses.
		{"IPv4-mapped client", "tcp4", "127.0.0.1:0", "::ffff:127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := accepted(t, tc.network, tc.listen, tc.dial)
			row, err := Lookup(server)
			require.NoError(t, err)
			require.Equal(t, uint32(os.Getuid()), row.UID)
			require.NotZero(t, row.Inode)
			require.Equal(t, client.LocalAddr().(*net.TCPAddr).AddrPort().Port(), row.Local.Port())
			require.True(t, NewGuard("test", nil).Allow(server))
		})
	}
}

// TestLookupClosedClient: once the client closed its socket, the peer is
// never taken for root (a time-wait or orphaned socket is listed as uid
// 0): it is refused.
func TestLookupClosedClient(t *testing.T) {
	client, server := accepted(t, "tcp4", "127.0.0.1:0", "127.0.0.1")
	require.NoError(t, client.Close())
	// Wait until the kernel has moved the client's socket on from
	// FIN_WAIT1 (our side acknowledged its FIN).
	require.Eventually(t, func() bool {
		row, err := Lookup(server)
		return err != nil || row.Inode == 0
	}, 10*time.Second, 5*time.Millisecond)
	require.False(t, NewGuard("test", nil).Allow(server))
}
