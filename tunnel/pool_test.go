package tunnel

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPool(t *testing.T) {
	for _, r := range roleSets {
		t.Run(r.name, func(t *testing.T) {
			const n = 4
			var pairs []sessionPair
			var mu sync.Mutex
			dead := map[*Session]error{}
			pool := NewPool(nil, func(s *Session, err error) {
				mu.Lock()
				dead[s] = err
				mu.Unlock()
			})
			defer pool.Close()
			deadCount := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(dead)
			}
			for range n {
				p := newSessionPair(t, transportProxy, r, nil)
				echoServer(t, p.server)
				pairs = append(pairs, p)
				pool.Add(p.client)
			}
			require.Equal(t, n, pool.Len())
			require.Len(t, pool.Sessions(), n)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// Open 4n streams and hold them: fewest-first spreads them evenly.
			var held []*Stream
			for range 4 * n {
				st, err := pool.Open(ctx, outboundHeader)
				require.NoError(t, err)
				held = append(held, st)
			}
			for _, p := range pairs {
				require.Equal(t, 4, p.client.NumStreams())
			}
			// Lose one member: it is dropped and reported; the pool goes on.
			pairs[1].proxy.Cut()
			require.Eventually(t, func() bool { return pool.Len() == n-1 }, 10*time.Second, 5*time.Millisecond)
			// onDead runs just after the session leaves the pool: wait for
			// it, and never assert while holding mu (a failing require
			// would leave mu locked and the watcher blocked in onDead).
			require.Eventually(t, func() bool { return deadCount() == 1 }, 10*time.Second, 5*time.Millisecond)
			mu.Lock()
			errDead := dead[pairs[1].client]
			mu.Unlock()
			require.Error(t, errDead)
			for range 6 {
				st, err := pool.Open(ctx, outboundHeader)
				require.NoError(t, err)
				require.NotSame(t, pairs[1].client, st.s)
				_, err = st.Write([]byte("x"))
				require.NoError(t, err)
				held = append(held, st)
			}
			for _, p := range []sessionPair{pairs[0], pairs[2], pairs[3]} {
				require.Equal(t, 6, p.client.NumStreams())
			}
			for _, st := range held {
				_ = st.Close()
			}
			// Lose all: ErrNoSession.
			for _, p := range pairs {
				_ = p.server.Close()
			}
			require.Eventually(t, func() bool { return pool.Len() == 0 }, 10*time.Second, 5*time.Millisecond)
			_, err := pool.Open(ctx, outboundHeader)
			require.ErrorIs(t, err, ErrNoSession)
			require.Eventually(t, func() bool { return deadCount() == n }, 10*time.Second, 5*time.Millisecond)
		})
	}
}

// TestPoolSkipsDeadSession: a session that died but whose watcher has not
// run yet is skipped by Open itself.
func TestPoolSkipsDeadSession(t *testing.T) {
	a := newSessionPair(t, transportPipe, roleSets[0], nil)
	b := newSessionPair(t, transportPipe, roleSets[0], nil)
	echoServer(t, b.server)
	reported := make(chan *Session, 2)
	pool := NewPool(nil, func(s *Session, err error) { reported <- s })
	pool.Add(a.client)
	pool.Add(b.client)
	require.NoError(t, a.server.Close())
	<-a.client.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		st, err := pool.Open(ctx, outboundHeader)
		require.NoError(t, err)
		require.Same(t, b.client, st.s)
		require.NoError(t, st.Close())
	}
	require.Same(t, a.client, <-reported)
	require.NoError(t, pool.Close())
	require.Equal(t, 0, pool.Len())
	<-b.client.Done()
	// Adding to a closed pool closes the session.
	c := newSessionPair(t, transportPipe, roleSets[0], nil)
	pool.Add(c.client)
	<-c.client.Done()
}
