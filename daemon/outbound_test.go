package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
)

const hostsOriginal = "127.0.0.1 localhost\n# keep me\n::1 ip6-localhost"

func kubeService(ns, name string, port int, labels map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.7",
			Ports: []corev1.ServicePort{{Name: "http", Port: int32(port), Protocol: corev1.ProtocolTCP}}},
	}
}

func portOf(t *testing.T, ln net.Listener) int {
	_, p, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
}

// hostsIP returns the IP the hosts file gives name, "" when none.
func hostsIP(t *testing.T, hostsPath, name string) string {
	b, err := os.ReadFile(hostsPath)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		for _, n := range f[1:] {
			if n == name {
				return f[0]
			}
		}
	}
	return ""
}

func outboundOf(t *testing.T, td *testDaemon) api.OutboundStatus {
	t.Helper()
	st, err := td.client.Status(context.Background())
	require.NoError(t, err)
	if st.Outbound == nil {
		return api.OutboundStatus{}
	}
	return *st.Outbound
}

// TestOutboundHostsModeThroughRealRelay: a Service in the cluster shows
// up in the hosts block, a local client reaches the stand-in server
// behind it through the daemon's listener, the tunnel and the real
// relay; a deleted Service disappears; the mode changes to proxy live;
// daemon shutdown restores the hosts file byte for byte.
func TestOutboundHostsModeThroughRealRelay(t *testing.T) {
	echo := echoServer(t) // the Service's pods, on 127.0.0.1 where the relay's resolver points
	web := localService(t)
	echoPort, webPort := portOf(t, echo), portOf(t, web)
	kube := fake.NewClientset(
		kubeService("hotrod", "driver", echoPort, nil),
		kubeService("shared", "web", webPort, nil),
		// sbx's own Services are never offered on the laptop.
		kubeService("hotrod", "route-sbx-abc", 20001, map[string]string{"app.kubernetes.io/managed-by": "sbx"}),
	)
	rr := startRealRelay(t, "s3cret-token")
	fc := relayCluster(func() string { return rr.addrs.Tunnel.String() })
	fc.kube = kube

	dir := shortTempDir(t)
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte(hostsOriginal), 0o644))
	cfgPath := filepath.Join(dir, "config.yaml")
	hostsCfg := fmt.Sprintf("outbound:\n  mode: hosts\n  hostsFile: %s\n  hostsRange: 127.243.0.0/16\n  namespaces: [shared]\n", hosts)
	writeConfig(t, cfgPath, hostsCfg)
	cfg := shortTunnelConfig()
	td := startDaemon(t, Options{newToken: fixedToken, Clusters: fc.provider(), Tunnel: &cfg, ConfigPath: cfgPath})

	// No sandbox yet: outbound access waits for one and leaves the
	// hosts file alone.
	ob := outboundOf(t, td)
	require.Equal(t, string(config.ModeHosts), ob.Mode)
	require.Contains(t, ob.Note, "starts when a sandbox is connected")
	b, err := os.ReadFile(hosts)
	require.NoError(t, err)
	require.Equal(t, hostsOriginal, string(b))

	st := connectTo(t, td, "localhost:1")
	const fqdn = "driver.hotrod.svc.cluster.local"
	require.Eventually(t, func() bool { return hostsIP(t, hosts, fqdn) != "" && hostsIP(t, hosts, "web.shared") != "" },
		10*time.Second, 5*time.Millisecond, "the Services appear in the hosts block")
	ip := hostsIP(t, hosts, fqdn)
	require.True(t, strings.HasPrefix(ip, "127.243."), ip)
	require.Equal(t, ip, hostsIP(t, hosts, "driver"), "short names for the sandbox's own namespace")
	require.Empty(t, hostsIP(t, hosts, "web"), "no short names for extra namespaces")
	require.Empty(t, hostsIP(t, hosts, "route-sbx-abc.hotrod"), "sbx's own Services stay out")

	// A local client dials the name's IP and port and reaches the
	// stand-in through the tunnel and the relay.
	addr := net.JoinHostPort(ip, strconv.Itoa(echoPort))
	var conn net.Conn
	require.Eventually(t, func() bool {
		conn, err = net.Dial("tcp", addr)
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "hosts-mode listener on %s", addr)
	_, err = io.WriteString(conn, "through the tunnel\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "echo: through the tunnel\n", line)
	require.NoError(t, conn.Close())

	// Status shows it.
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return ob.HostsFile != "" && len(ob.Services) == 2 && ob.Discovered == 2 && len(ob.Pending) == 0
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"hotrod", "shared"}, ob.Namespaces)
	require.Equal(t, "hotrod/driver", ob.Services[0].Service)

	// A Service deleted in the cluster leaves the hosts file.
	ctx := context.Background()
	require.NoError(t, kube.CoreV1().Services("shared").Delete(ctx, "web", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return hostsIP(t, hosts, "web.shared") == "" }, 10*time.Second, 5*time.Millisecond)
	_, err = kube.CoreV1().Services("shared").Create(ctx, kubeService("shared", "web", webPort, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	// Live config change to proxy mode (with baggage injection): the
	// hosts block goes, a request through the proxy reaches the stand-in
	// with the only sandbox's routing key added.
	writeConfig(t, cfgPath, strings.Replace(hostsCfg, "mode: hosts", "mode: proxy\n  injectBaggage: true", 1))
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return ob.Mode == string(config.ModeProxy) && ob.ProxyAddr != ""
	}, 10*time.Second, 5*time.Millisecond)
	b, err = os.ReadFile(hosts)
	require.NoError(t, err)
	require.Equal(t, hostsOriginal, string(b), "leaving hosts mode removes the block")
	// The proxy asks for the daemon's credential, which the socket
	// serves.
	proxyURL, err := url.Parse("http://" + ob.ProxyAddr)
	require.NoError(t, err)
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableKeepAlives: true}}
	resp, err := hc.Get(fmt.Sprintf("http://web.shared.svc.cluster.local:%d/via-proxy", webPort))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusProxyAuthRequired, resp.StatusCode, "no credential")
	pc, err := td.client.ProxyCredential(ctx)
	require.NoError(t, err)
	proxyURL.User = url.UserPassword(pc.Username, pc.Password)
	resp, err = hc.Get(fmt.Sprintf("http://web.shared.svc.cluster.local:%d/via-proxy", webPort))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), "GET /via-proxy")
	require.Contains(t, string(body), `baggage="sbx-routing-key=`+st.RoutingKey+`"`)

	// Back to hosts mode, then the daemon stops: the block is removed.
	writeConfig(t, cfgPath, hostsCfg)
	require.Eventually(t, func() bool { return hostsIP(t, hosts, fqdn) != "" }, 10*time.Second, 5*time.Millisecond)
	td.stop()
	b, err = os.ReadFile(hosts)
	require.NoError(t, err)
	require.Equal(t, hostsOriginal, string(b), "daemon shutdown removes the block")
	_, err = net.Dial("tcp", addr)
	require.Error(t, err, "listeners closed on shutdown")
}

