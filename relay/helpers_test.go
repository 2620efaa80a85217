package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sbx-dev/sbx/tunnel"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "test-token-0123456789abcdef"

// testVerifier is the relay's --token-sha256 for testToken.
var testVerifier = tunnel.VerifierOf(testToken).String()

// podIP is the relay pod's address in tests; LocalAddrs reports it.
var podIP = netip.MustParseAddr("10.1.2.3")

// testLogger logs into buf at debug level (and to stderr with -v), so tests
// can check that the token never appears in any log line.
func testLogger(t testing.TB, buf *syncBuffer) *slog.Logger {
	var w io.Writer = buf
	if testing.Verbose() {
		w = io.MultiWriter(buf, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeCluster stands in for cluster DNS and pod networking: names resolve
// to made-up cluster IPs, and dials to those IPs go to loopback servers.
type fakeCluster struct {
	mu    sync.Mutex
	names fakeResolver
	route map[string]string // "10.96.0.12:8082" -> "127.0.0.1:port"
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{names: fakeResolver{}, route: map[string]string{}}
}

func (c *fakeCluster) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.names.LookupNetIP(ctx, network, host)
}

func (c *fakeCluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	to, ok := c.route[addr]
	c.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connect: no route to host (" + addr + " is not in the fake cluster)")}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// add makes name:port (resolving to ip) reach the loopback server at to.
func (c *fakeCluster) add(name, ip string, port int, to string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name != "" {
		c.names[name] = append(c.names[name], ip)
	}
	c.route[netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String()] = to
}

// harness is one relay under test.
type harness struct {
	t       testing.TB
	relay   *Relay
	addrs   Addrs
	cluster *fakeCluster
	cancel  context.CancelFunc
	done    chan error
	opts    Options
	logs    syncBuffer
}

// loopbackListen binds every listener on loopback with a free port: it is
// the simulator's remapping hook in miniature.
func loopbackListen(network, addr string) (net.Listener, error) {
	return net.Listen(network, "127.0.0.1:0")
}

// startRelay starts a relay for sandbox "alice" with the given extra flags.
func startRelay(t testing.TB, args ...string) *harness {
	t.Helper()
	return startRelayWith(t, nil, args...)
}

// startRelayWith is startRelay with a hook that may change the relay's
// dependencies before it starts.
func startRelayWith(t testing.TB, change func(*Deps), args ...string) *harness {
	t.Helper()
	base := []string{"--sandbox", "alice", "--token-sha256", testVerifier, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--drain-timeout", "5s"}
	opts, err := ParseArgs(append(base, args...))
	require.NoError(t, err)
	h := &harness{t: t, cluster: newFakeCluster(), done: make(chan error, 1), opts: opts}
	cfg := tunnel.DefaultConfig()
	deps := Deps{
		Logger:     testLogger(t, &h.logs),
		Dialer:     h.cluster,
		Resolver:   h.cluster,
		Listen:     loopbackListen,
		Registry:   prometheus.NewRegistry(),
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{podIP}, nil },
		Tunnel:     &cfg,
		Version:    "v0.0.0-test",
	}
	if change != nil {
		change(&deps)
	}
	h.relay, err = New(opts, deps)
	require.NoError(t, err)
	h.addrs = h.relay.Addrs()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.relay.Run(ctx) }()
	t.Cleanup(h.stop)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + h.addrs.Health.String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 5*time.Millisecond)
	return h
}

// stop ends the relay and checks that Run returned nil and that the token
// never reached the logs (which are at debug level in tests).
func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		require.NoError(h.t, err)
		h.done <- nil // later stop calls see it too
	case <-time.After(30 * time.Second):
		h.t.Fatal("relay Run did not return after cancel")
	}
	logs := h.logs.String()
	require.NotEmpty(h.t, logs)
	require.NotContains(h.t, logs, testToken)
	require.NotContains(h.t, logs, "wrong-token")
}

func (h *harness) inbound(port uint16) string {
	a, ok := h.addrs.Inbound[port]
	require.True(h.t, ok, "no inbound listener for container port %d", port)
	return a.String()
}

// metrics scrapes /metrics over HTTP and parses the text format.
func (h *harness) metrics() map[string]*dto.MetricFamily {
	h.t.Helper()
	resp, err := http.Get("http://" + h.addrs.Health.String() + "/metrics")
	require.NoError(h.t, err)
	defer resp.Body.Close()
	require.Equal(h.t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(h.t, err)
	return fams
}

// metric returns the value of name with the given label pairs (0 if absent).
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	return metricValue(h.metrics(), name, labels...)
}

