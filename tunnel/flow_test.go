package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tools/testbed/linkshape"
)

// shapedPair is newSessionPair over a loopback link shaped like link.
func shapedPair(t *testing.T, link linkshape.Link, mod func(*Config)) sessionPair {
	t.Helper()
	sh := linkshape.New(link)
	t.Cleanup(sh.Close)
	a, b := tcpPair(t, func(target string) string {
		addr, err := sh.Proxy(target)
		require.NoError(t, err)
		return addr
	})
	ccfg, scfg := testConfig(), testConfig()
	if mod != nil {
		mod(&ccfg)
		mod(&scfg)
	}
	return pairOver(t, a, b, ccfg, scfg)
}

// sinkServer accepts streams on s and reads each to EOF with read (if
// set, else into io.Discard), then closes it.
func sinkServer(t *testing.T, s *Session, read func(*Stream)) {
	if read == nil {
		read = func(st *Stream) { _, _ = io.Copy(io.Discard, st) }
	}
	serveStreams(t, s, read)
}

// upload opens a stream on s, writes n bytes, half-closes and waits for
// the peer to close.
func upload(t *testing.T, s *Session, n int) {
	t.Helper()
	st, err := s.Open(context.Background(), outboundHeader)
	require.NoError(t, err)
	defer st.Close()
	buf := bytes.Repeat([]byte{0x5a}, 256<<10)
	for sent := 0; sent < n; sent += len(buf) {
		_, err := st.Write(buf[:min(len(buf), n-sent)])
		require.NoError(t, err)
	}
	require.NoError(t, st.CloseWrite())
	_, err = io.Copy(io.Discard, st)
	require.NoError(t, err)
}

// TestWindowsGrowToTheLink: over a 20 ms, 400 Mbit/s link (a
// bandwidth-delay product of 1 MB, four times yamux's initial window) the
// receiving end grows one bulk stream's window beyond its initial 256
// KiB, never beyond MaxStreamWindow, and returns the growth to the budget
// when the stream ends.
func TestWindowsGrowToTheLink(t *testing.T) {
	link := linkshape.Link{Name: "test", RTT: 20 * time.Millisecond, Bandwidth: 400e6}
	p := shapedPair(t, link, nil)
	sinkServer(t, p.server, nil)
	start := time.Now()
	upload(t, p.client, 24<<20)
	took := time.Since(start)
	st := p.server.FlowStats()
	bdp := link.BytesPerSecond() * link.RTT.Seconds()
	t.Logf("24 MiB in %s (%.1f MB/s, link %.1f MB/s); peak window %d KiB (bandwidth-delay product %.0f KiB), rtt %s",
		took.Round(time.Millisecond), 24*1.048576/took.Seconds(), link.BytesPerSecond()/1e6, st.PeakWindow>>10, bdp/1024, st.RTT)
	require.Greater(t, st.PeakWindow, int64(yamuxInitialWindow), "the window grew")
	require.LessOrEqual(t, st.PeakWindow, int64(DefaultMaxStreamWindow))
	require.GreaterOrEqual(t, st.RTT, link.RTT, "the session's round trip includes the link's")
	require.Eventually(t, func() bool { return p.server.FlowStats().Grown == 0 }, 5*time.Second, 10*time.Millisecond,
		"the ended stream's growth is back in the budget: %+v", p.server.FlowStats())

	// A later stream on the same session starts at the window the first
	// one reached.
	st2, err := p.client.Open(context.Background(), outboundHeader)
	require.NoError(t, err)
	defer st2.Close()
	_, err = st2.Write([]byte{1})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		w, _ := p.server.conn.flow.windowOf(st2.ys.StreamID())
		return w == st.PeakWindow
	}, 5*time.Second, 5*time.Millisecond, "the new stream starts at the session's largest window (once the server's ACK is out)")
	require.Equal(t, st.PeakWindow-yamuxInitialWindow, p.server.FlowStats().Grown)
}

