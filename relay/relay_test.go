package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

func TestInboundRoundTrip(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http", "--inbound", "20002=echo/7")
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("route", 8083, httpServer(t, "route"))
	lap.mapLocal("echo", 7, echoServer(t))
	lap.connect(h, 1)

	code, body := get(t, "http://"+h.inbound(20001)+"/dispatch")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "hello from route /dispatch ", body)

	// TCP with half-close: the echo server only answers after our EOF.
	msg := strings.Repeat("0123456789", 100_000)
	require.Equal(t, msg, echoRoundTrip(t, h.inbound(20002), msg))

	fams := h.metrics()
	require.Equal(t, 2.0, metricValue(fams, "sbx_relay_streams_total", "kind", "inbound"))
	require.GreaterOrEqual(t, metricValue(fams, "sbx_relay_bytes_total", "direction", "to_laptop"), float64(len(msg)))
	require.GreaterOrEqual(t, metricValue(fams, "sbx_relay_bytes_total", "direction", "from_laptop"), float64(len(msg)))
	require.Eventually(t, func() bool { return h.metric("sbx_relay_streams_open", "kind", "inbound") == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_handshakes_total", "result", "ok"))
}

func TestOutbound(t *testing.T) {
	h := startRelay(t)
	h.cluster.add("driver.hotrod.svc.cluster.local", "10.96.0.12", 8082, echoServer(t))
	lap := newLaptop(t, "laptop-1")
	s := lap.connect(h, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "driver.hotrod.svc.cluster.local:8082", Source: "127.0.0.1:5555"})
	require.NoError(t, err)
	msg := strings.Repeat("outbound ", 50_000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.WriteString(st, msg)
		_ = st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	wg.Wait()
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
	require.NoError(t, st.Close())

	require.Eventually(t, func() bool {
		fams := h.metrics()
		return metricValue(fams, "sbx_relay_streams_total", "kind", "outbound") == 1 &&
			metricValue(fams, "sbx_relay_streams_open", "kind", "outbound") == 0 &&
			metricValue(fams, "sbx_relay_bytes_total", "direction", "to_laptop") >= float64(len(msg))
	}, 10*time.Second, 5*time.Millisecond)
}

func TestOutboundRefused(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http")
	// A closed port in the "cluster": nothing listens there.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	require.NoError(t, closed.Close())
	h.cluster.add("down.hotrod.svc.cluster.local", "10.96.0.20", 80, closedAddr)
	h.cluster.add("metadata.google.internal", "169.254.169.254", 80, echoServer(t))
	h.cluster.add("relay-self.example.com", podIP.String(), 0, "")
	healthPort := h.addrs.Health.(*net.TCPAddr).Port

	lap := newLaptop(t, "laptop-1")
	s := lap.connect(h, 1)
	tests := []struct {
		target string
		reason tunnel.Reason
		msg    string
	}{
		{"169.254.169.254:80", tunnel.ReasonDenied, "relay refuses to dial 169.254.169.254:80: link-local (cloud metadata service)"},
		{"metadata.google.internal:80", tunnel.ReasonDenied, "it resolves to 169.254.169.254"},
		{"[fd00:ec2::254]:80", tunnel.ReasonDenied, "AWS IPv6 metadata"},
		{"127.0.0.1:" + strconv.Itoa(healthPort), tunnel.ReasonDenied, "loopback addresses are the relay pod itself"},
		{podIP.String() + ":" + strconv.Itoa(healthPort), tunnel.ReasonDenied, "is the relay's own port"},
		{podIP.String() + ":20001", tunnel.ReasonDenied, "10.1.2.3:20001 is the relay's own port"},
		{"relay-self.example.com:" + strconv.Itoa(healthPort), tunnel.ReasonDenied, "it resolves to 10.1.2.3"},
		{"nope.hotrod.svc.cluster.local:80", tunnel.ReasonDNS, "resolving nope.hotrod.svc.cluster.local in the cluster"},
		{"down.hotrod.svc.cluster.local:80", tunnel.ReasonRefused, "relay dialing down.hotrod.svc.cluster.local:80 in the cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := s.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: tt.target})
			if st != nil {
				_ = st.Close()
			}
			var de *tunnel.DialError
			require.ErrorAs(t, err, &de)
			require.Equal(t, tt.reason, de.Reason, de.Message)
			require.Contains(t, de.Message, tt.msg)
		})
	}
	// The laptop may not open inbound streams towards the relay.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = s.Open(ctx, tunnel.Header{Kind: tunnel.KindInbound, Workload: "route", Port: 8083})
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, tunnel.ReasonProtocol, de.Reason)
	require.Contains(t, de.Message, "only accepts outbound streams")

	fams := h.metrics()
	require.Equal(t, 7.0, metricValue(fams, "sbx_relay_dial_errors_total", "reason", "denied"))
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_dial_errors_total", "reason", "dns"))
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_dial_errors_total", "reason", "refused"))
	require.Equal(t, 0.0, metricValue(fams, "sbx_relay_streams_open", "kind", "outbound"))
}

