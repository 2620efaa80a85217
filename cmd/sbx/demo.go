package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
	"github.com/sbx-dev/sbx/tools/testbed/simenv"
)

func newDemoCmd(g *globalOptions) *cobra.Command {
	var (
		keep bool
		mesh string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "See sbx work end to end on a simulated cluster (no cluster or Docker needed)",
		Long: `See sbx work end to end, on a simulated cluster inside this process.

The simulated cluster runs a small app in namespace hotrod: frontend calls
route and driver. An Istio-like mesh routes between them, and sbx's relay
runs from the exact Deployment sbx generates. The demo starts a "v2" of
route on your laptop, connects a sandbox through the normal sbx daemon, and
sends requests with and without the sandbox's routing key in the W3C
baggage header, showing which version served each hop. Then it disconnects
and shows that everything is back to the baseline.

It exits 0 only if every expectation held, so it doubles as a smoke test.`,
		Example: `  sbx demo          # tell the story, check it, clean up
  sbx demo --keep   # leave it running and print curl commands to try it yourself
  sbx demo -v       # also show the daemon's and the cluster's logs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cluster.ValidateMesh(mesh); err != nil {
				return userError(fmt.Errorf("--mesh: %w", err), "pass --mesh istio (the default) or gateway-api")
			}
			return runDemo(cmd.Context(), g, keep, mesh)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the cluster and the sandbox running and print curl commands; Ctrl-C ends it")
	cmd.Flags().StringVar(&mesh, "mesh", cluster.MeshIstio, "how CD routes in the simulated cluster, and so how sbx does: istio (VirtualServices, sbx adds keyed twins to CD's) or gateway-api (HTTPRoutes, sbx adds its own next to CD's); auto means istio here")
	return cmd
}

// demo holds one run of `sbx demo`.
type demo struct {
	out      io.Writer
	env      *simenv.Env
	client   *http.Client // a client pod's view: requests go through the mesh
	checks   int
	failures []string
}

// check records one expectation.
func (d *demo) check(ok bool, what string) bool {
	d.checks++
	if !ok {
		d.failures = append(d.failures, what)
	}
	return ok
}

func (d *demo) step(n int, format string, args ...any) {
	fmt.Fprintf(d.out, "\n%d. %s\n", n, fmt.Sprintf(format, args...))
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "   "+format+"\n", args...)
}

func runDemo(ctx context.Context, g *globalOptions, keep bool, mesh string) (err error) {
	gateway := mesh == cluster.MeshGatewayAPI
	dir, err := simenv.TempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logger, logPath, closeLog, err := demoLogger(g)
	if err != nil {
		return err
	}
	defer closeLog()
	defer kube.RouteKlog(logger.With("side", "client-go"))()

	d := &demo{out: g.stdout}
	fmt.Fprintln(d.out, "sbx demo: run one service of a shared cluster on your laptop, and see the routing happen.")

	d.step(1, "Starting a simulated cluster")
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	d.env, err = simenv.Start(startCtx, dir, logger, sim.Options{GatewayAPI: gateway})
	cancel()
	if err != nil {
		return err
	}

	defer d.env.Close()
	d.client = d.env.Sim.HTTPClient("default")
	defer d.client.CloseIdleConnections()
	d.say("namespace hotrod: frontend (8080) calls route (8083) and driver (8082), all version \"baseline\";")
	if gateway {
		d.say("an Istio-like mesh applies Gateway API HTTPRoutes: CD routes route with HTTPRoute hotrod/route;")
		d.say("sbx will add its own HTTPRoute next to it; its relay will run from the Deployment sbx writes.")
	} else {
		d.say("an Istio-like mesh applies the VirtualServices; sbx's relay will run from the Deployment sbx writes.")
	}

	d.step(2, "Starting route v2 on your laptop")
	laptop := d.env.LaptopClient()
	defer laptop.CloseIdleConnections()
	local, err := sim.StartLocalRoute("127.0.0.1:0", []string{driverURL + "/driver"}, laptop, logger.With("side", "laptop-app"))
	if err != nil {
		return err
	}
	defer local.Close()
	d.say("route v2 listens on %s: it stands in for the service you would run or debug locally.", local.Addr())
	d.say("For every request it calls %s, which only exists inside the cluster.", strings.TrimPrefix(driverURL, "http://"))

	routeContent := func(ctx context.Context, keepKeys ...string) (string, error) {
		if gateway {
			return d.env.HTTPRouteContent(ctx, sim.AppNamespace, "route")
		}
		return d.env.VirtualServiceContent(ctx, sim.AppNamespace, "route", keepKeys...)
	}
	cdKind := "VirtualService"
	if gateway {
		cdKind = "HTTPRoute"
	}
	vsBefore, err := routeContent(ctx)
	if err != nil {
		return err
	}

	d.step(3, "Connecting sandbox \"demo\" (route in hotrod -> %s) through the sbx daemon", local.Addr())
	st, err := d.env.Connect(ctx, "demo", local.Addr(), func(p api.Progress) {
		if p.Message != "" {
			d.say("%-14s %s", p.Phase, p.Message)
		}
	})
	if err != nil {
		return fmt.Errorf("connect the demo sandbox: %w (log: %s)", err, logPath)
	}
	key, bk := st.RoutingKey, st.BaggageKey
	d.say("ready: routing key %s. Requests whose baggage header carries %s=%s now reach your laptop.", key, bk, key)

	d.step(4, "Sending requests to frontend from a pod in the cluster")
	d.say("Services pass the W3C baggage header on to the services they call (tracing libraries do it).")
	d.say("The mesh sends route requests whose baggage has %s=%s to the sandbox's relay,", bk, key)
	d.say("and the relay sends them through the tunnel to your laptop. Everything else stays on baseline.")
	other := strings.Repeat("x", len(key))
	d.table(ctx, []demoRequest{
		{baggage: "", route: sim.BaselineVersion, why: "no key: baseline everywhere"},
		{baggage: bk + "=" + key, route: "v2", why: "the key: route is served by your laptop"},
		{baggage: "userid=42, " + bk + "=" + key + ";ttl=60", route: "v2", why: "the key among other baggage members"},
		{baggage: bk + "=" + other, route: sim.BaselineVersion, why: "someone else's key: baseline"},
	}, true)

	d.step(5, "Your laptop reaching the cluster")
	d.say("route v2's call to driver above went through the sbx daemon's outbound proxy (what `sbx run` sets")
	d.say("up for a process) and the sandbox's tunnel; the relay dialed it inside the cluster. Likewise:")
	d.outbound(ctx, laptop)

	if keep {
		d.keep(ctx, bk+"="+key, dir)
	}

	d.step(6, "Disconnecting")
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer dcancel()
	if _, err := d.env.Client.Disconnect(dctx, "demo"); err != nil {
		return fmt.Errorf("disconnect the demo sandbox: %w (log: %s)", err, logPath)
	}
	// Only the demo's own objects and routes: with --keep the user may
	// have connected sandboxes of their own meanwhile, which stay.
	left := d.waitNoObjects(dctx, "demo")
	vsAfter, err := routeContent(dctx, key)
	if err != nil {
		return err
	}
	if d.check(len(left) == 0, "sbx objects left after disconnect: "+strings.Join(left, ", ")) {
		d.say("the relay Deployment, its Service and Lease are gone.")
	}
	if d.check(vsAfter == vsBefore, "the "+cdKind+" hotrod/route differs from its content before the demo") {
		d.say("the %s hotrod/route (owned by CD) is exactly what it was.", cdKind)
	}
	d.table(dctx, []demoRequest{
		{baggage: bk + "=" + key, route: sim.BaselineVersion, why: "the old key: back to baseline"},
	}, true)
	if d.check(d.unreachable(dctx, laptop), "the laptop still reaches the cluster after the last sandbox left") {
		d.say("and the laptop no longer reaches the cluster: the outbound proxy closed with the last sandbox.")
	}

	fmt.Fprintln(d.out)
	if len(d.failures) > 0 {
		fmt.Fprintf(d.out, "%d of %d expectations failed:\n", len(d.failures), d.checks)
		for _, f := range d.failures {
			fmt.Fprintf(d.out, "  - %s\n", f)
		}
		fmt.Fprintf(d.out, "log: %s\n", logPath)
		return exitError(1)
	}
	if logPath != "stderr" {
		_ = os.Remove(logPath) // kept only when something failed
	}
	fmt.Fprintf(d.out, "All %d expectations held. Next: `sbx connect -f sandbox.yaml` against your own cluster (see the README).\n", d.checks)
	return nil
}

// demoRequest is one row of the demo's table.
type demoRequest struct {
	baggage string
	route   string // the route version expected to answer
	why     string
}

// table sends each request (polling briefly, since the mesh learns about
// route changes asynchronously, as a real one does) and prints who served
// each hop.
func (d *demo) table(ctx context.Context, reqs []demoRequest, poll bool) {
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   \tbaggage\tfrontend\troute\troute -> driver\tdriver\t\t")
	for _, r := range reqs {
		var hop sim.Hop
		var status int
		deadline := time.Now().Add(10 * time.Second)
		for {
			status, hop = d.dispatch(ctx, r.baggage)
			if hopVersion(&hop, "route") == r.route || !poll || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		ok := status == http.StatusOK && hopVersion(&hop, "frontend") == sim.BaselineVersion &&
			hopVersion(&hop, "route") == r.route && hopVersion(&hop, "driver") == sim.BaselineVersion &&
			(r.route == sim.BaselineVersion || nestedDriver(&hop) == sim.BaselineVersion+" (via tunnel)")
		got := fmt.Sprintf("got %s (HTTP %d)", hop.String(), status)
		if status == 0 {
			got = "no answer from frontend: " + hop.Error
		}
		d.check(ok, fmt.Sprintf("baggage %q: want route %s, %s", r.baggage, r.route, got))
		mark := "ok"
		if !ok {
			mark = "UNEXPECTED"
		}
		b := r.baggage
		if b == "" {
			b = "(none)"
		}
		fmt.Fprintf(tw, "   \t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b, showHop(&hop, "frontend"), showHop(&hop, "route"),
			nestedDriver(&hop), showHop(&hop, "driver"), mark, r.why)
	}
	_ = tw.Flush()
}

// dispatch sends GET frontend/dispatch with the baggage header.
func (d *demo) dispatch(ctx context.Context, baggage string) (int, sim.Hop) {
	var hop sim.Hop
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://frontend.hotrod:8080/dispatch", nil)
	if err != nil {
		return 0, hop
	}
	if baggage != "" {
		req.Header.Set("baggage", baggage)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		hop.Error = err.Error()
		return 0, hop
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&hop)
	return resp.StatusCode, hop
}

// driverURL is the cluster name the laptop's route calls.
const driverURL = "http://driver.hotrod.svc.cluster.local:8082"

// nestedDriver shows who answered route's own call to driver: only the
// laptop's route makes one, through the tunnel.
func nestedDriver(h *sim.Hop) string {
	r := h.Find("route")
	if r == nil || len(r.Calls) == 0 {
		return "-"
	}
	c := r.Calls[0]
	if c.Error != "" {
		return fmt.Sprintf("error %d", c.Status)
	}
	return c.Version + " (via tunnel)"
}

// directHop is h itself when it is service, else frontend's own call to
// service. Not h.Find: that searches depth-first and would return route's
// nested call to driver (through the tunnel) for "driver".
func directHop(h *sim.Hop, service string) *sim.Hop {
	if service == h.Service {
		return h
	}
	for i := range h.Calls {
		if h.Calls[i].Service == service {
			return &h.Calls[i]
		}
	}
	return nil
}

// hopVersion is the version of service as called by frontend (or
// frontend itself).
func hopVersion(h *sim.Hop, service string) string {
	if f := directHop(h, service); f != nil && f.Error == "" {
		return f.Version
	}
	return ""
}

// showHop renders who served one hop: "baseline", "v2 (laptop)", or the
// error.
func showHop(h *sim.Hop, service string) string {
	f := directHop(h, service)
	switch {
	case f == nil:
		return "-"
	case f.Error != "":
		return fmt.Sprintf("error %d", f.Status)
	case f.Pod == "laptop":
		return f.Version + " (laptop)"
	}
	return f.Version
}

// outbound calls driver directly from the laptop through the tunnel.
func (d *demo) outbound(ctx context.Context, laptop *http.Client) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, driverURL+"/from-laptop", nil)
	if err != nil {
		d.check(false, "build the outbound request: "+err.Error())
		return
	}
	var hop sim.Hop
	resp, err := laptop.Do(req)
	if err == nil {
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&hop)
		resp.Body.Close()
	}
	ok := err == nil && resp.StatusCode == http.StatusOK && hop.Service == "driver" && hop.Version == sim.BaselineVersion
	if !d.check(ok, fmt.Sprintf("GET %s/from-laptop through the tunnel: %v %s", driverURL, err, hop.String())) {
		d.say("  GET %s/from-laptop  ->  UNEXPECTED: %v %s", driverURL, err, hop.Error)
		return
	}
	d.say("  GET %s/from-laptop  ->  answered by driver %s, pod %s", driverURL, hop.Version, hop.Pod)
}

// unreachable reports whether driver is out of the laptop's reach (soon:
// the daemon stops outbound access asynchronously).
func (d *demo) unreachable(ctx context.Context, laptop *http.Client) bool {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, driverURL+"/after", nil)
		if err != nil {
			return false
		}
		resp, err := laptop.Do(req)
		if err != nil {
			return true
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keep prints how to try the running demo from another terminal (member is
// the baggage member that routes to the laptop) and waits for Ctrl-C.
func (d *demo) keep(ctx context.Context, member string, dir string) {
	u, err := d.env.Sim.ServiceURL(sim.AppNamespace, "frontend", 8080)
	if err != nil {
		d.say("cannot show the frontend URL: %v", err)
		return
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := d.env.Sim.WriteKubeconfig(kubeconfig); err != nil {
		d.say("cannot write a kubeconfig for the simulated cluster: %v", err)
	}
	fmt.Fprintln(d.out)
	d.say("The cluster and the sandbox keep running. From another terminal:")
	d.say("")
	d.say("  # baseline everywhere:")
	d.say("  curl -s %s/dispatch", u)
	d.say("  # route served by your laptop:")
	d.say("  curl -s -H 'baggage: %s' %s/dispatch", member, u)
	d.say("")
	d.say("The simulated cluster's API is at %s; with", d.env.Sim.APIServerURL())
	d.say("  export KUBECONFIG=%s", kubeconfig)
	d.say("kubectl and your own sbx commands (sbx list, sbx connect -f ...) use it like a real cluster:")
	for _, args := range sim.KubectlExamples {
		d.say("  kubectl %s", strings.Join(args, " "))
	}
	for _, dep := range d.env.Sim.RelayDeployments() {
		if ns, name, ok := strings.Cut(dep, "/"); ok {
			d.say("  kubectl logs -n %s deploy/%s   # the sandbox's relay", ns, name)
		}
	}
	d.say("(the simulated API server has no RBAC and no OpenAPI schemas: kubectl apply validates on the server; kubectl exec and explain do not work)")
	d.say("Press Ctrl-C to disconnect and stop.")
	<-ctx.Done()
}

// waitNoObjects waits until no object of the sandbox remains in the app
// namespace and returns what is left at the deadline.
func (d *demo) waitNoObjects(ctx context.Context, sandbox string) []string {
	for {
		left := d.env.SbxObjects(ctx, sandbox)
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return left
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// demoLogger writes the daemon's and the cluster's logs to a file (shown
// when something fails), or to stderr with -v.
func demoLogger(g *globalOptions) (*slog.Logger, string, func(), error) {
	if g.verbosity > 0 {
		level := slog.LevelInfo
		if g.verbosity > 1 {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level})), "stderr", func() {}, nil
	}
	f, err := os.CreateTemp("", "sbx-demo-*.log")
	if err != nil {
		return nil, "", nil, fmt.Errorf("create the demo log: %w", err)
	}
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})), f.Name(), func() { _ = f.Close() }, nil
}
