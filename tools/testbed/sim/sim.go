// Package sim is a simulated Kubernetes cluster with an Istio-like mesh,
// built from real parts wherever a real part can run without a cluster:
// client-go's and Istio's fake clientsets as the API, real HTTP servers on
// loopback as the baseline sample app, a mesh router that applies the
// VirtualServices found in the API, a simulated cluster network (DNS,
// ClusterIPs, pod IPs) and, once sbx creates its relay Deployment, the real
// relay started in-process from the generated pod template.
//
// Tests and `sbx demo` use it to run sbx end to end.
package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/sbx-dev/sbx/tools/testbed/pftest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// Options configures Start.
type Options struct {
	// Logger receives the simulator's logs; nil discards them.
	Logger *slog.Logger
	// Domain is the cluster DNS domain; "" means cluster.local.
	Domain string
	// WithoutBaselineVirtualService leaves out the VirtualService (with
	// GatewayAPI: the HTTPRoute) that CD
	// owns for route (tests of the mesh write their own).
	WithoutBaselineVirtualService bool
	// DefaultExportTo is the mesh config's defaultVirtualServiceExportTo
	// (nil: Istio's default, "*"), written to ConfigMap istio-system/istio
	// as an Istio install has it.
	DefaultExportTo []string
	// Relay runs the relay containers of Deployments that run `sbx relay`.
	// nil means the real relay (package relay).
	Relay RelayFunc
	// Pullable says whether the kubelet can pull an image; one it cannot
	// leaves the pod in ErrImagePull, then ImagePullBackOff, as a real
	// kubelet does for an image no registry has. nil: every image.
	Pullable func(image string) bool
	// GatewayAPI serves Gateway API HTTPRoutes (Clients.Dynamic), which
	// the mesh applies as Istio does, and CD routes route with an
	// HTTPRoute (BaselineHTTPRoute) instead of a VirtualService; off, the
	// simulated cluster is an Istio mesh without the Gateway API CRDs.
	GatewayAPI bool
}

// Cluster is a running simulated cluster.
type Cluster struct {
	log     *slog.Logger
	Network *Network
	Clients *Clients
	Mesh    *Mesh
	// PortForward is the kubelet-side port-forward server the RESTConfig
	// points at; its CutAll and RefuseFor are the port-forward fault
	// switches.
	PortForward *pftest.Server
	// RESTConfig addresses the simulated API server for port-forwards
	// (everything else goes through Clients).
	RESTConfig *rest.Config

	ctrl    *controller
	logs    *podLogs
	api     *apiHTTP
	closers []func()
}

// Start starts a simulated cluster with the baseline sample app running in
// namespace hotrod. Close stops everything.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{log: logger.With("component", "sim"), Network: NewNetwork(opts.Domain), logs: newPodLogs()}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.Clients = NewClients(c.Network, nil)
	if opts.GatewayAPI {
		c.Clients.Dynamic = NewDynamic()
	}
	for _, ns := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, AppNamespace, "istio-system"} {
		if err := c.ensureNamespace(ctx, ns); err != nil {
			return nil, err
		}
	}
	if err := c.startBaseline(ctx); err != nil {
		return nil, err
	}
	switch {
	case opts.WithoutBaselineVirtualService:
	case opts.GatewayAPI:
		// CD routes with Gateway API here: the same route as an HTTPRoute.
		if _, err := c.Clients.Dynamic.Resource(HTTPRouteGVR).Namespace(AppNamespace).Create(ctx,
			BaselineHTTPRoute(), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create the baseline HTTPRoute: %w", err)
		}
	default:
		if _, err := c.Clients.Istio.NetworkingV1().VirtualServices(AppNamespace).Create(ctx,
			BaselineVirtualService(), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create the baseline VirtualService: %w", err)
		}
	}
	if err := createMeshConfig(ctx, c.Clients, opts.DefaultExportTo); err != nil {
		return nil, err
	}
	mo := MeshOptions{Logger: logger, Network: c.Network, Kube: c.Clients.Kube, Istio: c.Clients.Istio,
		DefaultExportTo: opts.DefaultExportTo}
	if c.Clients.Dynamic != nil {
		mo.Dynamic = c.Clients.Dynamic
	}
	c.Mesh, err = NewMesh(ctx, mo)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.Mesh.Close)
	gc, err := newGarbageCollector(ctx, logger, c.Clients)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, gc.close)
	run := opts.Relay
	if run == nil {
		run = defaultRelay
	}
	c.ctrl, err = newController(ctx, logger, c.Clients, c.Network, c.logs, run, opts.Pullable)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.ctrl.close)
	c.PortForward, err = pftest.New(pftest.Options{
		Resolve:  c.Network.PodPortAddr,
		CheckPod: c.checkPortForward,
		Logger:   logger.With("component", "portforward"),
	})
	if err != nil {
		return nil, fmt.Errorf("start the port-forward server: %w", err)
	}
	c.closers = append(c.closers, func() { _ = c.PortForward.Close() })
	c.RESTConfig = c.PortForward.RESTConfig()
	c.api, err = newAPIHTTP(c, logger)
	if err != nil {
		return nil, fmt.Errorf("start the simulated API server: %w", err)
	}
	c.closers = append(c.closers, c.api.close)
	return c, nil
}

