// Package simenv is the simulated cluster with an in-process sbx daemon
// attached: what `sbx demo` runs and the end-to-end tests drive.
package simenv

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	istioapi "istio.io/api/networking/v1alpha3"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/cluster/meshmode"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/daemon/config"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// Env is a simulated cluster with an in-process sbx daemon attached to
// it through the daemon's normal code: cluster objects through package
// cluster on the simulator's clients, tunnels through the real client-go
// port-forward to the simulator's kubelet-side server. `sbx demo` runs it
// and the end-to-end tests drive it.
type Env struct {
	Sim    *sim.Cluster
	Client *client.Client
	Paths  api.Paths
	// ConfigPath is the daemon's user config; HostsFile the private hosts
	// file its hosts mode edits (never the system's).
	ConfigPath string
	HostsFile  string
	// Log is the logger the environment was started with.
	Log *slog.Logger

	cluster interface {
		daemon.Cluster
		Close() error
	}

	mu        sync.Mutex
	outbound  config.OutboundMode // the config's outbound.mode and mesh
	mesh      string
	daemon    *daemon.Daemon
	stopD     context.CancelFunc
	daemonErr chan error
}

// Start starts the simulated cluster and a daemon whose socket, state
// and config live under dir (keep it short: unix socket paths are
// limited). Outbound access starts in proxy mode; SetOutboundMode switches
// it (hosts mode edits a private hosts file under dir).
func Start(ctx context.Context, dir string, logger *slog.Logger, opts sim.Options) (*Env, error) {
	opts.Logger = logger.With("side", "cluster")
	c, err := sim.Start(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("start the simulated cluster: %w", err)
	}
	e := &Env{
		Sim: c,
		Log: logger,
		Paths: api.Paths{
			RuntimeDir: filepath.Join(dir, "run"),
			StateDir:   filepath.Join(dir, "state"),
		},
	}
	// The daemon's own adapter for a loaded cluster: package cluster on the
	// simulator's clients, port-forwards through its RESTConfig.
	kc := &kube.Cluster{
		REST: c.RESTConfig, Kube: c.Clients.Kube, Istio: c.Clients.Istio,
		Namespace: sim.AppNamespace, Context: "sim",
	}
	if c.Clients.Dynamic != nil {
		kc.Dynamic = c.Clients.Dynamic
	}
	e.cluster = live.NewFromKube(kc, live.Options{
		Logger: logger.With("side", "laptop"), WaitTimeout: 30 * time.Second,
		// The simulator runs the relay in-process from the generated
		// args; the image is only written into the Deployment.
		DefaultRelayImage: "ghcr.io/sbx-dev/sbx:sim",
	})
	e.Client = &client.Client{Socket: e.Paths.Socket()}
	e.ConfigPath = filepath.Join(dir, "config.yaml")
	e.HostsFile = filepath.Join(dir, "hosts")
	if err := os.WriteFile(e.HostsFile, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		c.Close()
		return nil, err
	}
	if opts.GatewayAPI {
		// CD routes with Gateway API here; so does the daemon, from its
		// first apply (a later config edit would race the first connect).
		e.mesh = meshmode.GatewayAPI
	}
	if err := e.SetOutboundMode(config.ModeProxy); err != nil {
		c.Close()
		return nil, err
	}
	if err := e.StartDaemon(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// StartDaemon starts the in-process daemon (again, after StopDaemon: it
// restores its sandboxes from its state file like a restarted daemon).
func (e *Env) StartDaemon(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopD != nil {
		return errors.New("the daemon is already running")
	}
	d, err := daemon.New(daemon.Options{
		Paths:         e.Paths,
		ConfigPath:    e.ConfigPath,
		Logger:        e.Log.With("side", "laptop"),
		Version:       "demo",
		Clusters:      func(context.Context, api.KubeconfigSource, string) (daemon.Cluster, error) { return e.cluster, nil },
		StatsInterval: 200 * time.Millisecond,
		Backoff:       daemon.Backoff{Min: 100 * time.Millisecond, Max: time.Second},
	})
	if err != nil {
		return err
	}
	dctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(dctx) }()
	e.daemon, e.stopD, e.daemonErr = d, cancel, errc
	// Wait until the socket answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.Client.Status(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the daemon did not come up: %w", err)
		}
		select {
		case err := <-errc:
			e.stopD = nil
			cancel()
			return fmt.Errorf("the daemon stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StopDaemon stops the daemon without disconnecting its sandboxes: their
// cluster objects stay, as after the laptop's daemon died.
func (e *Env) StopDaemon() error {
	e.mu.Lock()
	stop, errc := e.stopD, e.daemonErr
	e.stopD = nil
	e.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	err := <-errc
	e.Client.Close()
	e.Client = &client.Client{Socket: e.Paths.Socket()}
	return err
}

// Close stops the daemon, the port-forwards and the cluster.
func (e *Env) Close() {
	_ = e.StopDaemon()
	_ = e.cluster.Close()
	e.Client.Close()
	e.Sim.Close()
}

// SetOutboundMode writes the daemon's config with outbound access in mode
// (the daemon applies config edits live).
func (e *Env) SetOutboundMode(mode config.OutboundMode) error {
	e.mu.Lock()
	e.outbound = mode
	e.mu.Unlock()
	return e.writeConfig()
}

// SetMesh writes the daemon's config with mesh m (meshmode: auto, istio,
// gateway-api).
func (e *Env) SetMesh(m string) error {
	e.mu.Lock()
	e.mesh = m
	e.mu.Unlock()
	return e.writeConfig()
}

func (e *Env) writeConfig() error {
	e.mu.Lock()
	mode, mesh := e.outbound, cmp.Or(e.mesh, "auto")
	e.mu.Unlock()
	cfg := fmt.Sprintf(`# written by the sbx simulated cluster environment
relayImage: ghcr.io/sbx-dev/sbx:sim
mesh: %s
outbound:
  mode: %s
  hostsFile: %s
  hostsRange: 127.244.0.0/16
  proxyListen: 127.0.0.1:0
`, mesh, mode, e.HostsFile)
	tmp := e.ConfigPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, e.ConfigPath)
}

// ProxyURL is the daemon's outbound HTTP proxy with its credential, once
// it runs in proxy mode.
func (e *Env) ProxyURL(ctx context.Context) (string, error) {
	st, err := e.Client.Status(ctx)
	if err != nil {
		return "", err
	}
	if st.Outbound == nil || st.Outbound.ProxyAddr == "" {
		return "", errors.New("the daemon's outbound proxy is not running")
	}
	pc, err := e.Client.ProxyCredential(ctx)
	if err != nil {
		return "", err
	}
	u := url.URL{Scheme: "http", User: url.UserPassword(pc.Username, pc.Password), Host: st.Outbound.ProxyAddr}
	return u.String(), nil
}

// DialOutbound connects from the laptop to a cluster address (host:port)
// through the named sandbox's tunnel, using the running daemon's outbound
// path: the relay dials it inside the cluster.
func (e *Env) DialOutbound(ctx context.Context, sandbox, target string) (net.Conn, error) {
	e.mu.Lock()
	d := e.daemon
	running := e.stopD != nil
	e.mu.Unlock()
	if !running {
		return nil, errors.New("the sbx daemon is not running")
	}
	return d.DialOutbound(ctx, sandbox, target, "laptop-app")
}

// LaptopClient is an HTTP client for a process on the laptop started the
// way `sbx run` starts one: its requests go through the daemon's outbound
// proxy (looked up per request, so it follows the daemon's restarts).
func (e *Env) LaptopClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy: func(r *http.Request) (*url.URL, error) {
				p, err := e.ProxyURL(r.Context())
				if err != nil {
					return nil, err
				}
				return url.Parse(p)
			},
			MaxIdleConnsPerHost: 4,
		},
		Timeout: 20 * time.Second,
	}
}

