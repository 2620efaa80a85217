package outbound

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/config"
)

func TestRefuseSystemHostsFile(t *testing.T) {
	temp := filepath.Join(t.TempDir(), "hosts")
	link := filepath.Join(t.TempDir(), "hosts-link")
	linked := os.Symlink(config.DefaultHostsFile, link) == nil
	type guardCase struct {
		name   string
		mode   config.OutboundMode
		file   string
		inTest bool
		refuse bool
	}
	tests := []guardCase{
		{"hosts mode on /etc/hosts", config.ModeHosts, config.DefaultHostsFile, true, true},
		{"auto mode on /etc/hosts", config.ModeAuto, config.DefaultHostsFile, true, true},
		{"unset mode is auto", "", config.DefaultHostsFile, true, true},
		{"another spelling", config.ModeHosts, "/etc//./hosts", true, true},
		{"temp hosts file", config.ModeHosts, temp, true, false},
		{"proxy mode never edits it", config.ModeProxy, config.DefaultHostsFile, true, false},
		{"off", config.ModeOff, config.DefaultHostsFile, true, false},
		{"production", config.ModeHosts, config.DefaultHostsFile, false, false},
	}
	if linked {
		tests = append(tests, guardCase{"a link to it", config.ModeHosts, link, true, true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := refuseSystemHostsFile(config.Outbound{Mode: tt.mode, HostsFile: tt.file}, tt.inTest)
			if !tt.refuse {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, s := range []string{tt.file, "test binary", "temp hosts file", "daemon.Options.HostsFile", "outbound.hostsFile"} {
				require.Contains(t, err.Error(), s)
			}
		})
	}
}

// TestStartRefusesSystemHostsFile: Start in this test binary refuses
// the machine's hosts file before it touches anything.
func TestStartRefusesSystemHostsFile(t *testing.T) {
	before, readErr := os.ReadFile(config.DefaultHostsFile)
	for _, mode := range []config.OutboundMode{config.ModeHosts, config.ModeAuto} {
		e := newHostsEnv(t)
		cfg := outboundCfg(e, mode)
		cfg.HostsFile = config.DefaultHostsFile
		r, err := Start(Options{ProxyPassword: testProxyPassword, Config: cfg, Catalog: e.cat, Dial: e.si.dial, LockPath: e.lock, StatePath: e.state})
		require.ErrorContains(t, err, "refusing to edit the machine's hosts file", mode)
		require.Nil(t, r)
		require.NoFileExists(t, e.lock, "not even the hosts lock was taken")
	}
	if readErr == nil {
		after, err := os.ReadFile(config.DefaultHostsFile)
		require.NoError(t, err)
		require.Equal(t, string(before), string(after))
	}
}
