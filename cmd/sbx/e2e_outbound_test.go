package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/cluster/sim"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/outbound"
)

// hostsDialer resolves names through a hosts file (as the system resolver
// would with sbx's block in /etc/hosts) and dials the address.
func hostsDialer(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(line)
			for _, name := range fields[min(1, len(fields)):] {
				if strings.EqualFold(name, host) {
					var d net.Dialer
					return d.DialContext(ctx, network, net.JoinHostPort(fields[0], port))
				}
			}
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
}

// Scenario 3 in both outbound modes: the laptop's route calls
// driver.hotrod.svc.cluster.local, resolved through sbx's block in a
// (temporary) hosts file, then through sbx's proxy, and reaches baseline
// driver through the tunnel and the real relay. Outbound access is wired
// here as the daemon wires it: discovery -> Catalog -> outbound.Manager,
// dialing through the daemon's DialOutbound.
func TestE2EOutboundModes(t *testing.T) {
	e := startE2E(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()

	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	const original = "127.0.0.1 localhost\n"
	require.NoError(t, os.WriteFile(hosts, []byte(original), 0o644))

	cat := outbound.NewCatalog("", []string{sim.AppNamespace})
	w, err := discovery.New(discovery.Options{Client: e.Sim.Clients.Kube, Namespaces: []string{sim.AppNamespace}, OnEvent: cat.Apply})
	require.NoError(t, err)
	cfg := config.Outbound{Mode: config.ModeHosts, HostsFile: hosts, HostsRange: netip.MustParsePrefix("127.243.0.0/16"),
		ProxyListen: "127.0.0.1:0"}
	m := outbound.NewManager(outbound.ManagerOptions{
		Catalog: cat,
		Dial: func(ctx context.Context, target string) (net.Conn, error) {
			return e.DialOutbound(ctx, "alice", target)
		},
		LockPath:  filepath.Join(dir, "hosts.lock"),
		StatePath: filepath.Join(dir, "ips.json"),
		Logger:    e.log,
	}, cfg)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	go func() { defer wg.Done(); _ = m.Run(ctx) }()
	defer wg.Wait()
	defer cancel()

	// Hosts mode: the laptop's route resolves cluster names via the hosts file.
	viaHosts := &http.Client{Transport: &http.Transport{DialContext: hostsDialer(hosts)}, Timeout: 20 * time.Second}
	defer viaHosts.CloseIdleConnections()
	local, err := sim.StartLocalRoute("127.0.0.1:0", []string{"http://driver.hotrod.svc.cluster.local:8082/driver"}, viaHosts, e.log)
	require.NoError(t, err)
	defer local.Close()
	st, err := e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(hosts)
		return strings.Contains(string(b), "driver.hotrod.svc.cluster.local")
	}, 10*time.Second, 10*time.Millisecond)
	eventuallyServed(t, client, keyed, "frontend@baseline(route@v2(driver@baseline), driver@baseline)")
	for _, name := range []string{"driver.hotrod.svc.cluster.local", "driver.hotrod.svc", "driver.hotrod"} {
		resp, err := viaHosts.Get(fmt.Sprintf("http://%s:8082/x", name))
		require.NoError(t, err, name)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, name)
	}

	// Proxy mode (a live config change): the hosts block goes away, and an
	// HTTP client using sbx's proxy reaches driver.
	cfg.Mode = config.ModeProxy
	m.SetConfig(cfg)
	require.Eventually(t, func() bool { return m.Status().ProxyAddr != "" }, 10*time.Second, 10*time.Millisecond)
	b, err := os.ReadFile(hosts)
	require.NoError(t, err)
	require.Equal(t, original, string(b), "the hosts block is removed when leaving hosts mode")
	proxyURL, err := url.Parse("http://" + m.Status().ProxyAddr)
	require.NoError(t, err)
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 20 * time.Second}
	defer viaProxy.CloseIdleConnections()
	resp, err := viaProxy.Get("http://driver.hotrod.svc.cluster.local:8082/via-proxy")
	require.NoError(t, err)
	var hop sim.Hop
	require.NoError(t, jsonDecode(resp, &hop))
	require.Equal(t, "driver@baseline", hop.String())
	require.Equal(t, "/via-proxy", hop.Path)
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
