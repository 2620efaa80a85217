package outbound

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/tunnel"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

// relayStandIn is the relay's outbound side over a real tunnel session:
// it maps cluster names to local servers, refuses unknown names as a DNS
// failure and passes dial errors back with their reason, as the relay
// does.
type relayStandIn struct {
	names   map[string]string // cluster target -> local address
	mu      sync.Mutex
	sources []string
	// early and waited count the dials opened with tunnel's OpenEarly
	// (hosts mode) and with Open (the proxy).
	early, waited atomic.Int32
}

func (r *relayStandIn) serve(ctx context.Context, s *tunnel.Session, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		st, err := s.Accept(ctx)
		if err != nil {
			return
		}
		h := st.Header()
		r.mu.Lock()
		r.sources = append(r.sources, h.Source)
		r.mu.Unlock()
		addr, ok := r.names[h.Target]
		if !ok {
			_ = st.Reject(tunnel.ReasonDNS, "lookup "+h.Target+": no such host")
			continue
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			_ = st.Reject(tunnel.ReasonOf(err), err.Error())
			continue
		}
		if err := st.Accept(); err != nil {
			_ = c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = tunnel.Pipe(ctx, st, c)
		}()
	}
}

// echoAfterEOF answers "echo:<everything read>" once the client
// half-closed.
func echoAfterEOF(t *testing.T) net.Listener {
	return tunneltest.Serve(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		_, _ = c.Write(append([]byte("echo:"), b...))
	})
}

// tunnelDialer sets up a tunnel session pair over loopback TCP and
// returns the daemon-side Dialer backed by a tunnel.Pool, as the daemon
// wires it (daemon's tunnelLink.DialOutbound: early when EarlyOpen).
func tunnelDialer(t *testing.T, relay *relayStandIn) Dialer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	type res struct {
		s   *tunnel.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- res{nil, err}
			return
		}
		s, _, err := tunnel.Server(ctx, c, tunnel.DefaultConfig(), func(h tunnel.Hello) (tunnel.Welcome, error) {
			if !tunnel.TokenEqual(h.Token, "tok") {
				return tunnel.Welcome{}, &tunnel.HandshakeError{Code: tunnel.CodeBadToken, Message: "bad token"}
			}
			return tunnel.Welcome{RelayVersion: "test"}, nil
		})
		ch <- res{s, err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	client, _, err := tunnel.Client(ctx, conn, tunnel.DefaultConfig(), tunnel.Hello{Token: "tok", ClientID: "c1", Sandbox: "alice", User: "alice@laptop"})
	require.NoError(t, err)
	sr := <-ch
	require.NoError(t, sr.err)
	wg.Add(1)
	go relay.serve(ctx, sr.s, &wg)
	pool := tunnel.NewPool(nil, nil)
	pool.Add(client)
	t.Cleanup(func() {
		cancel()
		_ = pool.Close()
		_ = client.Close()
		_ = sr.s.Close()
		wg.Wait()
	})
	return func(ctx context.Context, target string) (net.Conn, error) {
		open := pool.Open
		if EarlyOpen(ctx) {
			open = pool.OpenEarly
			relay.early.Add(1)
		} else {
			relay.waited.Add(1)
		}
		st, err := open(ctx, tunnel.Header{Kind: tunnel.KindOutbound, Target: target, Source: SourceFromContext(ctx)})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
}

func k8sService(ns, name string, port int32) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.1", Ports: []corev1.ServicePort{{Port: port, Protocol: corev1.ProtocolTCP}}}}
}

