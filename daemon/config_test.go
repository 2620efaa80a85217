package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/config"
)

func TestConfigAppliedLiveAndErrorsShown(t *testing.T) {
	dir := shortTempDir(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("baggageKey: team-key\npoolSize: 1\nrelayMaxStreams: 256\n"), 0o600))
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, ConfigPath: cfgPath})
	ctx := context.Background()
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	require.Equal(t, "team-key", st.BaggageKey)
	require.Equal(t, 256, fc.appliedOptions()[0].RelayMaxStreams, "the config's stream cap reaches Apply")
	// The config leaves outbound at its defaults (auto mode): the sandbox
	// brings outbound access up on the test's hosts file, never /etc/hosts.
	require.Eventually(t, func() bool {
		s, err := td.client.Status(ctx)
		return err == nil && s.Outbound != nil && s.Outbound.HostsFile != ""
	}, 10*time.Second, 10*time.Millisecond, "outbound access did not start in hosts mode")
	s0, err := td.client.Status(ctx)
	require.NoError(t, err)
	require.NotEqual(t, config.DefaultHostsFile, s0.Outbound.HostsFile)

	// An invalid edit keeps the old config and shows the error.
	require.NoError(t, os.WriteFile(cfgPath, []byte("poolSize: many\n"), 0o600))
	require.Eventually(t, func() bool {
		s, err := td.client.Status(ctx)
		return err == nil && s.ConfigError != ""
	}, 10*time.Second, 10*time.Millisecond)
	s, _ := td.client.Status(ctx)
	require.Contains(t, s.ConfigError, cfgPath)
	require.Contains(t, s.ConfigError, "previous configuration stays in use")

	// A valid edit clears it and re-applies with the new baggage key,
	// keeping the routing key.
	applies := len(fc.appliedKeys())
	require.NoError(t, os.WriteFile(cfgPath, []byte("baggageKey: other-key\n"), 0o600))
	require.Eventually(t, func() bool {
		s, err := td.client.Status(ctx)
		return err == nil && s.ConfigError == "" && len(s.Sandboxes) == 1 &&
			s.Sandboxes[0].BaggageKey == "other-key" && s.Sandboxes[0].Phase == api.PhaseReady
	}, 10*time.Second, 10*time.Millisecond)
	require.Greater(t, len(fc.appliedKeys()), applies)
	opts := fc.appliedOptions()
	require.Zero(t, opts[len(opts)-1].RelayMaxStreams, "left out: the relay's default")

	// A change of the stream cap alone re-applies too: the relay's args
	// and memory depend on it.
	applies = len(fc.appliedKeys())
	require.NoError(t, os.WriteFile(cfgPath, []byte("baggageKey: other-key\nrelayMaxStreams: 512\n"), 0o600))
	require.Eventually(t, func() bool {
		opts := fc.appliedOptions()
		s, err := td.client.Status(ctx)
		return err == nil && len(opts) > applies && opts[len(opts)-1].RelayMaxStreams == 512 &&
			len(s.Sandboxes) == 1 && s.Sandboxes[0].Phase == api.PhaseReady
	}, 10*time.Second, 10*time.Millisecond, "the new stream cap was not applied")
	// So does a change of outbound.deny alone: the relay's args depend on
	// it, though the rest of the outbound section applies without one.
	applies = len(fc.appliedKeys())
	require.NoError(t, os.WriteFile(cfgPath, []byte("baggageKey: other-key\nrelayMaxStreams: 512\noutbound:\n  deny: [10.0.0.0/24, 'fd00:bad::/32']\n"), 0o600))
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00:bad::/32")}
	require.Eventually(t, func() bool {
		opts := fc.appliedOptions()
		s, err := td.client.Status(ctx)
		return err == nil && len(opts) > applies && slices.Equal(opts[len(opts)-1].RelayDeny, want) &&
			len(s.Sandboxes) == 1 && s.Sandboxes[0].Phase == api.PhaseReady
	}, 10*time.Second, 10*time.Millisecond, "the new deny list was not applied")
	for _, k := range fc.appliedKeys() {
		require.Equal(t, st.RoutingKey, k)
	}
}

// TestConfigEditOutsideTheObjectsKeepsTheTunnel: an edit that does not
// touch what the sandbox's objects depend on (here: the outbound section)
// does not re-apply the sandbox or reconnect its tunnel, even as the
// daemon's first config change.
func TestConfigEditOutsideTheObjectsKeepsTheTunnel(t *testing.T) {
	dir := shortTempDir(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	base := "baggageKey: team-key\noutbound:\n  hostsFile: " + hosts + "\n  hostsRange: 127.247.0.0/16\n"
	require.NoError(t, os.WriteFile(cfgPath, []byte(base+"  mode: off\n"), 0o600))
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, ConfigPath: cfgPath})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	applies := len(fc.appliedKeys())

	require.NoError(t, os.WriteFile(cfgPath, []byte(base+"  mode: proxy\n"), 0o600))
	require.Eventually(t, func() bool {
		s, err := td.client.Status(ctx)
		return err == nil && s.Outbound != nil && s.Outbound.Mode == string(config.ModeProxy) && s.Outbound.ProxyAddr != ""
	}, 10*time.Second, 10*time.Millisecond, "the outbound edit was applied")
	s, err := td.client.Status(ctx)
	require.NoError(t, err)
	require.Len(t, s.Sandboxes, 1)
	require.Equal(t, api.PhaseReady, s.Sandboxes[0].Phase)
	require.Equal(t, applies, len(fc.appliedKeys()), "the sandbox was not re-applied")
}
