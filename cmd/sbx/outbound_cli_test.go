package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/joho/godotenv"
	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
)

// TestCLIRunInProxyMode: with outbound.mode proxy in the user config,
// `sbx run` gives the process the daemon's proxy, and `sbx status` shows
// it.
func TestCLIRunInProxyMode(t *testing.T) {
	dir := cliEnv(t)
	cfgPath, err := config.DefaultPath(os.Getenv)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(cfgPath), 0o700))
	require.NoError(t, os.WriteFile(cfgPath, []byte("outbound:\n  mode: proxy\n"), 0o600))
	startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})}, func(o *daemon.Options) { o.ConfigPath = cfgPath })
	code, _, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice", "--wait=false")
	require.Equal(t, 0, code, errOut)

	c := &client.Client{}
	defer c.Close()
	var addr string
	require.Eventually(t, func() bool {
		st, err := c.Status(context.Background())
		if err != nil || st.Outbound == nil {
			return false
		}
		addr = st.Outbound.ProxyAddr
		return addr != ""
	}, 10*time.Second, 5*time.Millisecond, "the daemon reports its proxy")
	require.True(t, strings.HasPrefix(addr, "127.0.0.1:"), addr)

	// The proxy URLs carry the daemon's proxy credential.
	pc, err := c.ProxyCredential(context.Background())
	require.NoError(t, err)
	require.Equal(t, "sbx", pc.Username)
	require.NotEmpty(t, pc.Password)
	auth := "sbx:" + pc.Password + "@"
	code, out, errOut := runCLI(t, "run", "alice", "--", "sh", "-c", `printf '%s|%s|%s|%s' "$HTTP_PROXY" "$https_proxy" "$ALL_PROXY" "$NO_PROXY"`)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "http://"+auth+addr+"|http://"+auth+addr+"|socks5h://"+auth+addr+"|localhost,127.0.0.1,::1", out)

	code, out, errOut = runCLI(t, "env", "alice")
	require.Equal(t, 0, code, errOut)
	env, err := godotenv.Unmarshal(out)
	require.NoError(t, err, out)
	require.Equal(t, "http://"+auth+addr, env["HTTP_PROXY"])
	require.Equal(t, "socks5h://"+auth+addr, env["all_proxy"])

	code, out, errOut = runCLI(t, "status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "outbound: proxy "+addr)
	require.NotContains(t, out, pc.Password)
	code, out, errOut = runCLI(t, "status", "-o", "json")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, `"proxyAddr": "`+addr+`"`)
	require.NotContains(t, out, pc.Password, "the credential is never part of the status")
	code, out, errOut = runCLI(t, "status", "-o", "yaml")
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, pc.Password)
}

func TestRenderOutbound(t *testing.T) {
	ip := netip.MustParseAddr("127.241.0.3")
	for _, tc := range []struct {
		name string
		in   api.OutboundStatus
		want []string
	}{
		{"hosts", api.OutboundStatus{
			Mode: string(config.ModeHosts), HostsFile: "/etc/hosts", Services: []api.HostsEntry{
				{Service: "hotrod/driver", IP: ip, Ports: []api.OutboundPort{{Port: 8082, Listening: true}}},
				{Service: "hotrod/redis", IP: ip, Ports: []api.OutboundPort{{Port: 6379, Error: "address already in use"}}},
			},
			Namespaces: []string{"hotrod", "shared"}, Pending: []string{"shared"}, Discovered: 2,
		}, []string{"outbound: hosts file /etc/hosts, 2 Service(s) in hotrod, shared\n",
			"Services of shared not listed yet", "hotrod/redis port 6379 not reachable: address already in use"}},
		{"proxy with a note", api.OutboundStatus{
			Mode: string(config.ModeProxy), ProxyAddr: "127.0.0.1:4242", Note: "hosts file /etc/hosts is not writable by the daemon; using proxy mode",
			Namespaces: []string{"hotrod"}, Discovered: 7,
		}, []string{"outbound: proxy 127.0.0.1:4242 (HTTP and SOCKS5, password-protected; `sbx run` and `sbx env` pass it), 7 Service(s) in hotrod (hosts file /etc/hosts is not writable"}},
		{"off", api.OutboundStatus{Mode: string(config.ModeOff)}, []string{"outbound: off"}},
		{"idle", api.OutboundStatus{Mode: string(config.ModeAuto), Note: "starts when a sandbox is connected"},
			[]string{"outbound: auto (starts when a sandbox is connected)"}},
		{"failed", api.OutboundStatus{Mode: string(config.ModeHosts), Error: "hosts file /etc/hosts is managed by another sbx daemon"},
			[]string{"outbound: hosts, NOT running: hosts file /etc/hosts is managed by another sbx daemon"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := renderOutbound(tc.in)
			for _, w := range tc.want {
				require.Contains(t, got, w)
			}
		})
	}
}