// TestOutboundOffStartsNothing: mode off neither watches Services nor
// listens; switching it on applies live, and disconnecting the last
// sandbox stops outbound access again.
func TestOutboundOffStartsNothing(t *testing.T) {
	kube := fake.NewClientset(kubeService("hotrod", "driver", 8082, nil))
	fc := &fakeCluster{kube: kube}
	fl := &fakeLinker{}
	dir := shortTempDir(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	writeConfig(t, cfgPath, "outbound:\n  mode: off\n")
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, ConfigPath: cfgPath})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)

	ob := outboundOf(t, td)
	require.Equal(t, string(config.ModeOff), ob.Mode)
	require.Empty(t, ob.ProxyAddr)
	require.Empty(t, ob.HostsFile)
	require.Empty(t, ob.Namespaces)
	require.Empty(t, kube.Actions(), "mode off does not even watch Services")

	writeConfig(t, cfgPath, "outbound:\n  mode: proxy\n")
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return ob.Mode == string(config.ModeProxy) && ob.ProxyAddr != "" && ob.Discovered == 1
	}, 10*time.Second, 5*time.Millisecond)
	proxyAddr := ob.ProxyAddr
	c, err := net.Dial("tcp", proxyAddr)
	require.NoError(t, err)
	require.NoError(t, c.Close())

	// outbound.namespaces applies live too, without restarting the proxy.
	_, err = kube.CoreV1().Services("shared").Create(ctx, kubeService("shared", "redis", 6379, nil), metav1.CreateOptions{})
	require.NoError(t, err)
	writeConfig(t, cfgPath, "outbound:\n  mode: proxy\n  namespaces: [shared]\n")
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return len(ob.Namespaces) == 2 && ob.Discovered == 2
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"hotrod", "shared"}, ob.Namespaces)
	writeConfig(t, cfgPath, "outbound:\n  mode: proxy\n")
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return len(ob.Namespaces) == 1 && ob.Discovered == 1
	}, 10*time.Second, 5*time.Millisecond, "a namespace no longer watched takes its Services away")

	_, err = td.client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return ob.ProxyAddr == "" && ob.Discovered == 0 && len(ob.Namespaces) == 0
	}, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", proxyAddr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second, 5*time.Millisecond, "the proxy closes with the last sandbox")

	// The next sandbox brings it back, on the same port: an environment
	// made before (`sbx env > .env` for a debugger) still works.
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("bob", "localhost:1")}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ob = outboundOf(t, td)
		return ob.ProxyAddr != "" && ob.Discovered == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, proxyAddr, ob.ProxyAddr, "the proxy's port survives the last sandbox's disconnect")
}