func TestHandshakeRefused(t *testing.T) {
	h := startRelay(t)
	lap := newLaptop(t, "laptop-1")

	bad := lap.hello()
	bad.Token = "wrong-token"
	_, err := lap.dial(h, bad)
	require.ErrorIs(t, err, tunnel.ErrBadToken)
	require.NotContains(t, err.Error(), testToken)

	other := lap.hello()
	other.Sandbox = "bob"
	_, err = lap.dial(h, other)
	require.ErrorIs(t, err, tunnel.ErrSandboxMismatch)
	require.Contains(t, err.Error(), "this relay serves sandbox alice, not bob")

	// The relay counts a refusal after sending it; poll.
	require.Eventually(t, func() bool {
		fams := h.metrics()
		return metricValue(fams, "sbx_relay_handshakes_total", "result", "bad_token") == 1 &&
			metricValue(fams, "sbx_relay_handshakes_total", "result", "sandbox_mismatch") == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 0.0, h.metric("sbx_relay_sessions"))
}

func TestGraceHoldsUntilLaptopConnects(t *testing.T) {
	h := startRelay(t, "--grace", "60s", "--inbound", "20001=route/8083/http", "--inbound", "20002=echo/7")
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("route", 8083, httpServer(t, "route"))
	lap.mapLocal("echo", 7, echoServer(t))

	type result struct {
		code int
		body string
	}
	httpRes := make(chan result, 1)
	echoRes := make(chan string, 1)
	go func() {
		code, body := get(t, "http://"+h.inbound(20001)+"/while-offline")
		httpRes <- result{code, body}
	}()
	go func() { echoRes <- echoRoundTrip(t, h.inbound(20002), "held bytes") }()

	require.Eventually(t, func() bool { return h.metric("sbx_relay_held_connections") == 2 }, 10*time.Second, 5*time.Millisecond)
	lap.connect(h, 1)

	r := <-httpRes
	require.Equal(t, http.StatusOK, r.code)
	require.Equal(t, "hello from route /while-offline ", r.body)
	require.Equal(t, "held bytes", <-echoRes)
	fams := h.metrics()
	require.Equal(t, 0.0, metricValue(fams, "sbx_relay_held_connections"))
	require.Equal(t, 2.0, metricValue(fams, "sbx_relay_held_connections_total"))
	require.Equal(t, 0.0, metricValue(fams, "sbx_relay_http_answers_total", "code", "503"))
}

func TestGraceExpires(t *testing.T) {
	h := startRelay(t, "--grace", "50ms", "--inbound", "20001=route/8083/http", "--inbound", "20002=echo/7", "--inbound", "20003=grpcsvc/9090/grpc")

	code, body := get(t, "http://"+h.inbound(20001)+"/late")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, `sbx: sandbox "alice" is waiting for its laptop since the relay started at`)
	require.Contains(t, body, "no laptop is connected to its relay")

	// TCP ports are closed: no bytes, just the end.
	c, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, _ = c.Write([]byte("anyone?"))
	got, _ := io.ReadAll(c)
	require.Empty(t, got)
	require.NoError(t, c.Close())

	// Once a laptop was there and left, the body says since when.
	lap := newLaptop(t, "laptop-1")
	s := lap.connect(h, 1)
	before := time.Now().UTC().Add(-time.Second).Truncate(time.Second)
	require.NoError(t, s.Close())
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 0 }, 10*time.Second, 5*time.Millisecond)
	code, body = get(t, "http://"+h.inbound(20001)+"/later")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, `sbx: sandbox "alice" is offline since `)
	since, err := time.Parse(time.RFC3339, strings.Fields(strings.SplitN(body, "offline since ", 2)[1])[0])
	require.NoError(t, err)
	require.False(t, since.Before(before), "offline since %v, disconnected after %v", since, before)

	// gRPC over h2c (what the mesh sends to a grpc port) gets UNAVAILABLE.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "http://"+h.inbound(20003)+"/hotrod.Route/FindRoute", strings.NewReader("\x00\x00\x00\x00\x00"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, "14", resp.Header.Get("Grpc-Status"))
	require.Contains(t, resp.Header.Get("Grpc-Message"), `sbx: sandbox "alice" is offline since`)

	fams := h.metrics()
	require.Equal(t, 3.0, metricValue(fams, "sbx_relay_http_answers_total", "code", "503"))
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_inbound_closed_total", "reason", "offline"))
	require.Equal(t, 0.0, metricValue(fams, "sbx_relay_held_connections"))
}

