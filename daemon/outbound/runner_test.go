package outbound

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/proxy"
)

func outboundCfg(e *hostsEnv, mode config.OutboundMode) config.Outbound {
	return config.Outbound{Mode: mode, HostsFile: e.hosts, HostsRange: netip.MustParsePrefix("127.246.0.0/16"),
		ProxyListen: "127.0.0.1:0", InjectBaggage: true}
}

func runRunner(t *testing.T, r *Runner) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		cancel()
		require.NoError(t, <-done)
	}
}

// testPassword is the proxy's credential in these tests.
const testPassword = "q-9Zk_3xV0aBcDeFgHiJkLmNoPqRsTuVwXyZ012345"

func testProxyPassword() (string, error) { return testPassword, nil }

// socksHello offers username/password and sends the credential: what a
// SOCKS5 client with the proxy URL `sbx env` prints sends first. The
// proxy answers it with 4 bytes: {5, 2} and {1, 0}.
func socksHello() []byte {
	b := []byte{5, 1, 2, 1, byte(len(proxy.Username))}
	b = append(b, proxy.Username...)
	b = append(b, byte(len(testPassword)))
	return append(b, testPassword...)
}

// socksThrough connects through the SOCKS5 proxy at addr to host:port
// (sent as a name), sends msg, half-closes and returns the reply.
func socksThrough(t *testing.T, addr, host string, port uint16, msg string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := append(socksHello(), 5, 1, 0, 3, byte(len(host)))
	req = append(req, host...)
	req = append(req, byte(port>>8), byte(port))
	_, err = c.Write(req)
	require.NoError(t, err)
	reply := make([]byte, 14)
	_, err = io.ReadFull(c, reply)
	require.NoError(t, err)
	require.Equal(t, []byte{5, 2, 1, 0}, reply[:4], "username/password accepted")
	require.Equal(t, byte(0), reply[5], "SOCKS5 reply code")
	_, err = io.WriteString(c, msg)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(b)
}

func TestRunnerAutoPicksHosts(t *testing.T) {
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	r, err := Start(Options{ProxyPassword: testProxyPassword, Config: outboundCfg(e, config.ModeAuto), Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock, StatePath: e.state})
	require.NoError(t, err)
	stop := runRunner(t, r)
	require.Eventually(t, func() bool { return len(r.Status().Services) == 1 }, 10*time.Second, 10*time.Millisecond)
	st := r.Status()
	require.Equal(t, string(config.ModeHosts), st.Mode)
	require.Empty(t, st.ProxyAddr)
	require.Nil(t, r.ProxyAddr())
	reply, err := roundTrip(t, e.hosts, "driver", 8082, "hi")
	require.NoError(t, err)
	require.Equal(t, "driver.hotrod.svc.cluster.local:8082|hi", reply)
	stop()
	require.Equal(t, original, e.read(t))
}

func TestRunnerAutoFallsBackToProxy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *hostsEnv) config.Outbound
		note  string
	}{
		{"hosts file not writable", func(t *testing.T, e *hostsEnv) config.Outbound {
			c := outboundCfg(e, config.ModeAuto)
			c.HostsFile = filepath.Join(t.TempDir(), "missing", "hosts")
			return c
		}, "not writable"},
		{"hosts file owned by another daemon", func(t *testing.T, e *hostsEnv) config.Outbound {
			other, err := Start(Options{ProxyPassword: testProxyPassword, Config: outboundCfg(e, config.ModeHosts), Catalog: NewCatalog("", nil), Dial: e.si.dial,
				LockPath: filepath.Join(t.TempDir(), "other.lock")})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, other.Close()) })
			return outboundCfg(e, config.ModeAuto)
		}, "managed by another sbx daemon"},
		{"no hosts file named (a program embedding the daemon)", func(t *testing.T, e *hostsEnv) config.Outbound {
			c := outboundCfg(e, config.ModeAuto)
			c.HostsFile = ""
			return c
		}, "no hosts file is configured (outbound.hostsFile)"},
		{"hosts range not on this machine's loopback", func(t *testing.T, e *hostsEnv) config.Outbound {
			c := outboundCfg(e, config.ModeAuto)
			c.HostsRange = netip.MustParsePrefix("192.0.2.0/24") // TEST-NET-1: never a local address
			return c
		}, "cannot listen on 192.0.2.1"},
	} {
		// An unset mode is auto (Start's zero value), and falls back alike.
		for _, mode := range []config.OutboundMode{config.ModeAuto, ""} {
			t.Run(tc.name+"/mode="+string(mode), func(t *testing.T) {
				e := newHostsEnv(t)
				e.cat.Apply(added(svc("hotrod", "driver", 8082)))
				cfg := tc.setup(t, e)
				cfg.Mode = mode
				r, err := Start(Options{ProxyPassword: testProxyPassword, Config: cfg, Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock})
				require.NoError(t, err)
				stop := runRunner(t, r)
				defer stop()
				st := r.Status()
				require.Equal(t, string(config.ModeProxy), st.Mode)
				require.Contains(t, st.Note, tc.note)
				require.NotEmpty(t, st.ProxyAddr)
				// The Catalog decides: a short name of the sandbox's namespace
				// goes through the tunnel as its FQDN.
				require.Equal(t, "driver.hotrod.svc.cluster.local:8082|via socks",
					socksThrough(t, st.ProxyAddr, "driver", 8082, "via socks"))
				require.Contains(t, e.si.dialed(), "driver.hotrod.svc.cluster.local:8082")
			})
		}
	}
}