// checkPortForward refuses a port-forward to a pod that does not exist or
// is not running, as the API server and kubelet do.
func (c *Cluster) checkPortForward(ns, pod string) error {
	p, err := c.Clients.Kube.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("pod %s/%s is %s, not Running", ns, pod, p.Status.Phase)
	}
	return nil
}

// RelayPod returns the name of the running relay pod of Deployment ns/name.
func (c *Cluster) RelayPod(ns, deployment string) (string, bool) {
	p, ok := c.ctrl.relayPodFor(ns, deployment)
	if !ok {
		return "", false
	}
	return p.name, true
}

// RelayDeployments lists the Deployments ("ns/name") whose relay the
// simulator runs.
func (c *Cluster) RelayDeployments() []string {
	var out []string
	for k := range c.ctrl.relayPods() {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// RestartRelay stops the relay container of Deployment ns/name gracefully
// (SIGTERM: it drains and closes the daemon's sessions with a reason); the
// simulated kubelet starts it again in the same pod.
func (c *Cluster) RestartRelay(ns, deployment string) error {
	p, ok := c.ctrl.relayPodFor(ns, deployment)
	if !ok {
		return fmt.Errorf("no relay pod runs for deployment %s/%s", ns, deployment)
	}
	if !p.restart() {
		return fmt.Errorf("the relay container of %s/%s is not running right now", ns, deployment)
	}
	return nil
}

// CrashRelay kills the relay container of Deployment ns/name as kill -9
// would (every socket closes at once); the simulated kubelet restarts it in
// the same pod, which is not ready until its readiness probe passes again.
func (c *Cluster) CrashRelay(ns, deployment string) error {
	p, ok := c.ctrl.relayPodFor(ns, deployment)
	if !ok {
		return fmt.Errorf("no relay pod runs for deployment %s/%s", ns, deployment)
	}
	if !p.crash() {
		return fmt.Errorf("the relay container of %s/%s is not running right now", ns, deployment)
	}
	return nil
}

// Close stops every server, router and controller of the cluster, in
// reverse order of starting, and waits for them.
func (c *Cluster) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// startBaseline creates the sample app's Deployments, Services and Pods and
// starts a real server per pod.
func (c *Cluster) startBaseline(ctx context.Context) error {
	for _, s := range BaselineApp() {
		if _, err := c.RunApp(ctx, AppNamespace, s, BaselineVersion); err != nil {
			return err
		}
	}
	return nil
}

// RunApp deploys one sample app service into the simulated cluster: a
// Service and Deployment named s.Name in ns (selector app=<name>) and one
// running, ready pod served by a real server answering as version. It is
// how the baseline is deployed; tests use it to add workloads.
func (c *Cluster) RunApp(ctx context.Context, ns string, s AppService, version string) (*AppServer, error) {
	now := time.Now()
	if err := c.ensureNamespace(ctx, ns); err != nil {
		return nil, err
	}
	dep, svc := appObjects(ns, s, version)
	if _, err := c.Clients.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", ns, s.Name, err)
	}
	dep, err := c.Clients.Kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create deployment %s/%s: %w", ns, s.Name, err)
	}
	name := podName(dep)
	ip, err := c.Network.AddPod(ns, name)
	if err != nil {
		return nil, err
	}
	pod := runningPod(dep, name, ip.String(), now)
	podLog := c.logs.logger(c.log.With("pod", ns+"/"+name), ns, name)
	srv, err := StartApp(AppConfig{
		Service:   s.Name,
		Version:   version,
		Namespace: ns,
		Pod:       name,
		Calls:     s.Calls,
		Client:    PodHTTPClient(c.Network.PodResolver(ns, pod.Labels)),
		Logger:    podLog,
	}, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { _ = srv.Close() })
	if err := c.Network.BindPodPort(ns, name, s.Port, srv.Addr(), false); err != nil {
		return nil, err
	}
	podLog.Info("sample service listening", "service", s.Name, "version", version, "port", s.Port)
	if _, err := c.Clients.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	if err := setDeploymentAvailable(ctx, c.Clients, dep, true, now); err != nil {
		return nil, fmt.Errorf("deployment %s/%s status: %w", ns, s.Name, err)
	}
	return srv, nil
}

// ensureNamespace creates Namespace ns (Active) unless it exists, so that
// listing namespaces (kubectl get ns) shows the ones the cluster uses.
func (c *Cluster) ensureNamespace(ctx context.Context, ns string) error {
	_, err := c.Clients.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s in the simulated cluster: %w", ns, err)
	}
	return nil
}

// PodHTTPClient is an HTTP client that dials through the simulated network
// as the pod behind r.
func PodHTTPClient(r *Resolver) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         r.DialContext,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		},
		Timeout: 30 * time.Second,
	}
}

// HTTPClient is an HTTP client as seen from a pod without labels in
// namespace ns: cluster names resolve and requests go through the mesh.
func (c *Cluster) HTTPClient(ns string) *http.Client {
	return PodHTTPClient(c.Network.Resolver(ns))
}

// ServiceURL is a URL of Service ns/name port that works from outside the
// simulated network (the loopback address of its mesh router), e.g. for
// curl.
func (c *Cluster) ServiceURL(ns, name string, port int32) (string, error) {
	addr, ok := c.Mesh.Addr(ns, name, port)
	if !ok {
		return "", fmt.Errorf("service %s/%s has no port %d in the simulated mesh", ns, name, port)
	}
	return "http://" + addr, nil
}
