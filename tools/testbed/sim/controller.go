package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// RelayProcess is what the simulated kubelet hands a relay container it
// starts: the container's command line and environment exactly as the pod
// template declares them, and the pod's view of the network.
type RelayProcess struct {
	// Args are the container's arguments after the "sbx relay" command
	// words.
	Args []string
	// Getenv returns the container's environment (value, secretKeyRef,
	// configMapKeyRef and fieldRef resolved as the kubelet does).
	Getenv func(string) string
	// Listen binds a socket inside the pod. The simulator binds a free
	// loopback port instead of the requested one and remembers the mapping.
	Listen func(network, addr string) (net.Listener, error)
	// Resolver is the pod's DNS and dialer (cluster names, ClusterIPs).
	Resolver *Resolver
	// PodIP is the pod's own address.
	PodIP  netip.Addr
	Logger *slog.Logger
}

// RelayFunc runs one relay container until ctx is cancelled (SIGTERM; it
// should drain and return nil) or it fails (a crash). Start uses the real
// relay; tests of the simulator itself inject stand-ins.
type RelayFunc func(ctx context.Context, p RelayProcess) error

// relayCommand splits a container's command line into the sbx relay
// arguments, or says why it is not an sbx relay command line.
func relayCommand(c corev1.Container) ([]string, bool) {
	argv := append(append([]string(nil), c.Command...), c.Args...)
	if len(c.Command) == 0 {
		// The image's entrypoint is sbx.
		argv = append([]string{"sbx"}, c.Args...)
	}
	if len(argv) < 2 || path.Base(argv[0]) != "sbx" || argv[1] != "relay" {
		return nil, false
	}
	return argv[2:], true
}

// isRelayDeployment reports whether a Deployment runs `sbx relay` (whatever
// its labels say: the simulator runs what the template runs).
func isRelayDeployment(d *appsv1.Deployment) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		if _, ok := relayCommand(c); ok {
			return true
		}
	}
	return false
}

// controller plays the Deployment controller and the kubelet for
// Deployments that run `sbx relay`: it creates their Pod and runs the relay
// in-process from the pod template.
type controller struct {
	log     *slog.Logger
	clients *Clients
	net     *Network
	run     RelayFunc
	logs    *podLogs // the containers' logs, for kubectl logs
	// probeEvery is the readiness probe period (much shorter than a real
	// kubelet's, to keep tests fast).
	probeEvery time.Duration
	// restartBackoff is the delay before a crashed container restarts.
	restartBackoff time.Duration
	// pullable is Options.Pullable.
	pullable func(image string) bool

	factory informers.SharedInformerFactory
	deploys appslisters.DeploymentLister
	queue   workqueue.TypedRateLimitingInterface[string]
	stop    chan struct{}

	mu     sync.Mutex
	pods   map[string]*relayPod // by "ns/deployment"
	wg     sync.WaitGroup
	closed bool
}

func newController(ctx context.Context, logger *slog.Logger, clients *Clients, network *Network, logs *podLogs, run RelayFunc, pullable func(image string) bool) (*controller, error) {
	c := &controller{
		log:            logger.With("component", "kubelet"),
		logs:           logs,
		clients:        clients,
		net:            network,
		run:            run,
		pullable:       pullable,
		probeEvery:     50 * time.Millisecond,
		restartBackoff: 200 * time.Millisecond,
		factory:        informers.NewSharedInformerFactory(clients.Kube, 0),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 2*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sim-deployments"}),
		stop: make(chan struct{}),
		pods: map[string]*relayPod{},
	}
	inf := c.factory.Apps().V1().Deployments()
	c.deploys = inf.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, err
	}
	c.factory.Start(c.stop)
	if err := waitSynced(ctx, c.factory, nil); err != nil {
		c.close()
		return nil, fmt.Errorf("deployment controller: %w", err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for c.processNext() {
		}
	}()
	return c, nil
}

func (c *controller) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	pods := c.pods
	c.pods = map[string]*relayPod{}
	c.mu.Unlock()
	c.queue.ShutDown()
	close(c.stop)
	for _, p := range pods {
		p.stop(false)
	}
	c.wg.Wait()
	c.factory.Shutdown()
}

