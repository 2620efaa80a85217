package outbound

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
)

func TestManagerFollowsConfig(t *testing.T) {
	e := newHostsEnv(t)
	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	m := NewManager(ManagerOptions{ProxyPassword: testProxyPassword, Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock, StatePath: e.state, Retry: 20 * time.Millisecond},
		outboundCfg(e, config.ModeProxy))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	require.Eventually(t, func() bool { return m.Status().ProxyAddr != "" }, 10*time.Second, 5*time.Millisecond)
	proxyAddr := m.Status().ProxyAddr
	require.Equal(t, string(config.ModeProxy), m.Status().Mode)
	require.Equal(t, original, e.read(t))

	// The same config again changes nothing.
	m.SetConfig(outboundCfg(e, config.ModeProxy))
	require.Equal(t, proxyAddr, m.Status().ProxyAddr)

	// A live edit to hosts mode: the proxy goes, the hosts block comes.
	m.SetConfig(outboundCfg(e, config.ModeHosts))
	require.Eventually(t, func() bool { return len(m.Status().Services) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, string(config.ModeHosts), m.Status().Mode)
	require.Contains(t, e.read(t), "driver.hotrod.svc.cluster.local")
	_, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	require.Error(t, err, "the old proxy is closed")

	// Off: everything undone.
	m.SetConfig(config.Outbound{Mode: config.ModeOff})
	require.Eventually(t, func() bool { return m.Status().Mode == string(config.ModeOff) }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, original, e.read(t))

	cancel()
	require.NoError(t, <-done)
	require.Equal(t, original, e.read(t))
}

func TestManagerReportsAndRetries(t *testing.T) {
	e := newHostsEnv(t)
	other, err := Start(Options{ProxyPassword: testProxyPassword, Config: outboundCfg(e, config.ModeHosts), Catalog: NewCatalog("", nil), Dial: e.si.dial,
		LockPath: filepath.Join(t.TempDir(), "other.lock")})
	require.NoError(t, err)

	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	m := NewManager(ManagerOptions{ProxyPassword: testProxyPassword, Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock, Retry: 20 * time.Millisecond},
		outboundCfg(e, config.ModeHosts))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	require.Eventually(t, func() bool { return strings.Contains(m.Status().Error, "managed by another sbx daemon") }, 10*time.Second, 5*time.Millisecond)

	// The other daemon exits: the retry takes over.
	require.NoError(t, other.Close())
	require.Eventually(t, func() bool { st := m.Status(); return st.Error == "" && len(st.Services) == 1 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, original, e.read(t))
}

// TestManagerWaitStarted: WaitStarted returns once the first attempt to
// start a Runner finished, whether it worked or not, and gives up with
// its context when there is no attempt.
func TestManagerWaitStarted(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()

	tests := []struct {
		name    string
		cfg     func(e *hostsEnv) config.Outbound
		run     bool // start the Manager
		want    error
		started func(t *testing.T, st api.OutboundStatus)
	}{
		{name: "runner up", run: true,
			cfg: func(e *hostsEnv) config.Outbound { return outboundCfg(e, config.ModeProxy) },
			started: func(t *testing.T, st api.OutboundStatus) {
				require.NotEmpty(t, st.ProxyAddr)
				require.Empty(t, st.Error)
			}},
		{name: "runner failed", run: true,
			cfg: func(e *hostsEnv) config.Outbound {
				c := outboundCfg(e, config.ModeProxy)
				c.ProxyListen = busy.Addr().String()
				return c
			},
			started: func(t *testing.T, st api.OutboundStatus) {
				require.Empty(t, st.ProxyAddr)
				require.Contains(t, st.Error, busy.Addr().String())
			}},
		{name: "never run", want: context.Canceled,
			cfg: func(e *hostsEnv) config.Outbound { return outboundCfg(e, config.ModeProxy) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newHostsEnv(t)
			// No retry within the test: the status seen is the first attempt's.
			m := NewManager(ManagerOptions{ProxyPassword: testProxyPassword, Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock, StatePath: e.state, Retry: time.Hour}, tt.cfg(e))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			waited := make(chan error, 1)
			go func() { waited <- m.WaitStarted(ctx) }()
			done := make(chan error, 1)
			if tt.run {
				go func() { done <- m.Run(ctx) }()
			} else {
				cancel()
			}
			require.ErrorIs(t, <-waited, tt.want)
			if !tt.run {
				return
			}
			tt.started(t, m.Status())
			require.NoError(t, m.WaitStarted(ctx), "after the first attempt it returns at once")
			cancel()
			require.NoError(t, <-done)
			require.Equal(t, original, e.read(t))
		})
	}
}