func TestMaxHeld(t *testing.T) {
	h := startRelay(t, "--grace", "60s", "--max-held", "0", "--inbound", "20001=route/8083/http")
	code, body := get(t, "http://"+h.inbound(20001)+"/")
	require.Equal(t, http.StatusServiceUnavailable, code, "nothing may be held: answered at once")
	require.Contains(t, body, "alice")
}

func TestLaptopRefusesInbound(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http", "--inbound", "20002=echo/7")
	lap := newLaptop(t, "laptop-1") // nothing mapped: every inbound stream is refused
	lap.connect(h, 1)

	code, body := get(t, "http://"+h.inbound(20001)+"/dispatch")
	require.Equal(t, http.StatusBadGateway, code)
	require.Equal(t, "sbx: sandbox \"alice\": the laptop could not deliver this request to the local process for route port 8083 (refused).\n"+
		"The laptop says: dial tcp 127.0.0.1:9 for route/8083: connect: connection refused\n"+
		"Start (or restart) the local process on that address, then retry.\n", body, "the local address that refused is named")

	c, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	got, _ := io.ReadAll(c)
	require.Empty(t, got)
	require.NoError(t, c.Close())

	fams := h.metrics()
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_http_answers_total", "code", "502"))
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_inbound_closed_total", "reason", "refused"))
}

func TestClientReplacement(t *testing.T) {
	h := startRelay(t, "--inbound", "20001=route/8083/http")
	old := newLaptop(t, "old-daemon")
	old.mapLocal("route", 8083, httpServer(t, "old"))
	s1 := old.connect(h, 1)
	s2 := old.connect(h, 2) // same client id: pooled

	code, body := get(t, "http://"+h.inbound(20001)+"/")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "hello from old / ", body)

	fresh := newLaptop(t, "new-daemon")
	fresh.mapLocal("route", 8083, httpServer(t, "new"))
	fresh.connect(h, 1)

	for _, s := range []*tunnel.Session{s1, s2} {
		select {
		case <-s.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("old session not closed after replacement")
		}
		var pc *tunnel.PeerClosedError
		require.ErrorAs(t, s.Err(), &pc)
		require.Contains(t, pc.Reason, "replaced by a newer sbx daemon")
		require.ErrorIs(t, s.Err(), tunnel.ErrReplaced, "a replaced daemon must be able to tell it should stop reconnecting")
	}
	code, body = get(t, "http://"+h.inbound(20001)+"/")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "hello from new / ", body)
	fams := h.metrics()
	require.Equal(t, 2.0, metricValue(fams, "sbx_relay_sessions_replaced_total"))
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_sessions"))
}

