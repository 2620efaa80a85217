// Package simbin runs the built sbx binary, and the daemon process it
// starts, against the simulated cluster (package sim) through a
// kubeconfig, as a developer runs sbx against a real one: its own HOME,
// XDG folders, user config and hosts file in a temporary folder, never
// the user's. The end-to-end tests and the fault matrix of cmd/sbx drive
// it, and so does `sbx bench connect`.
package simbin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/tools/testbed/prober"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
)

// Outbound modes of Options.Outbound.
const (
	// OutboundHosts gives cluster Services addresses from
	// Options.HostsRange in a private hosts file.
	OutboundHosts = "hosts"
	// OutboundProxy runs the daemon's proxy on a loopback port the
	// kernel picks: no fixed address, for runs that share a machine.
	OutboundProxy = "proxy"
)

// Options configure Start.
type Options struct {
	// Bin is the sbx binary (required).
	Bin string
	// Logger receives the simulated cluster's logs; nil discards them.
	Logger *slog.Logger
	// Outbound is the daemon's outbound mode (default OutboundHosts).
	Outbound string
	// HostsRange is the hosts mode's address range (default
	// 127.245.0.0/16).
	HostsRange string
}

// Env is a simulated cluster and a home for the sbx binary.
type Env struct {
	// Bin is the sbx binary; Home the temporary folder that holds its
	// XDG folders, the kubeconfig, the hosts file and spec files.
	Bin, Home string
	// Environ is the environment sbx commands run with (and the daemon
	// they start inherits).
	Environ []string
	Sim     *sim.Cluster
	// Kubeconfig addresses the simulated API server over HTTP.
	Kubeconfig string
	// HostsFile is the private hosts file hosts mode edits; its content
	// before sbx is HostsBefore.
	HostsFile string
	// Daemon is a client of the daemon's socket in Home.
	Daemon *client.Client
}

// HostsBefore is the private hosts file's content before sbx.
const HostsBefore = "127.0.0.1 localhost\n"

// Start starts a simulated cluster and prepares a home for the sbx
// binary. No daemon runs until a command starts one. Close stops it all.
func Start(ctx context.Context, o Options) (_ *Env, err error) {
	if o.Bin == "" {
		return nil, errors.New("simbin: Options.Bin is required")
	}
	if o.Outbound == "" {
		o.Outbound = OutboundHosts
	}
	if o.HostsRange == "" {
		o.HostsRange = "127.245.0.0/16"
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	home, err := simenv.TempDir() // short: the daemon's socket lives here
	if err != nil {
		return nil, err
	}
	e := &Env{Bin: o.Bin, Home: home}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.Sim, err = sim.Start(ctx, sim.Options{Logger: logger.With("side", "cluster")}); err != nil {
		return nil, fmt.Errorf("start the simulated cluster: %w", err)
	}
	e.Kubeconfig = filepath.Join(home, "kubeconfig")
	if err := e.Sim.WriteKubeconfig(e.Kubeconfig); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(home, "config", "sbx"), 0o700); err != nil {
		return nil, err
	}
	// Hosts mode edits a private hosts file: never the system's.
	e.HostsFile = filepath.Join(home, "hosts")
	if err := os.WriteFile(e.HostsFile, []byte(HostsBefore), 0o644); err != nil {
		return nil, err
	}
	conf := "relayImage: ghcr.io/sbx-dev/sbx:sim\noutbound:\n  mode: " + o.Outbound + "\n  hostsFile: " + e.HostsFile +
		"\n  hostsRange: " + o.HostsRange + "\n"
	if o.Outbound == OutboundProxy {
		conf += "  proxyListen: 127.0.0.1:0\n"
	}
	if err := os.WriteFile(filepath.Join(home, "config", "sbx", "config.yaml"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	e.Environ = []string{
		"HOME=" + home,
		"XDG_RUNTIME_DIR=" + filepath.Join(home, "run"),
		"XDG_STATE_HOME=" + filepath.Join(home, "state"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"KUBECONFIG=" + e.Kubeconfig,
		"PATH=" + os.Getenv("PATH"),
	}
	e.Daemon = &client.Client{Socket: filepath.Join(home, "run", "sbx", "sbx.sock")}
	return e, nil
}

// Close stops the daemon (its sandboxes' objects die with the cluster),
// the cluster, and removes the home.
func (e *Env) Close() {
	if e.Daemon != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = e.Command(ctx, "daemon", "stop").CombinedOutput()
		cancel()
		e.Daemon.Close()
	}
	if e.Sim != nil {
		e.Sim.Close()
	}
	_ = os.RemoveAll(e.Home)
}

// Command is an sbx command in the env.
func (e *Env) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.Bin, args...)
	cmd.Env = e.Environ
	return cmd
}