// TestWindowGrowthWithinBudgets: streams moving data at once share the
// session's budget and the shared one: their growth never exceeds either,
// whatever the link offers, and is all returned when they end.
func TestWindowGrowthWithinBudgets(t *testing.T) {
	link := linkshape.Link{Name: "test", RTT: 20 * time.Millisecond, Bandwidth: 400e6}
	shared := NewWindowBudget(768 << 10)
	p := shapedPair(t, link, func(c *Config) {
		c.WindowBudget = 1 << 20
		c.SharedWindowBudget = shared
	})
	var peak int64
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			g := p.server.FlowStats().Grown
			mu.Lock()
			peak = max(peak, g, shared.InUse())
			mu.Unlock()
		}
	}()
	sinkServer(t, p.server, nil)
	var up sync.WaitGroup
	for range 4 {
		up.Add(1)
		go func() {
			defer up.Done()
			upload(t, p.client, 8<<20)
		}()
	}
	up.Wait()
	close(stop)
	wg.Wait()
	t.Logf("growth held at most %d KiB of the shared budget's %d KiB", peak>>10, shared.Total()>>10)
	require.Positive(t, peak, "the streams grew")
	require.LessOrEqual(t, peak, shared.Total())
	require.LessOrEqual(t, p.server.FlowStats().PeakWindow, int64(yamuxInitialWindow)+shared.Total())
	require.Eventually(t, func() bool { return shared.InUse() == 0 && p.server.FlowStats().Grown == 0 }, 5*time.Second, 10*time.Millisecond)
}

// TestStalledReaderBuffersOneWindow: a reader that stops reading makes
// its peer stop at the window: the receiving end holds at most the
// initial window for that stream, and the window does not grow.
func TestStalledReaderBuffersOneWindow(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	release := make(chan struct{})
	sinkServer(t, p.server, func(st *Stream) {
		<-release
		_, _ = io.Copy(io.Discard, st)
	})
	st, err := p.client.Open(context.Background(), outboundHeader)
	require.NoError(t, err)
	defer st.Close()
	wrote := make(chan int64, 1)
	go func() {
		buf := make([]byte, 64<<10)
		var n int64
		_ = st.SetWriteDeadline(time.Now().Add(time.Second))
		for {
			k, err := st.Write(buf)
			n += int64(k)
			if err != nil {
				wrote <- n
				return
			}
		}
	}()
	n := <-wrote
	close(release)
	require.LessOrEqual(t, n, int64(yamuxInitialWindow), "the writer stopped at the initial window")
	require.Positive(t, n)
	st2 := p.server.FlowStats()
	require.Equal(t, int64(yamuxInitialWindow), st2.PeakWindow)
}

// TestPeerBeyondItsWindowIsRefused: data beyond what this end granted
// ends the session with ErrProtocol instead of being buffered (yamux
// alone would take up to twice MaxStreamWindow).
func TestPeerBeyondItsWindowIsRefused(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	w := framedWireConn(b, false, newFlowControl(DefaultConfig()))
	go func() {
		_, _ = a.Write(yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 3, 0, nil))
		body := make([]byte, yamuxInitialWindow)
		_, _ = a.Write(yamuxFrame(yamuxTypeData, 0, 3, uint32(len(body)), body))
		_, _ = a.Write(yamuxFrame(yamuxTypeData, 0, 3, 1, []byte{1}))
	}()
	buf := make([]byte, 64<<10)
	var err error
	for err == nil {
		_, err = w.Read(buf)
	}
	require.True(t, errors.Is(err, ErrProtocol), "%v", err)
	require.ErrorContains(t, err, "stream 3")
}

