//go:build !windows

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simbin"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
)

// TestE2EBinary drives the built sbx binary and its own daemon process
// against the simulated cluster through a kubeconfig (the simulator's API
// over HTTP): connect, keyed routing, kill -9 of the daemon and its
// restoration with the same routing key and a consistent hosts block,
// disconnect (scenario 8 with a real kill -9, scenarios 2 and 5 through the
// CLI).
func TestE2EBinary(t *testing.T) {
	be := startBinaryEnv(t)
	ctx, c, hosts, sbx, dc, daemonPID := be.ctx, be.sim, be.hosts, be.sbx, be.dc, be.daemonPID
	const original = binaryEnvHosts
	hostsBlock := be.hostsBlock
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e2eLogger(t))
	require.NoError(t, err)
	defer local.Close()
	specPath := be.spec(local.Addr())

	out := sbx("connect", "-f", specPath, "--set", "name=alice")
	st, err := dc.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st.Phase)
	key := st.RoutingKey
	require.Contains(t, out, key, "connect prints the routing key")

	client := c.HTTPClient("default")
	defer client.CloseIdleConnections()
	keyed := "sbx-routing-key=" + key
	eventuallyServed(t, client, keyed, routeV2)
	eventuallyServed(t, client, "", allBaseline)

	require.Eventually(t, func() bool { return strings.Contains(hostsBlock(), "driver.hotrod.svc.cluster.local") },
		10*time.Second, 20*time.Millisecond)
	blockBefore := hostsBlock()

	// kill -9 the daemon: the sandbox's objects stay; the next command
	// starts a new daemon, which restores the sandbox with the same key
	// and takes over the hosts block with the same addresses.
	pid := daemonPID()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		_, err := dc.Status(ctx)
		return api.IsNotRunning(err)
	}, 10*time.Second, 20*time.Millisecond)
	out = sbx("list")
	require.Contains(t, out, "alice")
	require.Eventually(t, func() bool {
		s, err := dc.Sandbox(ctx, "alice")
		return err == nil && s.Phase == api.PhaseReady
	}, 30*time.Second, 50*time.Millisecond)
	s, err := dc.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, key, s.RoutingKey, "the restarted daemon keeps the routing key")
	require.NotEqual(t, pid, daemonPID())
	eventuallyServed(t, client, keyed, routeV2)
	require.Eventually(t, func() bool { return hostsBlock() == blockBefore }, 10*time.Second, 20*time.Millisecond,
		"hosts entries after the restart:\n%s\nbefore:\n%s", hostsBlock(), blockBefore)
	hostsNow, err := os.ReadFile(hosts)
	require.NoError(t, err)
	require.Contains(t, string(hostsNow), fmt.Sprintf("pid %d", daemonPID()), "the new daemon owns the block")

	sbx("disconnect", "alice")
	e := &simenv.Env{Sim: c}
	require.Eventually(t, func() bool { return len(e.SbxObjects(ctx)) == 0 }, 20*time.Second, 20*time.Millisecond,
		"left behind: %v", e.SbxObjects(ctx))
	eventuallyServed(t, client, keyed, allBaseline)
	require.Eventually(t, func() bool { b, _ := os.ReadFile(hosts); return string(b) == original }, 10*time.Second, 20*time.Millisecond,
		"the hosts file is back to its original content")
	out = sbx("daemon", "stop")
	require.Contains(t, out, "stopped")
	_, err = dc.Status(ctx)
	require.True(t, api.IsNotRunning(err) || errors.Is(err, context.Canceled), "%v", err)
}

