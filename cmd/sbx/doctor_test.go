package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/daemon/hostsfile"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/stretchr/testify/require"
	istioapi "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDoctorWithoutKubeconfig: doctor with no usable kubeconfig says so
// with the fix, still reports the daemon, and exits 1; -o json lists the
// checks.
func TestDoctorWithoutKubeconfig(t *testing.T) {
	dir := cliEnv(t)
	t.Setenv("KUBECONFIG", filepath.Join(dir, "missing"))
	code, out, errOut := runCLI(t, "doctor")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, out, "✗ kubeconfig: ")
	require.Contains(t, out, "    fix: pass --kubeconfig/--context")
	require.Contains(t, out, "✓ daemon: not running; sbx connect starts it")
	code, out, _ = runCLI(t, "doctor", "-o", "json")
	require.Equal(t, 1, code)
	var checks []live.Check
	require.NoError(t, json.Unmarshal([]byte(out), &checks))
	require.Equal(t, "kubeconfig", checks[0].Name)
	require.Equal(t, live.LevelFail, checks[0].Level)

	// A config the daemon would refuse is a failed check, not ignored.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config", "sbx", "config.yaml"), []byte("relayImag: x\n"), 0o600))
	code, out, _ = runCLI(t, "doctor")
	require.Equal(t, 1, code)
	require.Contains(t, out, "✗ sbx config: ")
	require.Contains(t, out, "relayImag")
	require.Contains(t, out, "fix: fix the sbx config at "+filepath.Join(dir, "config", "sbx", "config.yaml"))
}

// TestDoctorRelayProbe: against the simulated cluster through a
// kubeconfig, doctor starts a short-lived relay of the config's relayImage:
// an image the cluster pulls passes, one it cannot pull fails naming the
// image and the fix, and either way the probe leaves nothing behind.
// --no-relay-probe creates nothing.
func TestDoctorRelayProbe(t *testing.T) {
	dir := cliEnv(t)
	ctx := t.Context()
	c, err := sim.Start(ctx, sim.Options{Pullable: func(img string) bool { return img != "registry.example/sbx:missing" }})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	kubeconfig := filepath.Join(dir, "sim.kubeconfig")
	require.NoError(t, c.WriteKubeconfig(kubeconfig))
	setImage := func(img string) {
		writeTestConfig(t, dir)
		path := filepath.Join(dir, "config", "sbx", "config.yaml")
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, append(b, []byte("relayImage: "+img+"\n")...), 0o600))
	}
	leftovers := func() []string {
		var names []string
		leases, err := c.Clients.Kube.CoordinationV1().Leases(sim.AppNamespace).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for _, l := range leases.Items {
			names = append(names, "Lease "+l.Name)
		}
		deps, err := c.Clients.Kube.AppsV1().Deployments(sim.AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.LabelManagedBy})
		require.NoError(t, err)
		for _, d := range deps.Items {
			names = append(names, "Deployment "+d.Name)
		}
		return names
	}
	find := func(out string) live.Check {
		var checks []live.Check
		require.NoError(t, json.Unmarshal([]byte(out), &checks), out)
		for _, ch := range checks {
			if ch.Name == "relay image" {
				return ch
			}
		}
		t.Fatalf("no relay image check in %s", out)
		return live.Check{}
	}

	setImage("registry.example/sbx:good")
	code, out, errOut := runCLI(t, "doctor", "--kubeconfig", kubeconfig, "-o", "json")
	ch := find(out)
	require.Equal(t, live.LevelOK, ch.Level, "%+v\n%s", ch, errOut)
	require.Contains(t, ch.Detail, "registry.example/sbx:good: a relay started from it was ready")
	require.Contains(t, errOut, "relay probe: ", "the wait shows progress")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Empty(t, leftovers())

	setImage("registry.example/sbx:missing")
	code, out, errOut = runCLI(t, "doctor", "--kubeconfig", kubeconfig)
	require.Equal(t, 1, code, "%s\n%s", out, errOut)
	require.Contains(t, out, "✗ relay image: registry.example/sbx:missing: ")
	require.Contains(t, out, "cannot pull registry.example/sbx:missing")
	require.Contains(t, out, "fix: set relayImage in the sbx config")
	require.NotContains(t, out, "not ready after", "the pull failure ends the probe at once")
	require.Empty(t, leftovers())

	code, out, errOut = runCLI(t, "doctor", "--kubeconfig", kubeconfig, "--no-relay-probe")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.NotContains(t, out, "relay image")
	require.NotContains(t, errOut, "relay probe")
}