func TestRunnerExplicitModes(t *testing.T) {
	e := newHostsEnv(t)
	other, err := Start(Options{ProxyPassword: testProxyPassword, Config: outboundCfg(e, config.ModeHosts), Catalog: NewCatalog("", nil), Dial: e.si.dial, LockPath: e.lock})
	require.NoError(t, err)
	_, err = Start(Options{ProxyPassword: testProxyPassword, Config: outboundCfg(e, config.ModeHosts), Catalog: e.cat, Dial: e.si.dial, LockPath: filepath.Join(t.TempDir(), "l")})
	require.ErrorContains(t, err, "outbound hosts mode", "hosts mode asked for explicitly does not fall back")
	require.NoError(t, other.Close())

	badRange := outboundCfg(e, config.ModeHosts)
	badRange.HostsRange = netip.MustParsePrefix("192.0.2.0/24")
	_, err = Start(Options{ProxyPassword: testProxyPassword, Config: badRange, Catalog: e.cat, Dial: e.si.dial, LockPath: filepath.Join(t.TempDir(), "l")})
	require.ErrorContains(t, err, "ifconfig lo0 alias")
	require.Equal(t, original, e.read(t))

	r, err := Start(Options{ProxyPassword: testProxyPassword, Config: outboundCfg(e, config.ModeProxy), Catalog: e.cat, Dial: e.si.dial})
	require.NoError(t, err)
	require.Equal(t, string(config.ModeProxy), r.Status().Mode)
	require.Empty(t, r.Status().Note)
	require.NoError(t, r.Close())
	require.Equal(t, original, e.read(t), "proxy mode never touches the hosts file")

	r, err = Start(Options{ProxyPassword: testProxyPassword, Config: config.Outbound{Mode: config.ModeOff}})
	require.NoError(t, err)
	require.Equal(t, string(config.ModeOff), r.Status().Mode)
	stop := runRunner(t, r)
	stop()

	bad := outboundCfg(e, config.ModeProxy)
	bad.ProxyListen = "0.0.0.0:0"
	_, err = Start(Options{ProxyPassword: testProxyPassword, Config: bad, Catalog: e.cat, Dial: e.si.dial})
	require.ErrorContains(t, err, "loopback")
}

// TestProxyModeNeedsAPassword: proxy mode never starts an open proxy.
// TestHostsModeNeedsAHostsFile: hosts mode with no hosts file named is an
// error that says what to set, never the machine's file by default.
func TestHostsModeNeedsAHostsFile(t *testing.T) {
	e := newHostsEnv(t)
	cfg := outboundCfg(e, config.ModeHosts)
	cfg.HostsFile = ""
	_, err := Start(Options{ProxyPassword: testProxyPassword, Config: cfg, Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock})
	require.ErrorContains(t, err, "no hosts file is configured; set outbound.hostsFile")
}

func TestProxyModeNeedsAPassword(t *testing.T) {
	e := newHostsEnv(t)
	_, err := Start(Options{Config: outboundCfg(e, config.ModeProxy), Catalog: e.cat, Dial: e.si.dial})
	require.ErrorContains(t, err, "ProxyPassword is required")
	_, err = Start(Options{Config: outboundCfg(e, config.ModeProxy), Catalog: e.cat, Dial: e.si.dial,
		ProxyPassword: func() (string, error) { return "", errors.New("state directory not writable") }})
	require.ErrorContains(t, err, "outbound proxy mode: state directory not writable")
	// Hosts mode does not need it.
	r, err := Start(Options{Config: outboundCfg(e, config.ModeHosts), Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock})
	require.NoError(t, err)
	require.NoError(t, r.Close())
}

func TestNeedsRestart(t *testing.T) {
	a := config.Default().Outbound
	b := config.Default().Outbound
	require.False(t, NeedsRestart(a, b))
	b.Namespaces = []string{"shared"}
	require.True(t, NeedsRestart(a, b))
	b = config.Default().Outbound
	b.InjectBaggage = true
	require.True(t, NeedsRestart(a, b))
}
