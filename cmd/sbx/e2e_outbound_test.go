package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
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
	local, err := sim.StartLocalRoute("127.0.0.1:0", []string{"http://driver.hotrod.svc.cluster.local:8082/driver"}, laptop, e.Log)
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

	// Without the proxy's credential, nothing gets through.
	noAuth := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		Proxy: func(r *http.Request) (*url.URL, error) {
			p, err := e.ProxyURL(r.Context())
			if err != nil {
				return nil, err
			}
			u, err := url.Parse(p)
			if err == nil {
				u.User = nil
			}
			return u, err
		}}}
	resp, err = noAuth.Get("http://driver.hotrod.svc.cluster.local:8082/no-credential")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusProxyAuthRequired, resp.StatusCode)

	// `sbx run` gives a process the authenticated proxy: Go's net/http
	// through HTTP_PROXY and through ALL_PROXY (SOCKS5), and curl both
	// ways, reach the cluster name.
	useCLIWith(t, e)
	exe, err := os.Executable()
	require.NoError(t, err)
	t.Setenv("SBX_TEST_HELPER", "proxy-get")
	t.Setenv("SBX_TEST_URL", "http://driver.hotrod.svc.cluster.local:8082/via-sbx-run")
	for _, proxyVar := range []string{"HTTP_PROXY", "ALL_PROXY"} {
		t.Setenv("SBX_TEST_PROXY_VAR", proxyVar)
		code, out, errOut := runCLI(t, "run", "alice", "--", exe, "-test.run=^TestHelperProxyGet$")
		require.Equal(t, 0, code, "%s: %s", proxyVar, errOut)
		require.Contains(t, out, `"path":"/via-sbx-run"`, proxyVar)
		require.Contains(t, out, `"service":"driver","version":"baseline"`, proxyVar)
	}
	if _, err := exec.LookPath("curl"); err == nil {
		code, out, errOut := runCLI(t, "run", "alice", "--", "sh", "-c",
			`curl -sS --fail "$SBX_TEST_URL" && curl -sS --fail --proxy "$ALL_PROXY" "$SBX_TEST_URL"`)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, 2, strings.Count(out, `"path":"/via-sbx-run"`), out)
	} else {
		t.Log("no curl on PATH: only Go's client was tried")
	}

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
	// What a web page would send there (DNS rebinding: its own name in
	// Host; a cross-site request: its Origin) is refused.
	for _, hdr := range [][2]string{{"Host", "attacker.example:8082"}, {"Origin", "http://attacker.example"}} {
		req, err := http.NewRequest(http.MethodGet, "http://driver.hotrod:8082/x", nil)
		require.NoError(t, err)
		if hdr[0] == "Host" {
			req.Host = hdr[1]
		} else {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := laptop.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "%s: %s", hdr, body)
	}

	// Disconnecting the last sandbox puts the hosts file back as it was.
	_, err = e.Client.Disconnect(ctx, "alice")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(e.HostsFile)
		return string(b) == "127.0.0.1 localhost\n"
	}, 10*time.Second, 10*time.Millisecond)
}

// useCLIWith points the in-process CLI (runCLI) at e's daemon, which
// keeps its socket under e.Paths instead of the XDG locations.
func useCLIWith(t *testing.T, e *simenv.Env) {
	t.Helper()
	rt, err := simenv.TempDir()
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(rt) })
	require.NoError(t, os.Symlink(e.Paths.RuntimeDir, filepath.Join(rt, "sbx")))
	t.Setenv("XDG_RUNTIME_DIR", rt)
	t.Setenv("XDG_STATE_HOME", filepath.Dir(e.Paths.StateDir))
	t.Setenv("SBX_DAEMON_AUTOSTART", "0")
}

// TestHelperProxyGet is not a test: it is the process `sbx run` starts
// in TestE2EOutboundModes. It GETs $SBX_TEST_URL through the proxy that
// $SBX_TEST_PROXY_VAR names (HTTP_PROXY: Go's own lookup of the
// environment; ALL_PROXY: its SOCKS5 URL) and prints the body.
func TestHelperProxyGet(t *testing.T) {
	if os.Getenv("SBX_TEST_HELPER") != "proxy-get" {
		t.Skip("helper process")
	}
	proxy := http.ProxyFromEnvironment
	if v := os.Getenv("SBX_TEST_PROXY_VAR"); v != "HTTP_PROXY" {
		u, err := url.Parse(os.Getenv(v))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		proxy = http.ProxyURL(u)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: proxy}}
	resp, err := c.Get(os.Getenv("SBX_TEST_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, b)
	if resp.StatusCode != http.StatusOK {
		os.Exit(5)
	}
	os.Exit(0)
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestE2EEnvSurvivesDaemonRestart: a process started with the env of
// `sbx env` (a debugger launched from a .env file) keeps reaching the
// cluster after the daemon restarts: the proxy's address and credential
// in that env stay valid.
func TestE2EEnvSurvivesDaemonRestart(t *testing.T) {
	e := startE2E(t)
	ctx := context.Background()
	_, err := e.Connect(ctx, "alice", "127.0.0.1:1", nil)
	require.NoError(t, err)
	var fixed string // the proxy URL as the env wrote it, never looked up again
	require.Eventually(t, func() bool { fixed, err = e.ProxyURL(ctx); return err == nil }, 10*time.Second, 10*time.Millisecond)
	pu, err := url.Parse(fixed)
	require.NoError(t, err)
	debugger := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}}
	get := func() error {
		resp, err := debugger.Get("http://driver.hotrod.svc.cluster.local:8082/after-restart")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	require.NoError(t, get())

	require.NoError(t, e.StopDaemon())
	require.NoError(t, e.StartDaemon(ctx))
	require.Eventually(t, func() bool { return get() == nil }, 30*time.Second, 50*time.Millisecond,
		"the env from before the restart (%s) no longer reaches the cluster: %v", pu.Redacted(), get())
}