// TestDoctorPreviewsRoutes: with -f, doctor previews the sandbox's mesh
// routes against the cluster and writes nothing: on the simulated
// baseline keyed requests would reach the sandbox; next to a wildcard
// VirtualService that routes route only for frontend, it warns with the
// plan's reason, as connect would.
func TestDoctorPreviewsRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	dir := cliEnv(t)
	ctx := t.Context()
	specPath := writeSpec(t, dir)
	doctor := func(opts sim.Options, seed func(*sim.Cluster)) (int, string, *sim.Cluster) {
		c, err := sim.Start(ctx, opts)
		require.NoError(t, err)
		t.Cleanup(c.Close)
		if seed != nil {
			seed(c)
		}
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		require.NoError(t, c.WriteKubeconfig(kubeconfig))
		before, err := c.Clients.Istio.NetworkingV1().VirtualServices("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		code, out, errOut := runCLI(t, "doctor", "--kubeconfig", kubeconfig, "--no-relay-probe", "-f", specPath, "--set", "name=alice")
		after, err := c.Clients.Istio.NetworkingV1().VirtualServices("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		require.Equal(t, before.Items, after.Items, "doctor writes no route")
		t.Log(out, errOut)
		return code, out, c
	}

	code, out, _ := doctor(sim.Options{}, nil)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "✓ routes route.hotrod:8083: keyed requests would reach the sandbox from every client namespace (routes of hotrod/route)")

	wild := &istionet.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "wild", Namespace: sim.AppNamespace}}
	wild.Spec.Hosts = []string{"*.hotrod.svc.cluster.local"}
	wild.Spec.Http = []*istioapi.HTTPRoute{{
		Name:  "frontend-only",
		Match: []*istioapi.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "frontend"}}},
		Route: []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: "route.hotrod.svc.cluster.local"}}},
	}}
	code, out, _ = doctor(sim.Options{WithoutBaselineVirtualService: true}, func(c *sim.Cluster) {
		_, err := c.Clients.Istio.NetworkingV1().VirtualServices(sim.AppNamespace).Create(ctx, wild, metav1.CreateOptions{})
		require.NoError(t, err)
	})
	require.Equal(t, 0, code, "warnings do not fail doctor: %s", out)
	require.Contains(t, out, "! routes route.hotrod:8083: ")
	require.Contains(t, out, "keyed requests partly reach the sandbox")
	require.Contains(t, out, "! routes: ")
	require.Contains(t, out, "would take route away from it")
}

// TestDoctorOutboundCheck: with no daemon running, doctor says what
// outbound access one started now would get, as the daemon decides it.
func TestDoctorOutboundCheck(t *testing.T) {
	hosts := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	missing := filepath.Join(t.TempDir(), "no", "hosts")
	for _, tc := range []struct {
		name  string
		ob    config.Outbound
		level string
		want  string
	}{
		{"off", config.Outbound{Mode: config.ModeOff}, live.LevelOK, "outbound access: off"},
		{"proxy", config.Outbound{Mode: config.ModeProxy}, live.LevelOK, "outbound access: proxy (outbound.mode: proxy)"},
		{"auto, writable", config.Outbound{HostsFile: hosts}, live.LevelOK, "hosts mode: the daemon keeps cluster names in a marked block of " + hosts},
		{"auto, not writable", config.Outbound{HostsFile: missing}, live.LevelOK, "proxy (auto: hosts file " + missing + " is not writable by the daemon; using proxy mode)"},
		{"hosts, not writable", config.Outbound{Mode: config.ModeHosts, HostsFile: missing}, live.LevelFail, "hosts mode, but the hosts file " + missing + " is not writable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := outboundCheck(tc.ob)
			require.Equal(t, tc.level, c.Level, "%+v", c)
			require.Contains(t, c.Detail, tc.want)
		})
	}

	// Another daemon (another state directory) holds the block.
	o, err := hostsfile.Acquire(hostsfile.Options{Path: hosts, LockPath: filepath.Join(t.TempDir(), "hosts.lock")})
	require.NoError(t, err)
	defer o.Close()
	c := outboundCheck(config.Outbound{HostsFile: hosts})
	require.Equal(t, live.LevelWarn, c.Level, "%+v", c)
	require.Contains(t, c.Detail, "proxy, not hosts mode: hosts file "+hosts+" is managed by another sbx daemon")
	c = outboundCheck(config.Outbound{Mode: config.ModeHosts, HostsFile: hosts})
	require.Equal(t, live.LevelFail, c.Level, "%+v", c)
	require.Contains(t, c.Fix, "stop the other sbx daemon")
}