func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// laptop is a stand-in for the daemon: it holds tunnel sessions to the
// relay and serves inbound streams from a table of local addresses.
type laptop struct {
	t        testing.TB
	clientID string
	mu       sync.Mutex
	local    map[string]string // "workload/port" -> local address; missing = refused
	// handle, when set, serves each inbound stream instead of the table.
	handle   func(*tunnel.Stream)
	sessions []*tunnel.Session
	wg       sync.WaitGroup
}

func newLaptop(t testing.TB, clientID string) *laptop {
	l := &laptop{t: t, clientID: clientID, local: map[string]string{}}
	t.Cleanup(l.close)
	return l
}

func (l *laptop) mapLocal(workload string, port uint16, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.local[fmt.Sprintf("%s/%d", workload, port)] = addr
}

// hello is the laptop's Hello with the right token and sandbox.
func (l *laptop) hello() tunnel.Hello {
	return tunnel.Hello{Version: tunnel.ProtocolVersion, Token: testToken, ClientID: l.clientID, Sandbox: "alice", User: "dev@laptop"}
}

// dial connects one session (one port-forward connection, in real life).
func (l *laptop) dial(h *harness, hello tunnel.Hello) (*tunnel.Session, error) {
	return l.dialAddr(h.addrs.Tunnel.String(), hello)
}

// dialAddr connects one session through addr (the relay's tunnel port, or
// a shaped link in front of it).
func (l *laptop) dialAddr(addr string, hello tunnel.Hello) (*tunnel.Session, error) {
	conn, err := net.Dial("tcp", addr)
	require.NoError(l.t, err)
	cfg := tunnel.DefaultConfig()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, _, err := tunnel.Client(ctx, conn, cfg, hello)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	l.mu.Lock()
	l.sessions = append(l.sessions, s)
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.serve(s)
	}()
	return s, nil
}

// connect dials a session and waits until the relay counts want sessions.
func (l *laptop) connect(h *harness, want float64) *tunnel.Session {
	l.t.Helper()
	s, err := l.dial(h, l.hello())
	require.NoError(l.t, err)
	require.Eventually(l.t, func() bool { return h.metric("sbx_relay_sessions") == want }, 10*time.Second, 5*time.Millisecond)
	return s
}

func (l *laptop) serve(s *tunnel.Session) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := s.Accept(context.Background())
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.handle != nil {
				defer st.Close()
				l.handle(st)
				return
			}
			hdr := st.Header()
			key := fmt.Sprintf("%s/%d", hdr.Workload, hdr.Port)
			l.mu.Lock()
			addr, ok := l.local[key]
			l.mu.Unlock()
			if !ok {
				_ = st.Reject(tunnel.ReasonRefused, "dial tcp 127.0.0.1:9 for "+key+": connect: connection refused")
				return
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				_ = st.Reject(tunnel.ReasonOf(err), err.Error())
				return
			}
			if err := st.Accept(); err != nil {
				_ = c.Close()
				return
			}
			_ = tunnel.Pipe(context.Background(), st, c)
		}()
	}
}

func (l *laptop) close() {
	l.mu.Lock()
	ss := l.sessions
	l.sessions = nil
	l.mu.Unlock()
	for _, s := range ss {
		_ = s.Close()
	}
	l.wg.Wait()
}

// echoServer echoes each connection until EOF, then half-closes.
func echoServer(t testing.TB) string {
	t.Helper()
	return tunneltest.Serve(t, tunneltest.Echo).Addr().String()
}

// httpServer answers every request with "hello from <name> <path>".
func httpServer(t testing.TB, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello from %s %s %s", name, r.URL.Path, body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// echoRoundTrip writes msg on a new connection to addr, half-closes and
// returns everything read back.
func echoRoundTrip(t testing.TB, addr, msg string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, msg)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(got)
}

// get fetches url with a fresh connection and returns status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 60 * time.Second}).Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// lineServer answers each line with itself, like a keep-alive protocol;
// the line "slow" is answered only once slow is closed (a laptop process
// paused in a debugger).
func lineServer(t testing.TB, slow <-chan struct{}) string {
	t.Helper()
	stop := make(chan struct{})
	addr := tunneltest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "slow\n" {
				select {
				case <-slow:
				case <-stop:
					return
				}
			}
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}).Addr().String()
	// Runs before Serve's cleanup waits for the handlers.
	t.Cleanup(func() { close(stop) })
	return addr
}