// TestEndToEnd: Services from discovery (informers on a fake API server)
// → Catalog → hosts mode and then proxy mode (a live config edit) →
// connections through a real tunnel session to a relay stand-in.
func TestEndToEnd(t *testing.T) {
	echo := echoAfterEOF(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	require.NoError(t, closed.Close())
	relay := &relayStandIn{names: map[string]string{
		"driver.hotrod.svc.cluster.local:8082": echo.Addr().String(),
		"redis.shared.svc.cluster.local:6379":  echo.Addr().String(),
		"down.hotrod.svc.cluster.local:9000":   closedAddr,
	}}
	dial := tunnelDialer(t, relay)

	kube := fake.NewClientset(k8sService("hotrod", "driver", 8082), k8sService("hotrod", "down", 9000))
	cat := NewCatalog("", []string{"hotrod"})
	w, err := discovery.New(discovery.Options{Client: kube, Namespaces: []string{"hotrod", "shared"}, OnEvent: cat.Apply})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	defer wg.Wait()
	defer cancel()

	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte(original), 0o644))
	cfg := config.Outbound{Mode: config.ModeHosts, HostsFile: hosts, HostsRange: netip.MustParsePrefix("127.246.0.0/16"),
		ProxyListen: "127.0.0.1:0"}
	m := NewManager(ManagerOptions{ProxyPassword: testProxyPassword, Catalog: cat, Dial: dial, LockPath: filepath.Join(dir, "hosts.lock"), StatePath: filepath.Join(dir, "ips.json")}, cfg)
	mctx, mcancel := context.WithCancel(ctx)
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(mctx) }()

	read := func() string { b, _ := os.ReadFile(hosts); return string(b) }
	require.Eventually(t, func() bool { return strings.Contains(read(), "driver.hotrod.svc.cluster.local") }, 10*time.Second, 5*time.Millisecond)
	reply, err := roundTrip(t, hosts, "driver", 8082, "hello tunnel")
	require.NoError(t, err)
	require.Equal(t, "echo:hello tunnel", reply)

	// A Service created in the cluster shows up live.
	_, err = kube.CoreV1().Services("shared").Create(ctx, k8sService("shared", "redis", 6379), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(read(), "redis.shared.svc.cluster.local") }, 10*time.Second, 5*time.Millisecond)
	reply, err = roundTrip(t, hosts, "redis.shared", 6379, "PING")
	require.NoError(t, err)
	require.Equal(t, "echo:PING", reply)

	// The relay's refused dial closes the local connection at once (the
	// stream opened early: the refusal arrives as its first Read).
	reply, _ = roundTrip(t, hosts, "down", 9000, "x")
	require.Empty(t, reply)
	require.Equal(t, int32(3), relay.early.Load(), "hosts mode opens its streams early")
	require.Zero(t, relay.waited.Load())

	// Deleted in the cluster: gone from the hosts file.
	require.NoError(t, kube.CoreV1().Services("shared").Delete(ctx, "redis", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return !strings.Contains(read(), "redis") }, 10*time.Second, 5*time.Millisecond)

	// Live config edit to proxy mode.
	cfg.Mode = config.ModeProxy
	m.SetConfig(cfg)
	require.Eventually(t, func() bool { return m.Status().ProxyAddr != "" }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, original, read(), "hosts block removed when leaving hosts mode")
	paddr := m.Status().ProxyAddr
	require.Equal(t, "echo:via socks", socksThrough(t, paddr, "driver.hotrod", 8082, "via socks"))
	for host, code := range map[string]byte{"nothing.hotrod.svc": 4, "down.hotrod": 5} {
		port := uint16(9000)
		c, err := net.Dial("tcp", paddr)
		require.NoError(t, err)
		req := append(socksHello(), 5, 1, 0, 3, byte(len(host)))
		req = append(append(req, host...), byte(port>>8), byte(port))
		_, err = c.Write(req)
		require.NoError(t, err)
		reply := make([]byte, 14)
		_, err = io.ReadFull(c, reply)
		require.NoError(t, err)
		require.Equal(t, code, reply[5], "%s: the relay's dial error reason becomes the SOCKS5 reply", host)
		c.Close()
	}
	require.Positive(t, relay.waited.Load(), "the proxy waits for the relay's answer before it replies")

	mcancel()
	require.NoError(t, <-mdone)
	relay.mu.Lock()
	defer relay.mu.Unlock()
	for _, s := range relay.sources {
		require.True(t, strings.HasPrefix(s, "127."), "the local peer is passed as the stream's Source: %q", s)
	}
	require.NotEmpty(t, relay.sources)
}
