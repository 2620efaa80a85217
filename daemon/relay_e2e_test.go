package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/relay"
	"github.com/sbx-dev/sbx/tunnel"
)

// realRelay is the real relay (package relay) running in-process on
// loopback, as the simulated cluster runs it.
type realRelay struct {
	r      *relay.Relay
	addrs  relay.Addrs
	cancel context.CancelFunc
	done   chan error
}

func startRealRelay(t *testing.T, token string) *realRelay {
	t.Helper()
	opts, err := relay.ParseArgs([]string{
		"--sandbox", "alice", "--token-sha256", tunnel.VerifierOf(token).String(),
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--inbound", "20001=route/8083/http", "--grace", "2s", "--drain-timeout", "1s",
	})
	require.NoError(t, err)
	cfg := shortTunnelConfig()
	r, err := relay.New(opts, relay.Deps{
		Logger:   testLogger(t).With("component", "relay"),
		Listen:   func(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") },
		Registry: prometheus.NewRegistry(),
		Tunnel:   &cfg,
		Version:  "test",
		// Cluster names resolve to loopback stand-ins, as in the
		// simulated cluster.
		Resolver:      loopbackResolver{},
		AllowLoopback: true,
		LocalAddrs:    func() ([]netip.Addr, error) { return nil, nil },
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	rr := &realRelay{r: r, addrs: r.Addrs(), cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	t.Cleanup(rr.stop)
	return rr
}

// stop ends the relay like a deleted pod; safe to call twice.
func (rr *realRelay) stop() {
	rr.cancel()
	err := <-rr.done
	rr.done <- err
}

func (rr *realRelay) url() string {
	return "http://" + rr.addrs.Inbound[20001].String() + "/hello"
}

// localService is the developer's process on the laptop.
func localService(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "from the laptop: %s %s baggage=%q", r.Method, r.URL.Path, r.Header.Get("baggage"))
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
	return ln
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestRealRelayInboundRefusedAndRestart(t *testing.T) {
	svc := localService(t)
	var mu sync.Mutex
	rr := startRealRelay(t, "s3cret-token")
	current := func() *realRelay { mu.Lock(); defer mu.Unlock(); return rr }
	fc := relayCluster(func() string { return current().addrs.Tunnel.String() })
	cfg := shortTunnelConfig()
	logger, logs := capturingLogger(t)
	cfg.Logger = logger
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg, Logger: logger})
	t.Cleanup(func() {
		require.NotContains(t, logs.String(), "s3cret-token", "the token never reaches the daemon's logs")
	})
	st := connectTo(t, td, svc.Addr().String())

	// Keyed request through the relay's inbound port reaches the laptop.
	code, body := get(t, current().url())
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "from the laptop: GET /hello")

	// The relay is deleted and comes back as a new pod (new addresses):
	// the supervisor reconnects with the same routing key.
	for i := 1; i <= 2; i++ {
		current().stop()
		next := startRealRelay(t, "s3cret-token")
		mu.Lock()
		rr = next
		mu.Unlock()
		require.Eventually(t, func() bool {
			sb, err := td.client.Sandbox(context.Background(), "alice")
			return err == nil && sb.Phase == api.PhaseReady && sb.Reconnects >= i
		}, 20*time.Second, 10*time.Millisecond)
		code, body = get(t, next.url())
		require.Equal(t, http.StatusOK, code, body)
	}
	sb, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Equal(t, st.RoutingKey, sb.RoutingKey)

	// The developer stops the local service: the relay answers 502 with
	// the daemon's explanation naming the local address.
	addr := svc.Addr().String()
	require.NoError(t, svc.Close())
	code, body = get(t, current().url())
	require.Equal(t, http.StatusBadGateway, code, body)
	require.Contains(t, body, "nothing listening on "+addr)
	require.Eventually(t, func() bool {
		sb, err := td.client.Sandbox(context.Background(), "alice")
		return err == nil && !sb.Mappings[0].Listening
	}, 10*time.Second, 10*time.Millisecond)
}

func TestRealRelayPausedRequest(t *testing.T) {
	// The local handler stops "at a breakpoint" for several multiples of
	// every timeout in play (tunnel keepalive and dead-peer bound, relay
	// grace and drain) and then answers.
	cfg := shortTunnelConfig()
	pause := 3 * max(cfg.DeadPeerTimeout, 2*time.Second)
	resume := make(chan struct{})
	entered := make(chan struct{}, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-resume
		_, _ = io.WriteString(w, "finally")
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })

	rr := startRealRelay(t, "s3cret-token")
	fc := relayCluster(func() string { return rr.addrs.Tunnel.String() })
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg})
	connectTo(t, td, ln.Addr().String())

	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{}).Get(rr.url())
		if err != nil {
			res <- result{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b)}
	}()
	<-entered
	time.Sleep(pause)
	close(resume)
	r := <-res
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.Equal(t, "finally", r.body)
	sb, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Zero(t, sb.Reconnects)
}

// loopbackResolver resolves every *.svc.cluster.local name to 127.0.0.1.
type loopbackResolver struct{}