// Run runs an sbx command and returns its output (stdout and stderr); a
// failure's error carries the output.
func (e *Env) Run(ctx context.Context, args ...string) (string, error) {
	out, err := e.Command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("sbx %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// DaemonPID is the running daemon's process id.
func (e *Env) DaemonPID(ctx context.Context) (int, error) {
	st, err := e.Daemon.Status(ctx)
	if err != nil {
		return 0, err
	}
	return st.PID, nil
}

// WriteSpec writes a sandbox file, named by --set name=..., mapping
// route:8083 in namespace hotrod to local, and returns its path.
func (e *Env) WriteSpec(local string) (string, error) {
	p := filepath.Join(e.Home, "sandbox.yaml")
	return p, os.WriteFile(p, []byte(RouteSpec(sim.AppNamespace, local)), 0o600)
}

// RouteSpec is a sandbox spec file, named by --set name=..., mapping
// route:8083 in namespace ns to local.
func RouteSpec(ns, local string) string {
	return `name: '@{name}'
spec:
  description: route service on my laptop
  local:
    - name: route
      from: {kind: Deployment, namespace: ` + ns + `, name: route}
      mappings:
        - port: 8083
          toLocal: ` + local + "\n"
}

// Cut closes every port-forward connection at once, as a network failure
// or an API server restart does, and returns how many it closed.
func (e *Env) Cut() (int, error) {
	n := e.Sim.PortForward.CutAll()
	if n == 0 {
		return 0, errors.New("no port-forward connection to cut")
	}
	return n, nil
}

// DispatchURL is frontend's /dispatch in the simulated cluster.
const DispatchURL = "http://frontend.hotrod:8080/dispatch"

// Dispatch sends GET url (frontend's /dispatch) with the baggage header
// (none if empty) and returns who served each hop, the status and the
// body.
func Dispatch(ctx context.Context, c *http.Client, url, baggage string) (sim.Hop, int, []byte, error) {
	var hop sim.Hop
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return hop, 0, nil, err
	}
	if baggage != "" {
		req.Header.Set("baggage", baggage)
	}
	resp, err := c.Do(req)
	if err != nil {
		return hop, 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return hop, resp.StatusCode, body, err
	}
	_ = json.Unmarshal(body, &hop)
	return hop, resp.StatusCode, body, nil
}

// RouteOnLaptop is what a request to frontend reads when route is served
// by the laptop (sim.StartLocalRoute) and everything else by the baseline.
const RouteOnLaptop = "frontend@baseline(route@v2, driver@baseline)"

// KeyedOnce is a prober.Once: a request to frontend from a pod of the
// cluster with the baggage header, served when its hops read want (say
// "frontend@baseline(route@v2, driver@baseline)": route on the laptop).
func KeyedOnce(c *http.Client, baggage, want string) prober.Once {
	return func(ctx context.Context) error {
		hop, status, body, err := Dispatch(ctx, c, DispatchURL, baggage)
		switch {
		case err != nil:
			return err
		case hop.String() != want:
			return fmt.Errorf("%d %s", status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
