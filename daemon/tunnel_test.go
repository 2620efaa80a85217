package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tunnel"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

// shortTunnelConfig makes every tunnel timer short, so that a test pausing
// far longer than all of them proves nothing idles out.
func shortTunnelConfig() tunnel.Config {
	c := tunnel.DefaultConfig()
	c.KeepAliveInterval = 100 * time.Millisecond
	c.DeadPeerTimeout = time.Second
	c.HandshakeTimeout = 2 * time.Second
	return c
}

// miniRelay is the relay end of the tunnel, just enough to test the
// daemon: it accepts sessions with a token and opens inbound streams.
type miniRelay struct {
	t     *testing.T
	ln    net.Listener
	token string
	cfg   tunnel.Config

	mu       sync.Mutex
	sessions []*tunnel.Session
	hellos   []tunnel.Hello
	wg       sync.WaitGroup
}

func startMiniRelay(t *testing.T, token string) *miniRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &miniRelay{t: t, ln: ln, token: token, cfg: shortTunnelConfig()}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				s, h, err := tunnel.Server(context.Background(), conn, r.cfg, func(h tunnel.Hello) (tunnel.Welcome, error) {
					r.mu.Lock()
					want := r.token
					r.mu.Unlock()
					if !tunnel.TokenEqual(h.Token, want) {
						return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeBadToken, Message: "bad token"}
					}
					return tunnel.Welcome{RelayVersion: "mini"}, nil
				})
				if err != nil {
					return
				}
				r.mu.Lock()
				r.sessions = append(r.sessions, s)
				r.hellos = append(r.hellos, h)
				r.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(r.kill)
	return r
}

func (r *miniRelay) addr() string { return r.ln.Addr().String() }

// live returns the sessions that are up.
func (r *miniRelay) live() []*tunnel.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tunnel.Session
	for _, s := range r.sessions {
		select {
		case <-s.Done():
		default:
			out = append(out, s)
		}
	}
	return out
}

// open opens an inbound stream as the relay does for a client connection.
func (r *miniRelay) open(ctx context.Context, workload string, port uint16) (*tunnel.Stream, error) {
	live := r.live()
	if len(live) == 0 {
		return nil, errors.New("no session")
	}
	return live[0].Open(ctx, tunnel.Header{Kind: tunnel.KindInbound, Workload: workload, Port: port, Source: "10.0.0.1:5555"})
}

// kill stops the relay like a deleted pod: listener and sessions gone.
func (r *miniRelay) kill() {
	_ = r.ln.Close()
	r.mu.Lock()
	ss := r.sessions
	r.mu.Unlock()
	for _, s := range ss {
		_ = s.Close()
	}
	r.wg.Wait()
}

// relayCluster is a fakeCluster whose DialRelay reaches the current
// miniRelay.
func relayCluster(current func() string) *fakeCluster {
	return &fakeCluster{dial: func(ctx context.Context, _ cluster.Ref) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", current())
	}}
}

// echoServer answers each line with "echo: line" and closes after EOF.
func echoServer(t *testing.T) net.Listener {
	return tunneltest.Serve(t, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := io.WriteString(c, "echo: "+sc.Text()+"\n"); err != nil {
				return
			}
		}
	})
}

func connectTo(t *testing.T, td *testDaemon, toLocal string) api.SandboxStatus {
	t.Helper()
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", toLocal), Wait: true, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	return st
}

func TestInboundToLocalServer(t *testing.T) {
	relay := startMiniRelay(t, "s3cret-token")
	echo := echoServer(t)
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: relayCluster(relay.addr).provider(), Tunnel: &cfg})
	st := connectTo(t, td, echo.Addr().String())
	require.Equal(t, 2, st.Sessions, "pool of 2 by default")
	require.Eventually(t, func() bool { return len(relay.live()) == 2 }, 5*time.Second, 5*time.Millisecond)
	relay.mu.Lock()
	h := relay.hellos[0]
	relay.mu.Unlock()
	require.Equal(t, "alice", h.Sandbox)
	require.Empty(t, h.Token, "the relay side never keeps the token")
	require.Contains(t, h.User, "@")

	ctx := context.Background()
	s, err := relay.open(ctx, "route", 8083)
	require.NoError(t, err)
	_, err = io.WriteString(s, "hello\nworld\n")
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite()) // half-close reaches the local server
	b, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, "echo: hello\necho: world\n", string(b))
	require.NoError(t, s.Close())

	// Status shows traffic and the listening mapping.
	require.Eventually(t, func() bool {
		sb, err := td.client.Sandbox(ctx, "alice")
		return err == nil && sb.BytesIn > 0 && sb.BytesOut > 0 && sb.Mappings[0].Listening && sb.RTT > 0
	}, 5*time.Second, 10*time.Millisecond)
}

