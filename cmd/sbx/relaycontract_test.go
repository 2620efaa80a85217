package main

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec/specfile"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/relay"
	"github.com/sbx-dev/sbx/tunnel"
)

// TestRelayDeploymentMatchesRelayFlags feeds the relay container of the
// rendered Deployment (command and args) to the relay's own parser: the
// two halves of the command-line contract must agree, and the verifier the
// daemon computes from its token must be what the relay checks against.
func TestRelayDeploymentMatchesRelayFlags(t *testing.T) {
	fh, err := os.Open("../../testdata/baseline/hotrod.yaml")
	require.NoError(t, err)
	defer fh.Close()
	base, err := cluster.ParseManifests(fh, "default")
	require.NoError(t, err)
	sb, err := specfile.Load("../../testdata/render/three.yaml", nil)
	require.NoError(t, err)
	// The example config's relay settings, as the daemon passes them.
	conf, err := config.Load("../../testdata/config/config.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, conf.Outbound.Deny)
	objs, err := cluster.Plan(t.Context(), base, sb, cluster.Options{
		RoutingKey: "k3x9a0b1c2d3e", TokenVerifier: tunnel.VerifierOf("tok-123").String(), RelayImage: "ghcr.io/sbx-dev/sbx:test",
		RelayMaxStreams: conf.RelayMaxStreams, RelayDeny: conf.Outbound.Deny,
	})
	require.NoError(t, err)

	c := objs.Relay.Spec.Template.Spec.Containers[0]
	require.Equal(t, []string{"sbx"}, c.Command)
	require.Equal(t, "relay", c.Args[0])
	for _, e := range c.Env {
		require.Nil(t, e.ValueFrom, "the relay reads nothing from Secrets or elsewhere: %s", e.Name)
	}
	opts, err := relay.ParseArgs(c.Args[1:])
	require.NoError(t, err)
	require.Equal(t, "alice", opts.Sandbox)
	require.Equal(t, "127.0.0.1:7000", opts.Listen)
	require.Equal(t, ":7001", opts.HealthListen)
	require.True(t, opts.TokenVerifier.Verify("tok-123"), "the relay accepts the daemon's token")
	require.False(t, opts.TokenVerifier.Verify("tok-124"))
	require.Equal(t, 10*time.Second, opts.Grace)
	require.Equal(t, 20*time.Second, opts.DrainTimeout)
	require.Len(t, opts.Inbound, 3)
	require.Equal(t, conf.RelayMaxStreams, opts.MaxStreams)
	require.Equal(t, conf.Outbound.Deny, opts.Deny, "the relay refuses exactly outbound.deny")

	ports := map[int32]corev1.ContainerPort{}
	for _, p := range c.Ports {
		ports[p.ContainerPort] = p
	}
	for i, in := range opts.Inbound {
		w := objs.Workloads[i]
		require.Equal(t, w.Local.Name, in.Workload)
		require.EqualValues(t, w.Ports[0].Port, in.Port)
		require.EqualValues(t, w.Ports[0].RelayPort, in.ContainerPort)
		require.Contains(t, ports, int32(in.ContainerPort), "declared as a container port")
		require.Equal(t, w.Ports[0].Protocol, in.AppProtocol)
	}
	// Every sandbox Service targets a port the relay listens on.
	for _, s := range objs.Services {
		for _, p := range s.Spec.Ports {
			found := false
			for _, in := range opts.Inbound {
				found = found || int32(in.ContainerPort) == p.TargetPort.IntVal
			}
			require.True(t, found, "Service %s port %d targets %d", s.Name, p.Port, p.TargetPort.IntVal)
		}
	}
}