// TestE2EManagedDaemonRestores: after a kill -9 of the daemon, what a
// service manager does (start `sbx daemon --managed` again, with the
// variable the unit sets) is enough: the new daemon restores the sandbox
// with the same routing key and keyed requests reach it again, without any
// sbx command. A SIGTERM (systemctl stop, launchctl kill) ends it with
// exit code 0, which the service definitions do not restart.
func TestE2EManagedDaemonRestores(t *testing.T) {
	be := startBinaryEnv(t)
	ctx, dc := be.ctx, be.dc
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, e2eLogger(t))
	require.NoError(t, err)
	defer local.Close()
	be.sbx("connect", "-f", be.spec(local.Addr()), "--set", "name=alice")
	st, err := dc.Sandbox(ctx, "alice")
	require.NoError(t, err)
	key := st.RoutingKey
	client := be.sim.HTTPClient("default")
	defer client.CloseIdleConnections()
	keyed := "sbx-routing-key=" + key
	eventuallyServed(t, client, keyed, routeV2)

	pid := be.daemonPID()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		_, err := dc.Status(ctx)
		return api.IsNotRunning(err)
	}, 10*time.Second, 20*time.Millisecond)

	// The service manager's restart: no sbx command runs after it.
	managed := exec.CommandContext(ctx, be.bin, "daemon", "--managed")
	managed.Env = append(slices.Clone(be.env.Environ), "SBX_DAEMON_MANAGER=systemd")
	var stderr lockedBuffer
	managed.Stderr = &stderr
	require.NoError(t, managed.Start())
	exited := make(chan error, 1)
	go func() { exited <- managed.Wait() }()
	t.Cleanup(func() { _ = managed.Process.Kill() })
	require.Eventually(t, func() bool {
		s, err := dc.Sandbox(ctx, "alice")
		return err == nil && s.Phase == api.PhaseReady
	}, 30*time.Second, 50*time.Millisecond)
	s, err := dc.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, key, s.RoutingKey, "the restarted daemon keeps the routing key")
	full, err := dc.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, "systemd", full.Managed)
	require.Equal(t, managed.Process.Pid, full.PID)
	eventuallyServed(t, client, keyed, routeV2)

	require.NoError(t, managed.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit code 0 after SIGTERM; stderr:\n%s", stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("the managed daemon did not exit after SIGTERM")
	}
	require.Empty(t, stderr.String(), "a managed daemon logs only to its log file")
}

// binaryEnv is the built sbx binary with its own HOME, state, config (hosts
// mode on a private hosts file) and kubeconfig for a simulated cluster
// (package simbin), for a test.
type binaryEnv struct {
	env   *simbin.Env
	t     *testing.T
	ctx   context.Context
	bin   string
	sim   *sim.Cluster
	hosts string
	dc    *client.Client
}

// binaryEnvHosts is the private hosts file's content before sbx.
const binaryEnvHosts = simbin.HostsBefore

func startBinaryEnv(t *testing.T) *binaryEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the sbx binary")
	}
	bin := buildSbx(t) // from daemon_cli_test.go
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	e, err := simbin.Start(ctx, simbin.Options{Bin: bin, Logger: e2eLogger(t)})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return &binaryEnv{env: e, t: t, ctx: ctx, bin: bin, sim: e.Sim, hosts: e.HostsFile, dc: e.Daemon}
}

// sbx runs the binary and fails the test if it fails.
func (b *binaryEnv) sbx(args ...string) string {
	b.t.Helper()
	out, err := b.env.Run(b.ctx, args...)
	require.NoError(b.t, err)
	return out
}

func (b *binaryEnv) daemonPID() int {
	pid, err := b.env.DaemonPID(b.ctx)
	require.NoError(b.t, err)
	return pid
}

// spec writes a sandbox file mapping route:8083 to local and returns its path.
func (b *binaryEnv) spec(local string) string {
	p, err := b.env.WriteSpec(local)
	require.NoError(b.t, err)
	return p
}

// hostsBlock returns the cluster entries of the private hosts file,
// checking it holds one well-formed sbx block at most.
func (b *binaryEnv) hostsBlock() string {
	data, err := os.ReadFile(b.hosts)
	require.NoError(b.t, err)
	s := string(data)
	require.LessOrEqual(b.t, strings.Count(s, "# BEGIN sbx"), 1, "one sbx block at most:\n%s", s)
	require.Equal(b.t, strings.Count(s, "# BEGIN sbx"), strings.Count(s, "# END sbx"), s)
	var entries []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, ".svc.cluster.local") {
			entries = append(entries, line)
		}
	}
	return strings.Join(entries, "\n")
}