// Connect connects a sandbox that sends route (hotrod) to local, and
// waits until it is ready.
func (e *Env) Connect(ctx context.Context, name, local string, progress func(api.Progress)) (api.SandboxStatus, error) {
	return e.Client.Connect(ctx, api.ConnectRequest{
		Spec:    RouteSandbox(name, local),
		Wait:    true,
		Timeout: 30 * time.Second,
	}, progress)
}

// RouteSandbox is the spec of a sandbox whose route runs on the laptop.
func RouteSandbox(name, local string) spec.Sandbox {
	return spec.Sandbox{
		Name: name,
		Spec: spec.Spec{
			Description: "route service on my laptop",
			Local: []spec.Local{{
				Name:     "route",
				From:     spec.Workload{Kind: spec.KindDeployment, Namespace: sim.AppNamespace, Name: "route"},
				Mappings: []spec.Mapping{{Port: 8083, ToLocal: local}},
			}},
		},
	}
}

// TempDir makes a short private directory (unix socket paths are limited
// to about 100 bytes).
func TempDir() (string, error) {
	return os.MkdirTemp("", "sbxd")
}

// VirtualServiceContent renders what sbx must restore exactly in a
// VirtualService it shares: labels, annotations and spec.
//
// With keepKeys, the routes of sandboxes whose routing key is not among
// them are left out: what the content is as far as those sandboxes (and
// CD) are concerned, whatever others connected meanwhile.
func (e *Env) VirtualServiceContent(ctx context.Context, ns, name string, keepKeys ...string) (string, error) {
	vs, err := e.Sim.Clients.Istio.NetworkingV1().VirtualServices(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read VirtualService %s/%s: %w", ns, name, err)
	}
	if len(keepKeys) > 0 {
		vs.Spec.Http = slices.DeleteFunc(vs.Spec.Http, func(r *istioapi.HTTPRoute) bool {
			k := istiovs.RouteKey(r.GetName())
			return k != "" && !slices.Contains(keepKeys, k)
		})
	}
	b, err := json.Marshal(struct {
		Labels, Annotations map[string]string
		Spec                any
	}{vs.Labels, vs.Annotations, &vs.Spec})
	return string(b), err
}

