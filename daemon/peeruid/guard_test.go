package peeruid

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeConn is a connection with addresses only.
type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }

func TestGuardPolicy(t *testing.T) {
	const me = 1000
	for _, tc := range []struct {
		name  string
		row   Row
		err   error
		allow bool
		log   string
	}{
		{"own user", Row{UID: me, Inode: 7}, nil, true, ""},
		{"root", Row{UID: 0, Inode: 7}, nil, true, ""},
		{"another user", Row{UID: 65534, Inode: 7}, nil, false, "uid=65534"},
		{"a socket no process holds (listed as uid 0)", Row{UID: 0, Inode: 0}, nil, false, "no longer held"},
		{"gone", Row{}, ErrNotFound, false, "socket is gone"},
		{"cannot tell", Row{}, fmt.Errorf("%w: no /proc", ErrUnavailable), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			g := NewGuard("test listener", slog.New(slog.NewTextHandler(&logs, nil)))
			g.uid = me
			g.lookup = func(net.Conn) (Row, error) { return tc.row, tc.err }
			require.Equal(t, tc.allow, g.Allow(fakeConn{}))
			if tc.log != "" {
				require.Contains(t, logs.String(), "local connection refused")
				require.Contains(t, logs.String(), tc.log)
				require.Contains(t, logs.String(), "from=127.0.0.1:50000")
			}
		})
	}
}

func TestGuardLogsRefusalsAtARate(t *testing.T) {
	var logs bytes.Buffer
	g := NewGuard("test listener", slog.New(slog.NewTextHandler(&logs, nil)))
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	g.lookup = func(net.Conn) (Row, error) { return Row{UID: 4242, Inode: 1}, nil }
	for range 5 {
		require.False(t, g.Allow(fakeConn{}))
	}
	require.Equal(t, 1, strings.Count(logs.String(), "\n"), logs.String())
	now = now.Add(logEvery)
	require.False(t, g.Allow(fakeConn{}))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[1], "alsoRefusedSinceLastLine=4")
}