// TestOutboundUpBeforeReady: a daemon restoring its sandboxes answers
// its first request with outbound access already up, so `sbx run`
// starting the daemon sees the proxy address.
func TestOutboundUpBeforeReady(t *testing.T) {
	fc := &fakeCluster{}
	paths := testPaths(t)
	cfgPath := filepath.Join(shortTempDir(t), "config.yaml")
	writeConfig(t, cfgPath, "outbound:\n  mode: proxy\n")
	td := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link, ConfigPath: cfgPath})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1")}, nil)
	require.NoError(t, err)
	td.stop()

	td2 := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link, ConfigPath: cfgPath})
	ob := outboundOf(t, td2)
	require.Equal(t, string(config.ModeProxy), ob.Mode)
	require.NotEmpty(t, ob.ProxyAddr, "first status after start")
}

// TestOutboundProxyShownOnceUp: the first sandbox starts the proxy after
// the daemon published the status it found (no proxy yet); the status
// shows the proxy once it is up, not at the next periodic refresh (an
// hour here), or `sbx env` and `sbx run` would find no proxy. sbx demo
// failed that way once.
func TestOutboundProxyShownOnceUp(t *testing.T) {
	fc := &fakeCluster{}
	cfgPath := filepath.Join(shortTempDir(t), "config.yaml")
	writeConfig(t, cfgPath, "outbound:\n  mode: proxy\n")
	td := startDaemon(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link, ConfigPath: cfgPath, StatsInterval: time.Hour})
	require.Empty(t, outboundOf(t, td).ProxyAddr, "no sandbox, no proxy")
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return outboundOf(t, td).ProxyAddr != "" }, 10*time.Second, 5*time.Millisecond)
}

// TestOutboundProxyPortSurvivesRestarts: the proxy's port (picked by the
// system the first time) is the same after a daemon restart (and after the
// last sandbox's disconnect: TestOutboundOffStartsNothing), so an environment a debugger was
// started with keeps working; one another process took meanwhile is
// given up for a new port.
func TestOutboundProxyPortSurvivesRestarts(t *testing.T) {
	fc := &fakeCluster{}
	paths := testPaths(t)
	cfgPath := filepath.Join(shortTempDir(t), "config.yaml")
	writeConfig(t, cfgPath, "outbound:\n  mode: proxy\n")
	td := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link, ConfigPath: cfgPath})
	_, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	var first string
	require.Eventually(t, func() bool { first = outboundOf(t, td).ProxyAddr; return first != "" }, 10*time.Second, 5*time.Millisecond)

	td.stop()
	td2 := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link, ConfigPath: cfgPath})
	require.Equal(t, first, outboundOf(t, td2).ProxyAddr, "after a daemon restart")

	td2.stop()
	taken, err := net.Listen("tcp", first)
	require.NoError(t, err)
	defer taken.Close()
	td3 := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: (&fakeLinker{}).link, ConfigPath: cfgPath})
	again := outboundOf(t, td3).ProxyAddr
	require.NotEmpty(t, again)
	require.NotEqual(t, first, again, "a port another process took is given up")
}

// namedLinker hands out links that record the outbound dials they carry
// and that fail for sandboxes marked down.
type namedLinker struct {
	mu    sync.Mutex
	down  map[string]bool
	dials []string // sandbox → target
	links map[string]*fakeLink
}

type recordingLink struct {
	*fakeLink
	l       *namedLinker
	sandbox string
}

func (r recordingLink) DialOutbound(ctx context.Context, target, source string) (net.Conn, error) {
	r.l.mu.Lock()
	r.l.dials = append(r.l.dials, r.sandbox+" "+target)
	r.l.mu.Unlock()
	a, b := net.Pipe()
	_ = b.Close()
	return a, nil
}

func (n *namedLinker) link(ctx context.Context, p linkParams) (link, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[p.Ref.Name] {
		return nil, fmt.Errorf("relay of %s unreachable", p.Ref.Name)
	}
	fl := newFakeLink()
	n.links[p.Ref.Name] = fl
	return recordingLink{fakeLink: fl, l: n, sandbox: p.Ref.Name}, nil
}