// TestLearnedWindowAfterOwnSYNOrACK: a session that has grown a window
// starts new streams there, but grants the extra only as its own SYN or
// ACK goes out: yamux holds a stream to 256 KiB until it sends those, so
// an earlier grant could get the peer's data refused.
func TestLearnedWindowAfterOwnSYNOrACK(t *testing.T) {
	f := newFlowControl(DefaultConfig())
	f.peak = 1 << 20
	rc := &recordConn{}
	w := framedWireConn(rc, false, f)

	// The peer opens stream 4: nothing is granted on its SYN.
	require.NoError(t, f.sawIncoming(yamuxTypeWindowUpdate, 4, yamuxFlagSYN, 0))
	require.Empty(t, f.takeGrants(nil))
	// Our ACK goes out, then the extra credit.
	_, err := w.Write(yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagACK, 4, 9999, nil))
	require.NoError(t, err)
	require.Equal(t, [][]byte{
		yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagACK, 4, 0, nil),
		yamuxFrame(yamuxTypeWindowUpdate, 0, 4, 1<<20-yamuxInitialWindow, nil),
	}, rc.writes)

	// A stream we open: the extra follows our SYN.
	rc.writes = nil
	_, err = w.Write(yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 5, 9999, nil))
	require.NoError(t, err)
	require.Equal(t, [][]byte{
		yamuxFrame(yamuxTypeWindowUpdate, yamuxFlagSYN, 5, 0, nil),
		yamuxFrame(yamuxTypeWindowUpdate, 0, 5, 1<<20-yamuxInitialWindow, nil),
	}, rc.writes)
	require.Equal(t, 2*(int64(1<<20)-yamuxInitialWindow), f.stats().Grown)
}

// TestNoGrowthUnderOneMillisecond: on loopback the session's round trip is
// under a millisecond, where 256 KiB carries 2 Gbit/s and what pings and
// arrivals measure is scheduling: windows stay at 256 KiB, so bulk data
// queues no deeper in front of other streams' requests.
func TestNoGrowthUnderOneMillisecond(t *testing.T) {
	p := newSessionPair(t, transportTCP, roleSets[0], nil)
	sinkServer(t, p.server, nil)
	// The start's probes measure the round trip before data flows; the
	// estimate only gets smaller after that.
	require.Eventually(t, func() bool { return p.server.FlowStats().RTT > 0 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond) // the rest of the probes
	if rtt := p.server.FlowStats().RTT; rtt >= minGrowthRTT {
		t.Skipf("the machine is too busy for a sub-millisecond loopback round trip (%s)", rtt)
	}
	upload(t, p.client, 128<<20)
	st := p.server.FlowStats()
	t.Logf("loopback: %+v", st)
	require.Equal(t, int64(yamuxInitialWindow), st.PeakWindow)
}

// TestStreamsStartAtMinStreamWindow: with PortForwardConfig a stream's
// window starts at 1 MiB (the credit follows the SYN or ACK), drawn from
// the budget, and returns to it when the stream ends.
func TestStreamsStartAtMinStreamWindow(t *testing.T) {
	pf := PortForwardConfig()
	p := newSessionPair(t, transportTCP, roleSets[0], func(c *Config) {
		c.MinStreamWindow, c.MaxFrameSize = pf.MinStreamWindow, pf.MaxFrameSize
	})
	sinkServer(t, p.server, nil)
	st, err := p.client.Open(context.Background(), outboundHeader)
	require.NoError(t, err)
	id := st.ys.StreamID()
	require.Eventually(t, func() bool {
		w, _ := p.server.conn.flow.windowOf(id)
		return w == int64(pf.MinStreamWindow)
	}, 5*time.Second, 5*time.Millisecond)
	// The client can send the whole window before the server reads a byte.
	require.NoError(t, st.SetWriteDeadline(time.Now().Add(5*time.Second)))
	_, err = st.Write(make([]byte, pf.MinStreamWindow))
	require.NoError(t, err)
	require.NoError(t, st.Close())
	require.Eventually(t, func() bool {
		_, tracked := p.server.conn.flow.windowOf(id)
		return !tracked
	}, 5*time.Second, 5*time.Millisecond)
}