// HTTPRouteContent is VirtualServiceContent for an HTTPRoute: its labels,
// annotations and spec (what CD owns).
func (e *Env) HTTPRouteContent(ctx context.Context, ns, name string) (string, error) {
	if e.Sim.Clients.Dynamic == nil {
		return "", errors.New("the simulated cluster serves no HTTPRoutes (sim.Options.GatewayAPI)")
	}
	u, err := e.Sim.Clients.Dynamic.Resource(sim.HTTPRouteGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read HTTPRoute %s/%s: %w", ns, name, err)
	}
	b, err := json.Marshal(struct {
		Labels, Annotations map[string]string
		Spec                any
	}{u.GetLabels(), u.GetAnnotations(), u.Object["spec"]})
	return string(b), err
}

// SbxObjects lists the objects labelled as sbx's in the app namespace
// ("kind/name"), pods included: those of the named sandboxes, or all with
// none named. A kind that cannot be listed shows up as an entry too, so
// "nothing left" is never concluded from a failed List.
func (e *Env) SbxObjects(ctx context.Context, sandboxes ...string) []string {
	set := labels.Set{cluster.LabelManagedBy: cluster.ManagedByValue}
	var req []labels.Requirement
	if len(sandboxes) > 0 {
		r, err := labels.NewRequirement(cluster.LabelSandbox, selection.In, sandboxes)
		if err != nil {
			return []string{fmt.Sprintf("?/? (sandbox names %v: %v)", sandboxes, err)}
		}
		req = append(req, *r)
	}
	sel := metav1.ListOptions{LabelSelector: labels.SelectorFromSet(set).Add(req...).String()}
	k := e.Sim.Clients.Kube
	ns := sim.AppNamespace
	var out []string
	if l, err := k.AppsV1().Deployments(ns).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			out = append(out, "deployment/"+o.Name)
		}
	} else {
		out = append(out, listFailed("deployment", err))
	}
	if l, err := k.CoreV1().Pods(ns).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			out = append(out, "pod/"+o.Name)
		}
	} else {
		out = append(out, listFailed("pod", err))
	}
	if l, err := k.CoreV1().Services(ns).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			out = append(out, "service/"+o.Name)
		}
	} else {
		out = append(out, listFailed("service", err))
	}
	if l, err := k.CoreV1().Secrets(ns).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			out = append(out, "secret/"+o.Name)
		}
	} else {
		out = append(out, listFailed("secret", err))
	}
	if l, err := k.CoordinationV1().Leases(ns).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			out = append(out, "lease/"+o.Name)
		}
	} else {
		out = append(out, listFailed("lease", err))
	}
	if l, err := e.Sim.Clients.Istio.NetworkingV1().VirtualServices(ns).List(ctx, sel); err == nil {
		for _, o := range l.Items {
			out = append(out, "virtualservice/"+o.Name)
		}
	} else {
		out = append(out, listFailed("virtualservice", err))
	}
	if d := e.Sim.Clients.Dynamic; d != nil {
		if l, err := d.Resource(sim.HTTPRouteGVR).Namespace(ns).List(ctx, sel); err == nil {
			for _, o := range l.Items {
				out = append(out, "httproute/"+o.GetName())
			}
		} else {
			out = append(out, listFailed("httproute", err))
		}
	}
	return out
}

func listFailed(kind string, err error) string {
	return fmt.Sprintf("%s/? (list failed: %v)", kind, err)
}