func TestOutboundPicksSandboxByNamespace(t *testing.T) {
	fc := &fakeCluster{}
	nl := &namedLinker{down: map[string]bool{}, links: map[string]*fakeLink{}}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: nl.link})
	ctx := context.Background()
	o := td.d.out

	_, err := o.pickSandbox("driver.hotrod.svc.cluster.local:8082")
	require.ErrorContains(t, err, "no sandbox is connected")
	k, v := o.baggage()
	require.Empty(t, k+v)

	alice, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	k, v = o.baggage()
	require.Equal(t, "sbx-routing-key", k, "one sandbox: its key is injected")
	require.Equal(t, alice.RoutingKey, v)

	shop := testSpec("bob", "localhost:2")
	shop.Spec.Local[0].From.Namespace = "shop"
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: shop, Wait: true}, nil)
	require.NoError(t, err)
	k, v = o.baggage()
	require.Empty(t, k+v, "several sandboxes: no key is injected")

	for target, want := range map[string]string{
		"cart.shop.svc.cluster.local:80":     "bob",
		"driver.hotrod.svc.cluster.local:80": "alice",
		"db.other.svc.cluster.local:5432":    "alice", // any ready one, by name
		"CART.SHOP.SVC.cluster.local.:80":    "bob",
	} {
		got, err := o.pickSandbox(target)
		require.NoError(t, err)
		require.Equal(t, want, got, target)
	}

	// Through the daemon's dial path.
	c, err := td.d.DialOutbound(ctx, "bob", "cart.shop.svc.cluster.local:80", "127.0.0.1:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())

	// bob's tunnel breaks and stays down: its namespace goes through
	// alice's tunnel meanwhile.
	nl.mu.Lock()
	nl.down["bob"] = true
	bobLink := nl.links["bob"]
	nl.mu.Unlock()
	bobLink.kill(fmt.Errorf("relay gone"))
	waitPhase(t, td.client, "bob", api.PhaseReconnecting)
	got, err := o.pickSandbox("cart.shop.svc.cluster.local:80")
	require.NoError(t, err)
	require.Equal(t, "alice", got)

	_, err = td.client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	got, err = o.pickSandbox("driver.hotrod.svc.cluster.local:80")
	require.NoError(t, err)
	require.Equal(t, "bob", got, "none ready: the one left, whose error says why")
	_, err = td.d.DialOutbound(ctx, got, "driver.hotrod.svc.cluster.local:80", "")
	require.ErrorContains(t, err, "sandbox bob is not connected")
}

func TestTargetNamespace(t *testing.T) {
	for in, want := range map[string]string{
		"driver.hotrod.svc.cluster.local:8082": "hotrod",
		"driver.hotrod.svc:8082":               "hotrod",
		"Driver.HotRod.SVC.cluster.local.:1":   "hotrod",
		"driver.hotrod:8082":                   "",
		"example.com:443":                      "",
		"10.0.0.1:80":                          "",
		"driver.hotrod.svc.cluster.local":      "hotrod",
	} {
		require.Equal(t, want, targetNamespace(in), in)
	}
}

func TestMappingStatusNamesBaseline(t *testing.T) {
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link})
	sp := testSpec("alice", "localhost:1")
	sp.Spec.Local[0].From = spec.Workload{Kind: spec.KindStatefulSet, Namespace: "hotrod", Name: "route-v2"}
	st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: sp}, nil)
	require.NoError(t, err)
	require.Len(t, st.Mappings, 1)
	require.Equal(t, &spec.Workload{Kind: spec.KindStatefulSet, Namespace: "hotrod", Name: "route-v2"}, st.Mappings[0].From)
}

// TestEmbeddedDaemonLeavesTheMachinesHostsFileAlone: a daemon embedded
// in another program (here a test) with the default config and no hosts
// file named runs outbound access in proxy mode and says why; the
// machine's hosts file is the default only where the sbx command says so
// (Options.SystemHostsFile).
func TestEmbeddedDaemonLeavesTheMachinesHostsFileAlone(t *testing.T) {
	before, readErr := os.ReadFile(config.DefaultHostsFile)
	fc := &fakeCluster{}
	td := startDaemonAsIs(t, Options{Clusters: fc.provider(), link: (&fakeLinker{}).link, Backoff: fastBackoff()})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)

	var ob api.OutboundStatus
	require.Eventually(t, func() bool { ob = outboundOf(t, td); return ob.ProxyAddr != "" }, 10*time.Second, 5*time.Millisecond,
		"outbound access never started in proxy mode: %+v", ob)
	require.Empty(t, ob.HostsFile)
	require.Contains(t, ob.Note, "no hosts file is configured (outbound.hostsFile)")
	if readErr == nil {
		after, err := os.ReadFile(config.DefaultHostsFile)
		require.NoError(t, err)
		require.Equal(t, string(before), string(after))
	}
}