func TestPoolSpreadsAndSurvivesSessionLoss(t *testing.T) {
	h := startRelay(t, "--grace", "60s", "--inbound", "20002=echo/7")
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("echo", 7, echoServer(t))
	s1 := lap.connect(h, 1)
	lap.connect(h, 2)
	require.NoError(t, s1.Close())
	require.Eventually(t, func() bool { return h.metric("sbx_relay_sessions") == 1 }, 10*time.Second, 5*time.Millisecond)
	for i := range 5 {
		msg := fmt.Sprintf("message %d", i)
		require.Equal(t, msg, echoRoundTrip(t, h.inbound(20002), msg))
	}
}

func TestDrainOnShutdown(t *testing.T) {
	h := startRelay(t, "--inbound", "20002=echo/7", "--drain-timeout", "60s", "--drain-delay", "0")
	h.cluster.add("driver.hotrod.svc.cluster.local", "10.96.0.12", 8082, echoServer(t))
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("echo", 7, echoServer(t))
	s := lap.connect(h, 1)

	c, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "before ")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.metric("sbx_relay_streams_open", "kind", "inbound") == 1 }, 10*time.Second, 5*time.Millisecond)

	h.cancel() // SIGTERM
	// The laptop hears at once that the relay drains, so it can move to
	// the pod that replaces it.
	select {
	case <-s.Draining():
		require.Contains(t, s.DrainReason(), "relay shutting down")
	case <-time.After(10 * time.Second):
		t.Fatal("the laptop was not told that the relay drains")
	}
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + h.addrs.Health.String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 10*time.Second, 5*time.Millisecond, "not ready while draining")

	// New connections are refused; the open stream still works, and so
	// do the laptop's calls to the cluster while it has no other session.
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", h.inbound(20002))
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, 10*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "driver.hotrod.svc.cluster.local:8082"})
	require.NoError(t, err)
	_, err = io.WriteString(out, "during the drain")
	require.NoError(t, err)
	require.NoError(t, out.CloseWrite())
	b, err := io.ReadAll(out)
	require.NoError(t, err)
	require.Equal(t, "during the drain", string(b))
	require.NoError(t, out.Close())

	_, err = io.WriteString(c, "after")
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "before after", string(got))

	select {
	case err := <-h.done:
		require.NoError(t, err)
		h.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the last stream ended")
	}
	<-s.Done()
	var pc *tunnel.PeerClosedError
	require.ErrorAs(t, s.Err(), &pc)
	require.Contains(t, pc.Reason, "relay shutting down")
}

// TestDrainDelayServesWhileTheMeshCatchesUp: after SIGTERM the mesh keeps
// sending new connections for a while (endpoint removal is asynchronous);
// while its laptop is connected the relay serves them, and closes the port
// once the laptop has gone.
func TestDrainDelayServesWhileTheMeshCatchesUp(t *testing.T) {
	h := startRelay(t, "--inbound", "20002=echo/7", "--drain-timeout", "2m", "--drain-delay", "1m")
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("echo", 7, echoServer(t))
	s := lap.connect(h, 1)
	h.cancel()
	<-s.Draining()
	require.Equal(t, "late", echoRoundTrip(t, h.inbound(20002), "late"), "a connection after SIGTERM is served")

	// The laptop moved to the replacement: nothing can serve the port
	// any more, so it closes (a caller's proxy retries elsewhere).
	require.NoError(t, s.Close())
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", h.inbound(20002))
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, 10*time.Second, 5*time.Millisecond)
	select {
	case err := <-h.done:
		require.NoError(t, err)
		h.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the laptop left")
	}
}