func TestInboundRefusedAndUnknownMapping(t *testing.T) {
	relay := startMiniRelay(t, "s3cret-token")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: relayCluster(relay.addr).provider(), Tunnel: &cfg})
	st := connectTo(t, td, closed)
	require.False(t, st.Mappings[0].Listening)

	_, err = relay.open(context.Background(), "route", 8083)
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, tunnel.ReasonRefused, de.Reason)
	require.Contains(t, de.Message, "nothing listening on "+closed)
	require.Contains(t, de.Message, "start your service")

	_, err = relay.open(context.Background(), "route", 9999)
	require.ErrorAs(t, err, &de)
	require.Equal(t, tunnel.ReasonDenied, de.Reason)
	require.Contains(t, de.Message, "no mapping for workload route port 9999")
}

func TestBadTokenIsRetried(t *testing.T) {
	relay := startMiniRelay(t, "another-token")
	cfg := shortTunnelConfig()
	fc := relayCluster(relay.addr)
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true, Timeout: 300 * time.Millisecond}, nil)
	var ce *api.ConnectError
	require.ErrorAs(t, err, &ce)
	// The sandbox, the cause, and the next step; never the token.
	for _, want := range []string{"sandbox alice",
		"the relay's verifier does not match this daemon's token: the relay was re-created by another daemon or its Deployment was edited",
		"bad token", "sbx connect alice --rotate-token"} {
		require.Contains(t, ce.Message, want)
	}
	require.NotContains(t, ce.Message, "s3cret")
	// A bad token is retried, not final: the daemon re-applies its
	// verifier, and once the relay checks it, it connects.
	relay.mu.Lock()
	relay.token = "s3cret-token"
	relay.mu.Unlock()
	waitPhase(t, td.client, "alice", api.PhaseReady)
}

func TestPausedRequestOutlivesEveryTimeout(t *testing.T) {
	relay := startMiniRelay(t, "s3cret-token")
	cfg := shortTunnelConfig()
	// A "debugger" server: reads the request, then stops until resumed.
	got := make(chan struct{})
	var gotOnce sync.Once
	resume := make(chan struct{})
	ln := tunneltest.Serve(t, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil { // the daemon's "is it listening" probe
			return
		}
		gotOnce.Do(func() { close(got) })
		<-resume
		_, _ = io.WriteString(c, "late answer to "+line)
	})

	td := startDaemon(t, Options{newToken: fixedToken, Clusters: relayCluster(relay.addr).provider(), Tunnel: &cfg, StatsInterval: 10 * time.Millisecond})
	connectTo(t, td, ln.Addr().String())
	s, err := relay.open(context.Background(), "route", 8083)
	require.NoError(t, err)
	_, err = io.WriteString(s, "GET /slow\n")
	require.NoError(t, err)
	<-got
	// Paused "at a breakpoint" for many multiples of every timeout in
	// play: keepalive, dead-peer, stats refresh, backoff.
	pause := 3 * max(cfg.DeadPeerTimeout, cfg.KeepAliveInterval, 10*time.Millisecond, fastBackoff().Max)
	time.Sleep(pause)
	close(resume)
	b, err := bufio.NewReader(s).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "late answer to GET /slow\n", b)
	_ = s.Close()
	sb, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Zero(t, sb.Reconnects, "the tunnel stayed up through the pause")
}

func TestSupervisorSurvivesRelayRestart(t *testing.T) {
	echo := echoServer(t)
	cfg := shortTunnelConfig()
	var mu sync.Mutex
	relay := startMiniRelay(t, "s3cret-token")
	current := func() string {
		mu.Lock()
		defer mu.Unlock()
		return relay.addr()
	}
	fc := relayCluster(current)
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg})
	st := connectTo(t, td, echo.Addr().String())

	roundTrip := func(r *miniRelay) {
		s, err := r.open(context.Background(), "route", 8083)
		require.NoError(t, err)
		defer s.Close()
		_, err = io.WriteString(s, "ping\n")
		require.NoError(t, err)
		line, err := bufio.NewReader(s).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "echo: ping\n", line)
	}
	roundTrip(relay)

	for i := 1; i <= 2; i++ {
		// The pod is deleted; a new one comes up elsewhere (new address).
		relay.kill()
		next := startMiniRelay(t, "s3cret-token")
		mu.Lock()
		relay = next
		mu.Unlock()
		require.Eventually(t, func() bool {
			sb, err := td.client.Sandbox(context.Background(), "alice")
			return err == nil && sb.Phase == api.PhaseReady && sb.Reconnects >= i && len(next.live()) > 0
		}, 10*time.Second, 5*time.Millisecond)
		roundTrip(next)
	}
	sb, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Equal(t, st.RoutingKey, sb.RoutingKey)
	require.NotEmpty(t, sb.LastError)
	for _, k := range fc.appliedKeys() {
		require.Equal(t, st.RoutingKey, k, "every re-apply uses the same key")
	}
	fc.mu.Lock()
	renews := fc.renews
	fc.mu.Unlock()
	require.Positive(t, renews)
}
