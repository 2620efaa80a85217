package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/sim"
	"github.com/sbx-dev/sbx/daemon/config"
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

// Scenario 3 in both outbound modes, through the daemon's own outbound
// access: the laptop's route calls driver.hotrod.svc.cluster.local through
// the daemon's proxy (as `sbx run` sets it up), then, after a live config
// change to hosts mode, resolved through sbx's block in the daemon's
// (private) hosts file; both reach baseline driver through the tunnel and
// the real relay.
func TestE2EOutboundModes(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	client := e.Sim.HTTPClient("default")
	defer client.CloseIdleConnections()

	// The laptop's route picks its way to the cluster per request: the
	// proxy while in proxy mode, the hosts file in hosts mode.
	var mu sync.Mutex
	var mode config.OutboundMode = config.ModeProxy
	viaHosts := hostsDialer(e.HostsFile)
	laptop := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy: func(r *http.Request) (*url.URL, error) {
			mu.Lock()
			defer mu.Unlock()
			if mode != config.ModeProxy {
				return nil, nil
			}
			p, err := e.ProxyURL(r.Context())
			if err != nil {
				return nil, err
			}
			return url.Parse(p)
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			m := mode
			mu.Unlock()
			if m == config.ModeHosts {
				return viaHosts(ctx, network, addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
	local, err := sim.StartLocalRoute("127.0.0.1:0", []string{"http://driver.hotrod.svc.cluster.local:8082/driver"}, laptop, e.log)
	require.NoError(t, err)
	defer local.Close()
	st, err := e.Connect(ctx, "alice", local.Addr(), nil)
	require.NoError(t, err)
	keyed := "sbx-routing-key=" + st.RoutingKey
	const chain = "frontend@baseline(route@v2(driver@baseline), driver@baseline)"

	require.Eventually(t, func() bool { _, err := e.ProxyURL(ctx); return err == nil }, 10*time.Second, 10*time.Millisecond)
	eventuallyServed(t, client, keyed, chain)
	resp, err := laptop.Get("http://driver.hotrod.svc.cluster.local:8082/via-proxy")
	require.NoError(t, err)
	var hop sim.Hop
	require.NoError(t, jsonDecode(resp, &hop))
	require.Equal(t, "driver@baseline", hop.String())
	require.Equal(t, "/via-proxy", hop.Path)

	// Hosts mode, by a live edit of the user config.
	require.NoError(t, e.SetOutboundMode(config.ModeHosts))
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(e.HostsFile)
		return strings.Contains(string(b), "driver.hotrod.svc.cluster.local")
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	mode = config.ModeHosts
	mu.Unlock()
	eventuallyServed(t, client, keyed, chain)
	for _, name := range []string{"driver.hotrod.svc.cluster.local", "driver.hotrod.svc", "driver.hotrod"} {
		resp, err := laptop.Get(fmt.Sprintf("http://%s:8082/x", name))
		require.NoError(t, err, name)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, name)
	}

	// Disconnecting the last sandbox puts the hosts file back as it was.
	_, err = e.Client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(e.HostsFile)
		return string(b) == "127.0.0.1 localhost\n"
	}, 10*time.Second, 10*time.Millisecond)
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