func (c *controller) processNext() bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(key); err != nil {
		c.log.Warn("deployment sync failed; retrying", "deployment", key, "error", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync makes the relay pod of one Deployment match its spec.
func (c *controller) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	ctx := context.Background()
	dep, err := c.deploys.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.stopPod(key, true)
		return nil
	}
	if err != nil {
		return err
	}
	if !isRelayDeployment(dep) {
		return nil
	}
	hash := templateHash(&dep.Spec.Template)
	replicas := int32(1)
	if dep.Spec.Replicas != nil {
		replicas = *dep.Spec.Replicas
	}
	c.mu.Lock()
	cur := c.pods[key]
	c.mu.Unlock()
	if replicas == 0 {
		c.stopPod(key, true)
		return setDeploymentStatus(ctx, c.clients, ns, name, 0, false)
	}
	if cur != nil && cur.hash == hash {
		if dep.Status.ObservedGeneration != dep.Generation {
			return setDeploymentStatus(ctx, c.clients, ns, name, 1, cur.isReady())
		}
		return nil
	}
	p, err := c.startPod(ctx, dep, hash)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		p.stop(true)
		return nil
	}
	c.pods[key] = p
	if cur != nil {
		// A new template: a rolling update as the rendered Deployment asks
		// for (maxUnavailable 0, maxSurge 1): the old pod runs until the
		// new one is ready, then gets SIGTERM and drains.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.retireWhenReady(cur, p)
		}()
	}
	c.mu.Unlock()
	return setDeploymentStatus(ctx, c.clients, ns, name, 1, false)
}

// retireWhenReady stops old once next is ready (or the controller closes,
// or next ends first).
func (c *controller) retireWhenReady(old, next *relayPod) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !next.isReady() {
		select {
		case <-c.stop:
			old.stop(false)
			return
		case <-next.done:
			old.stop(true)
			return
		case <-t.C:
		}
	}
	old.stop(true)
}

func (c *controller) stopPod(key string, deleteObject bool) {
	c.mu.Lock()
	p := c.pods[key]
	delete(c.pods, key)
	c.mu.Unlock()
	if p != nil {
		p.stop(deleteObject)
	}
}

// relayPodFor returns the running relay pod of Deployment ns/name.
func (c *controller) relayPodFor(ns, name string) (*relayPod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[ns+"/"+name]
	return p, ok
}

// relayPods returns every relay pod, keyed by "ns/deployment".
func (c *controller) relayPods() map[string]*relayPod {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]*relayPod, len(c.pods))
	for k, v := range c.pods {
		out[k] = v
	}
	return out
}

// startPod creates the Pod object (Pending) and starts its kubelet loop.
func (c *controller) startPod(ctx context.Context, dep *appsv1.Deployment, hash string) (*relayPod, error) {
	name := podName(dep)
	ip, err := c.net.AddPod(dep.Namespace, name)
	if err != nil {
		return nil, err
	}
	pod := runningPod(dep, name, ip.String(), time.Now())
	pod.Status.Phase = corev1.PodPending
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady || pod.Status.Conditions[i].Type == corev1.ContainersReady {
			pod.Status.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	for i := range pod.Status.ContainerStatuses {
		cs := &pod.Status.ContainerStatuses[i]
		cs.Ready = false
		cs.Started = nil
		cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	}
	if _, err := c.clients.Kube.CoreV1().Pods(dep.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		c.net.RemovePod(dep.Namespace, name)
		return nil, fmt.Errorf("create pod %s/%s: %w", dep.Namespace, name, err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	p := &relayPod{
		c:      c,
		ns:     dep.Namespace,
		deploy: dep.Name,
		name:   name,
		ip:     ip,
		hash:   hash,
		spec:   *pod.Spec.DeepCopy(),
		ctx:    pctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(p.done)
		p.kubelet()
	}()
	return p, nil
}

// setDeploymentStatus records the replica counts of a Deployment.
func setDeploymentStatus(ctx context.Context, clients *Clients, ns, name string, replicas int32, ready bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := clients.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if replicas == 0 {
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation}
			_, err = clients.Kube.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{})
			return err
		}
		return setDeploymentAvailable(ctx, clients, d, ready, time.Now())
	})
}

var errStopped = errors.New("pod stopped")
