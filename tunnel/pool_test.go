package tunnel

import (
	"context"
	"io"
	"math"
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

// TestPoolAvoidsBusySession: among sessions with as many open streams, a
// new stream goes to the one not carrying a transfer; streams still come
// first (a transfer that has just begun registers too slowly to outweigh
// them); and a transfer the pool only learns of long after it ended
// counts for little.
func TestPoolAvoidsBusySession(t *testing.T) {
	busy := newSessionPair(t, transportTCP, roleSets[0], nil)
	idle := newSessionPair(t, transportTCP, roleSets[0], nil)
	echoServer(t, busy.server)
	echoServer(t, idle.server)
	now := time.Unix(1_000_000, 0)
	pool := NewPool(nil, nil)
	pool.now = func() time.Time { return now }
	defer pool.Close()
	pool.Add(busy.client) // first: the pick without traffic
	pool.Add(idle.client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(s *Session) {
		t.Helper()
		st, err := s.Open(ctx, outboundHeader)
		require.NoError(t, err)
		t.Cleanup(func() { _ = st.Close() })
	}
	pick := func() *Session {
		t.Helper()
		st, err := pool.Open(ctx, outboundHeader)
		require.NoError(t, err)
		t.Cleanup(func() { _ = st.Close() })
		return st.s
	}
	// busy echoes 8 MiB (16 MiB of payload both ways) on one stream;
	// idle holds one stream that moves nothing.
	transfer := func() {
		t.Helper()
		st, err := busy.client.Open(ctx, outboundHeader)
		require.NoError(t, err)
		t.Cleanup(func() { _ = st.Close() })
		echoBytes(t, st, 8<<20)
	}
	transfer()
	open(idle.client)
	now = now.Add(100 * time.Millisecond)
	require.Same(t, idle.client, pick(), "1 stream each: the one not moving data")

	// Streams first: 1 against 2, whatever busy moved.
	require.Same(t, busy.client, pick(), "fewer streams wins over traffic")

	// A transfer the pool first sees 100 s after it last looked is
	// spread over those 100 s: about 1% of it counts.
	pool.mu.Lock()
	before := pool.load[busy.client].load
	pool.mu.Unlock()
	transfer()
	now = now.Add(100 * time.Second)
	pool.mu.Lock()
	l := pool.load[busy.client].observe(now, busy.client.payloadBytes())
	pool.mu.Unlock()
	require.InDelta(t, before*math.Exp(-100)+float64(16<<20)/100, l, float64(16<<20)/1000, "spread over the 100 s since the last look")
}

// echoBytes sends n bytes through an echo stream and reads them back.
func echoBytes(t *testing.T, st *Stream, n int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, n))
		errc <- err
	}()
	_, err := io.CopyN(io.Discard, st, int64(n))
	require.NoError(t, err)
	require.NoError(t, <-errc)
}

func TestSessionLoadObserve(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	l := &sessionLoad{at: t0}
	require.InDelta(t, 1000, l.observe(t0, 1000), 1e-9, "bytes seen at once count whole")
	require.InDelta(t, 1000*math.Exp(-1), l.observe(t0.Add(loadTau), 1000), 1e-6, "nothing new: decays by e per loadTau")
	// 1000 more bytes over 2 loadTau: spread evenly, (1-e^-2)/2 of them.
	got := l.observe(t0.Add(3*loadTau), 2000)
	require.InDelta(t, 1000*math.Exp(-3)+1000*(1-math.Exp(-2))/2, got, 1e-6)
}

// TestPoolAvoidsDrainingSession: a peer that said it is draining (a relay
// pod shutting down in a rollout) keeps serving its streams, but new ones
// go to the other sessions while there are any.
func TestPoolAvoidsDrainingSession(t *testing.T) {
	a := newSessionPair(t, transportPipe, roleSets[0], nil)
	b := newSessionPair(t, transportPipe, roleSets[0], nil)
	echoServer(t, a.server)
	echoServer(t, b.server)
	pool := NewPool(nil, nil)
	defer pool.Close()
	pool.Add(a.client)
	pool.Add(b.client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held, err := pool.Open(ctx, outboundHeader) // on a or b
	require.NoError(t, err)
	defer held.Close()

	a.server.NotifyDraining("relay shutting down (rollout)")
	a.server.NotifyDraining("twice is once")
	select {
	case <-a.client.Draining():
	case <-time.After(10 * time.Second):
		t.Fatal("Draining never closed")
	}
	require.Equal(t, "relay shutting down (rollout)", a.client.DrainReason())
	for range 5 {
		st, err := pool.Open(ctx, outboundHeader)
		require.NoError(t, err)
		require.Same(t, b.client, st.s, "new streams avoid the draining session")
		defer st.Close()
	}
	// The draining session still serves what it has, and when it is all
	// there is, new streams too.
	require.NoError(t, b.server.Close())
	<-b.client.Done()
	st, err := pool.Open(ctx, outboundHeader)
	require.NoError(t, err)
	require.Same(t, a.client, st.s)
	_, err = st.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(st, buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf))
	require.NoError(t, st.Close())
}