func (loopbackResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if strings.HasSuffix(host, ".svc.cluster.local") {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestOutboundThroughRealRelay(t *testing.T) {
	echo := echoServer(t)
	_, port, _ := net.SplitHostPort(echo.Addr().String())
	rr := startRealRelay(t, "s3cret-token")
	cfg := shortTunnelConfig()
	fc := relayCluster(func() string { return rr.addrs.Tunnel.String() })
	fc.waitBlock = make(chan struct{})
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg})
	ctx := context.Background()

	_, err := td.d.DialOutbound(ctx, "nobody", "driver.hotrod.svc.cluster.local:"+port, "127.0.0.1:1")
	require.ErrorContains(t, err, "not connected")

	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1")}, nil)
	require.NoError(t, err)
	waitPhase(t, td.client, "alice", api.PhaseWaitingRelay)
	_, err = td.d.DialOutbound(ctx, "alice", "driver.hotrod.svc.cluster.local:"+port, "127.0.0.1:1")
	require.ErrorContains(t, err, "sandbox alice is not connected (phase waiting-relay)")
	close(fc.waitBlock)
	waitPhase(t, td.client, "alice", api.PhaseReady)

	conn, err := td.d.DialOutbound(ctx, "alice", "driver.hotrod.svc.cluster.local:"+port, "127.0.0.1:40000")
	require.NoError(t, err)
	_, err = io.WriteString(conn, "hi\n")
	require.NoError(t, err)
	require.NoError(t, conn.(interface{ CloseWrite() error }).CloseWrite())
	b, err := io.ReadAll(conn)
	require.NoError(t, err)
	require.Equal(t, "echo: hi\n", string(b))
	require.NoError(t, conn.Close())

	_, err = td.d.DialOutbound(ctx, "alice", "nowhere.example:80", "127.0.0.1:40001")
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, tunnel.ReasonDNS, de.Reason)
}

// TestReplacedDaemonStopsReconnecting: another daemon connecting to the
// sandbox with its token takes it over; this daemon must not take it back
// on its own (the two would take turns forever) and says why.
func TestReplacedDaemonStopsReconnecting(t *testing.T) {
	svc := localService(t)
	rr := startRealRelay(t, "s3cret-token")
	fc := relayCluster(func() string { return rr.addrs.Tunnel.String() })
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg, Logger: testLogger(t)})
	connectTo(t, td, svc.Addr().String())
	before, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)

	// The other daemon: same sandbox and token, another client id.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := net.Dial("tcp", rr.addrs.Tunnel.String())
	require.NoError(t, err)
	other, _, err := tunnel.Client(ctx, conn, cfg, tunnel.Hello{
		Version: tunnel.ProtocolVersion, Token: "s3cret-token", ClientID: "other-laptop",
		Sandbox: "alice", User: "bob@elsewhere",
	})
	require.NoError(t, err)
	defer other.Close()

	var sb api.SandboxStatus
	require.Eventually(t, func() bool {
		sb, err = td.client.Sandbox(context.Background(), "alice")
		return err == nil && sb.Phase == api.PhaseFailed
	}, 20*time.Second, 10*time.Millisecond)
	require.Contains(t, sb.LastError, "replaced")
	require.Contains(t, sb.LastError, "run sbx connect here again")
	require.Equal(t, before.Reconnects, sb.Reconnects, "a replaced daemon does not count it as a reconnect")

	// The newer daemon keeps the sandbox: its session stays up.
	select {
	case <-other.Done():
		t.Fatalf("the newer daemon's session ended: %v", other.Err())
	default:
	}
}

// TestDrainingRelayReplacementReadyLate: the relay's pod drains (deleted
// by hand, or evicted) while its replacement is not ready yet, so the first
// dials to it fail. The daemon keeps trying while the draining relay still
// serves, and moves to the replacement without a reconnect: keyed requests
// never find the sandbox offline.
func TestDrainingRelayReplacementReadyLate(t *testing.T) {
	svc := localService(t)
	old, next := startRealRelay(t, "s3cret-token"), startRealRelay(t, "s3cret-token")
	var mu sync.Mutex
	draining, notReady := false, 2 // dials refused once old drains
	fc := &fakeCluster{dial: func(ctx context.Context, _ cluster.Ref) (net.Conn, error) {
		mu.Lock()
		addr := old.addrs.Tunnel.String()
		if draining {
			if notReady > 0 {
				notReady--
				mu.Unlock()
				return nil, errors.New(`pod hotrod/sbx-alice-relay-new is not ready (phase Running; container relay not ready)`)
			}
			addr = next.addrs.Tunnel.String()
		}
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg, Logger: testLogger(t)})
	connectTo(t, td, svc.Addr().String())
	code, body := get(t, old.url())
	require.Equal(t, http.StatusOK, code, body)

	mu.Lock()
	draining = true
	mu.Unlock()
	old.stop() // SIGTERM: it tells the daemon it drains, then serves until its drain timeout
	require.Eventually(t, func() bool {
		code, _ := get(t, next.url())
		return code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "keyed requests reach the laptop through the replacement")
	mu.Lock()
	require.Zero(t, notReady, "the not-ready replacement was dialled again")
	mu.Unlock()
	sb, err := td.client.Sandbox(context.Background(), "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, sb.Phase)
	require.Zero(t, sb.Reconnects, "moving to a replacement that was late is not a reconnect")
}