// TestDrainClosesConnectionsWaitingForTheirCaller: a keep-alive
// connection that has had its answer does not hold the drain; one waiting
// for the laptop's answer does, until it has it.
func TestDrainClosesConnectionsWaitingForTheirCaller(t *testing.T) {
	h := startRelay(t, "--inbound", "20002=echo/7", "--drain-timeout", "60s", "--drain-delay", "0")
	lap := newLaptop(t, "laptop-1")
	slow := make(chan struct{})
	lap.mapLocal("echo", 7, lineServer(t, slow))
	lap.connect(h, 1)

	// Two connections: one has had its answer, one waits for it.
	idle, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer idle.Close()
	br := bufio.NewReader(idle)
	_, err = io.WriteString(idle, "one\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "one\n", line)

	busy, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer busy.Close()
	_, err = io.WriteString(busy, "slow\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.metric("sbx_relay_streams_open", "kind", "inbound") == 2 }, 10*time.Second, 5*time.Millisecond)

	h.cancel()
	// The idle one is closed soon: the caller reads EOF.
	require.NoError(t, idle.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = br.ReadString('\n')
	require.ErrorIs(t, err, io.EOF)
	require.Eventually(t, func() bool { return h.metric("sbx_relay_idle_closed_total", "reason", "drain") == 1 }, 10*time.Second, 5*time.Millisecond)

	// The busy one gets its answer however long the laptop takes.
	time.Sleep(2 * drainQuiet)
	close(slow)
	require.NoError(t, busy.SetReadDeadline(time.Now().Add(30*time.Second)))
	line, err = bufio.NewReader(busy).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "slow\n", line)
	select {
	case err := <-h.done:
		require.NoError(t, err)
		h.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the laptop left")
	}
}

// TestIdleTimeout: a connection that has had its answer and sent nothing
// for --idle-timeout is closed; one waiting for the laptop is not.
// TestIdleTimeout: once more than half the stream slots are in use, a
// connection that has had its answer and stayed quiet for --idle-timeout
// is closed; one waiting for the laptop is not.
func TestIdleTimeout(t *testing.T) {
	h := startRelay(t, "--inbound", "20002=echo/7", "--idle-timeout", "300ms", "--max-streams", "2")
	lap := newLaptop(t, "laptop-1")
	slow := make(chan struct{})
	lap.mapLocal("echo", 7, lineServer(t, slow))
	lap.connect(h, 1)

	idle, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer idle.Close()
	br := bufio.NewReader(idle)
	_, err = io.WriteString(idle, "one\n")
	require.NoError(t, err)
	_, err = br.ReadString('\n')
	require.NoError(t, err)

	busy, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer busy.Close()
	_, err = io.WriteString(busy, "slow\n")
	require.NoError(t, err)

	require.NoError(t, idle.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = br.ReadString('\n')
	require.ErrorIs(t, err, io.EOF, "the idle connection is closed")
	require.Eventually(t, func() bool { return h.metric("sbx_relay_idle_closed_total", "reason", "idle") == 1 }, 10*time.Second, 5*time.Millisecond)
	// Well past the timeout, the waiting request still gets its answer.
	time.Sleep(time.Second)
	close(slow)
	require.NoError(t, busy.SetReadDeadline(time.Now().Add(30*time.Second)))
	line, err := bufio.NewReader(busy).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "slow\n", line)
}

// TestQuietStreamKeptWithSlotsToSpare: a connection whose last bytes went
// to the caller and that stays quiet past --idle-timeout — a keep-alive
// connection, or a response streaming with long gaps (server-sent events),
// which the relay cannot tell apart and Istio keeps open — is not closed
// while the relay has stream slots to spare.
func TestQuietStreamKeptWithSlotsToSpare(t *testing.T) {
	h := startRelay(t, "--inbound", "20002=echo/7", "--idle-timeout", "200ms", "--max-streams", "4")
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("echo", 7, echoServer(t))
	lap.connect(h, 1)

	c, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer c.Close()
	buf := make([]byte, 5)
	for _, ev := range []string{"evt-1", "evt-2", "evt-3"} {
		_, err = io.WriteString(c, ev)
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err, "the connection survived a quiet spell longer than --idle-timeout")
		require.Equal(t, ev, string(buf))
		time.Sleep(time.Second) // five idle timeouts, the relay looks every 50 ms
	}
	require.Zero(t, h.metric("sbx_relay_idle_closed_total", "reason", "idle"))
}

func TestDrainTimeoutCutsStreams(t *testing.T) {
	h := startRelay(t, "--inbound", "20002=echo/7", "--drain-timeout", "50ms")
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("echo", 7, echoServer(t))
	lap.connect(h, 1)
	c, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { return h.metric("sbx_relay_streams_open", "kind", "inbound") == 1 }, 10*time.Second, 5*time.Millisecond)

	h.cancel()
	select {
	case err := <-h.done:
		require.NoError(t, err)
		h.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the drain timeout")
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = io.ReadAll(c)
	if err != nil {
		require.False(t, errors.Is(err, context.DeadlineExceeded))
	}
}

func TestNewFailsOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	opts, err := ParseArgs([]string{"--sandbox", "alice", "--token-sha256", testVerifier, "--listen", busy.Addr().String(), "--health-listen", "127.0.0.1:0"})
	require.NoError(t, err)
	_, err = New(opts, Deps{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "binding the tunnel listener on "+busy.Addr().String())
}

func TestHealthEndpoints(t *testing.T) {
	h := startRelay(t)
	code, body := get(t, "http://"+h.addrs.Health.String()+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = get(t, "http://"+h.addrs.Health.String()+"/readyz")
	require.Equal(t, http.StatusOK, code, "an offline laptop does not make the relay unready")
	require.Contains(t, body, "ready; laptop offline since ")

	lap := newLaptop(t, "laptop-1")
	lap.connect(h, 1)
	_, body = get(t, "http://"+h.addrs.Health.String()+"/readyz")
	require.Equal(t, "ready; laptop online: 1 session(s) from client laptop-1\n", body)
	require.Equal(t, 1.0, h.metric("sbx_relay_ready"))

	code, _ = get(t, "http://"+h.addrs.Health.String()+"/nope")
	require.Equal(t, http.StatusNotFound, code)
}

func TestCloseWithoutRun(t *testing.T) {
	opts, err := ParseArgs([]string{"--sandbox", "alice", "--token-sha256", testVerifier, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--inbound", "20001=route/8083"})
	require.NoError(t, err)
	r, err := New(opts, Deps{Listen: loopbackListen})
	require.NoError(t, err)
	addrs := r.Addrs()
	require.NoError(t, r.Close())
	for _, a := range []net.Addr{addrs.Tunnel, addrs.Health, addrs.Inbound[20001]} {
		l, err := net.Listen("tcp", a.String())
		require.NoError(t, err, "%s is free again after Close", a)
		require.NoError(t, l.Close())
	}
}

// TestMaxStreams: at --max-streams, inbound HTTP is answered 503, inbound
// TCP closed and outbound streams refused, each saying why; a finished
// stream frees its slot.
func TestMaxStreams(t *testing.T) {
	h := startRelay(t, "--max-streams", "2", "--inbound", "20001=route/8083/http", "--inbound", "20002=echo/7")
	h.cluster.add("driver.hotrod.svc.cluster.local", "10.96.0.12", 8082, echoServer(t))
	lap := newLaptop(t, "laptop-1")
	lap.mapLocal("route", 8083, httpServer(t, "route"))
	lap.mapLocal("echo", 7, echoServer(t))
	s := lap.connect(h, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func() (*tunnel.Stream, error) {
		return s.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "driver.hotrod.svc.cluster.local:8082", Source: "127.0.0.1:5555"})
	}
	var held []*tunnel.Stream
	for range 2 {
		st, err := open()
		require.NoError(t, err)
		held = append(held, st)
	}

	_, err := open()
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	require.Contains(t, de.Message, "limit of 2 streams")
	require.Contains(t, de.Message, "raise relayMaxStreams in the sbx config", "says how to raise the cap")
	require.Contains(t, de.Message, "bounds its memory")

	code, body := get(t, "http://"+h.inbound(20001)+"/")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "limit of 2 connections")
	require.Contains(t, body, "raise it with relayMaxStreams in the sbx config")

	c, err := net.Dial("tcp", h.inbound(20002))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF, "TCP inbound is closed at the limit")
	require.NoError(t, c.Close())

	fams := h.metrics()
	require.Equal(t, 1.0, metricValue(fams, "sbx_relay_streams_refused_total", "kind", "outbound"))
	require.Equal(t, 2.0, metricValue(fams, "sbx_relay_streams_refused_total", "kind", "inbound"))

	// A finished stream frees its slot.
	require.NoError(t, held[0].Close())
	require.Eventually(t, func() bool {
		st, err := open()
		if err != nil {
			return false
		}
		held[0] = st
		return true
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "hello from route / ", func() string {
		require.NoError(t, held[1].Close())
		var b string
		require.Eventually(t, func() bool {
			code, b = get(t, "http://"+h.inbound(20001)+"/")
			return code == http.StatusOK
		}, 10*time.Second, 10*time.Millisecond)
		return b
	}())
	for _, st := range held {
		_ = st.Close()
	}
}

// TestMaxStreamsAnswerHoldsNoSlot: a connection the laptop refused is
// answered (here: a client that sends no request keeps the 502 answer
// waiting) without keeping one of --max-streams, which bound only the
// streams that can buffer.
func TestMaxStreamsAnswerHoldsNoSlot(t *testing.T) {
	h := startRelay(t, "--max-streams", "1", "--inbound", "20001=route/8083/http")
	h.cluster.add("driver.hotrod.svc.cluster.local", "10.96.0.12", 8082, echoServer(t))
	lap := newLaptop(t, "laptop-1") // nothing mapped: every inbound stream is refused
	s := lap.connect(h, 1)

	c, err := net.Dial("tcp", h.inbound(20001))
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool {
		return metricValue(h.metrics(), "sbx_relay_http_answers_total", "code", "502") == 1
	}, 10*time.Second, 5*time.Millisecond, "the relay answers the refused connection")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: "driver.hotrod.svc.cluster.local:8082", Source: "127.0.0.1:5555"})
	require.NoError(t, err, "the 502 still being answered holds no stream slot")
	require.NoError(t, st.Close())
	require.Equal(t, 0.0, metricValue(h.metrics(), "sbx_relay_streams_refused_total", "kind", "outbound"))
}

