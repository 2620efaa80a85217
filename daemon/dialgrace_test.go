package daemon

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tunnel"
)

// TestDialThroughGrace: an outbound dial while the link has no live
// session (a relay rollout) waits for one, on whichever link is current,
// instead of failing at once; other errors return at once; the grace and
// the caller's context bound the wait.
func TestDialThroughGrace(t *testing.T) {
	ctx := context.Background()
	old, next := newFakeLink(), newFakeLink()
	var cur atomic.Pointer[fakeLink]
	cur.Store(old)
	current := func() link { return cur.Load() }
	var tries atomic.Int32
	want := &net.TCPConn{}
	dial := func(l link) (net.Conn, error) {
		tries.Add(1)
		if l == link(old) {
			return nil, tunnel.ErrNoSession
		}
		return want, nil
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		cur.Store(next) // the session reconnected
	}()
	c, err := dialThroughGrace(ctx, current, 10*time.Second, dial)
	require.NoError(t, err)
	require.Same(t, want, c)
	require.Greater(t, tries.Load(), int32(1))

	// A refusal is an answer: no waiting.
	refused := errors.New("relay: connection refused")
	calls := 0
	_, err = dialThroughGrace(ctx, current, 10*time.Second, func(link) (net.Conn, error) { calls++; return nil, refused })
	require.ErrorIs(t, err, refused)
	require.Equal(t, 1, calls)

	// No session within the grace, or the caller gives up: the error says so.
	noSession := func(link) (net.Conn, error) { return nil, tunnel.ErrNoSession }
	_, err = dialThroughGrace(ctx, current, 50*time.Millisecond, noSession)
	require.ErrorIs(t, err, tunnel.ErrNoSession)
	require.ErrorContains(t, err, "50ms")
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = dialThroughGrace(cctx, current, 10*time.Second, noSession)
	require.ErrorIs(t, err, tunnel.ErrNoSession)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
