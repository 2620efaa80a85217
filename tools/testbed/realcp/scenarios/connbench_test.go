package scenarios

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/sbx-dev/sbx/tools/testbed/connbench"
	"github.com/sbx-dev/sbx/tools/testbed/cutproxy"
	"github.com/sbx-dev/sbx/tools/testbed/figures"
	"github.com/sbx-dev/sbx/tools/testbed/prober"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simbin"
)

// TestConnectFigures measures on the real control plane what `sbx bench
// connect` measures on the simulated cluster (package connbench, the same
// code): the sbx binary as the developer connects (its own daemon
// process, started by the command), `sbx connect` → ready with the relay
// pod still to start and already running (after `sbx daemon stop`),
// port-forward cuts → ready again and → keyed request served, and the
// daemon's memory idle with one sandbox and after 1,000 streams. The
// figures go to the log and, under make test-real, after the run; no
// figure is compared with a time.
//
// The cut: the simulator's port-forward server, where the laptop's
// port-forwards end, closes them all at once. Here they end at the real
// API server, which cannot be told to; so the developer's kubeconfig
// points at a proxy in front of it (package cutproxy), and a cut closes
// every connection the laptop has to the API server at once, as the
// laptop's link dropping does (Wi-Fi roaming, a VPN reconnecting): 20
// cuts, measured as on the simulator. A second, shorter series cuts on
// the other side of the API server: the node stand-in closes every
// connection of its kubelet API (a kubelet restart, a network failure
// between control plane and node), and the real API server has to pass
// the close on to its clients. It does so one port-forward at a time,
// seconds apart, so the daemon replaces its sessions one by one and the
// sandbox never leaves "ready" while the relay has none: only the time
// until a keyed request is served again is measured there.
func TestConnectFigures(t *testing.T) {
	e := newEnv(t, "connbench", nil)
	e.lenientWrites = true // the binary's own requests (see TestSbxBinaryConnectListDisconnect)
	cli := newSbxCLI(t)
	// The developer's kubeconfig, through a proxy the test can cut.
	apiServer, err := url.Parse(cp.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := cutproxy.Start(apiServer.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	kc, err := clientcmd.LoadFromFile(cp.DeveloperKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range kc.Clusters {
		c.Server = "https://" + proxy.Addr()
	}
	kubeconfig := filepath.Join(t.TempDir(), "developer-via-proxy.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	environ := append(slices.Clone(cli.env), "KUBECONFIG="+kubeconfig)
	local, err := sim.StartLocalRoute("127.0.0.1:0", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	specFile := filepath.Join(t.TempDir(), "sandbox.yaml")
	if err := os.WriteFile(specFile, []byte(simbin.RouteSpec(e.ns, local.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	meshClient := mesh.HTTPClient(e.ns)
	t.Cleanup(meshClient.CloseIdleConnections)
	var dialer net.Dialer
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	res, err := connbench.Run(ctx, connbench.Target{
		Cluster:   "real control plane",
		Bin:       sbxBin,
		Environ:   environ,
		SpecFile:  specFile,
		Kube:      e.Admin,
		Namespace: e.ns,
		Cuts: []connbench.Cut{
			{Name: "laptop↔API server", Do: func() (int, error) {
				n := proxy.CutAll()
				if n == 0 {
					return 0, fmt.Errorf("the laptop had no connection to the API server to cut")
				}
				return n, nil
			}},
			{Name: "API server↔kubelet", Times: 5, ServedOnly: true, Do: func() (int, error) {
				n := theNode.CutPortForwards()
				if n == 0 {
					return 0, fmt.Errorf("the kubelet API had no connection to cut")
				}
				return n, nil
			}},
		},
		Keyed: func(baggage string) prober.Once {
			return func(ctx context.Context) error { return keyedOnce(ctx, meshClient, baggage) }
		},
		// The host reaches the pods' addresses (the node's veths).
		Dial: dialer.DialContext,
	}, connbench.Options{Progress: func(line string) { t.Log(line) }})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	figures.Save(t, "connect and reconnect on the real control plane", indent(text.String()))
}

// keyedOnce GETs frontend's /dispatch through the mesh with baggage and
// wants route served by the laptop (v2).
func keyedOnce(ctx context.Context, c *http.Client, baggage string) error {
	hop, status, body, err := simbin.Dispatch(ctx, c, "http://frontend:8080/dispatch", baggage)
	switch {
	case err != nil:
		return err
	case routeVersion(hop) != "v2":
		return fmt.Errorf("%d %s", status, strings.TrimSpace(string(body)))
	}
	return nil
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n")
}