// TestHelloCheckedAgainstVerifier: the relay knows only the token's
// SHA-256. The daemon's token is accepted; another token, or none, is
// refused as a bad token, without the relay ever having held the token.
func TestHelloCheckedAgainstVerifier(t *testing.T) {
	h := startRelay(t)
	require.Equal(t, tunnel.VerifierOf(testToken), h.opts.TokenVerifier)
	lap := newLaptop(t, "laptop-1")
	for name, tok := range map[string]string{"wrong": "another-token", "empty": "", "the verifier itself": testVerifier} {
		hello := lap.hello()
		hello.Token = tok
		_, err := lap.dial(h, hello)
		require.ErrorIs(t, err, tunnel.ErrBadToken, name)
		require.Contains(t, err.Error(), "is not this relay's --token-sha256 "+testVerifier[:12], name)
	}
	// The relay counts a refusal once its side of the handshake is over,
	// which may be after the laptop has read it.
	require.Eventually(t, func() bool {
		return metricValue(h.metrics(), "sbx_relay_handshakes_total", "result", "bad_token") == 3
	}, 10*time.Second, 5*time.Millisecond)
	lap.connect(h, 1)
	require.Equal(t, 1.0, metricValue(h.metrics(), "sbx_relay_handshakes_total", "result", "ok"))
}

// TestHelloCheckIsConstantTime reads checkHello's source: the Hello's
// token goes to the verifier (whose comparison is constant time, see
// package tunnel) and nowhere else, so the relay never compares it itself.
func TestHelloCheckIsConstantTime(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "tunnelserve.go", nil, 0)
	require.NoError(t, err)
	var check *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "checkHello" {
			check = fd
		}
	}
	require.NotNil(t, check)
	uses, verified := 0, 0
	ast.Inspect(check.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Verify" && len(n.Args) == 1 {
				if arg, ok := n.Args[0].(*ast.SelectorExpr); ok && arg.Sel.Name == "Token" {
					verified++
				}
			}
		case *ast.SelectorExpr:
			if n.Sel.Name == "Token" {
				uses++
			}
		}
		return true
	})
	require.Equal(t, 1, verified, "checkHello checks the token with TokenVerifier.Verify")
	require.Equal(t, 1, uses, "checkHello uses the token only to verify it")
}

// TestSessionsShareOneWindowBudget: the relay gives all its tunnel
// sessions one window-growth budget, the one its memory sizing counts
// (relayargs.WindowBudget, cluster.relayMemory).
func TestSessionsShareOneWindowBudget(t *testing.T) {
	h := startRelay(t)
	b := h.relay.tcfg.SharedWindowBudget
	require.NotNil(t, b)
	require.Equal(t, int64(relayargs.WindowBudget), b.Total())
}
