// Package node is a node stand-in for the real control plane
// (controlplane): a kubelet that runs sbx's relay pods as real `sbx relay`
// processes, each in a network namespace of its own, and a one-node
// scheduler.
//
// It acts as the node (client certificate O=system:nodes,
// CN=system:node:NAME), so the Node authorizer and NodeRestriction apply
// to what it does; it registers its Node (kubelet endpoint 127.0.0.1 and a
// free port) and keeps it Ready; it serves the kubelet API's port-forward
// over TLS with k8s.io/cri-streaming's handler (the kubelet's own), which
// the API server reaches with its kubelet client certificate.
//
// Scheduling: the tier runs no kube-scheduler (one more ~2-minute build
// and process for a one-node cluster); the stand-in binds each Pending pod
// to itself as system:kube-scheduler (a client certificate from the CA, to
// which RBAC's bootstrap policy grants the scheduler's rights), so binding
// goes through the same pods/binding subresource and authorization.
//
// Images: a container whose image's repository is ghcr.io/sbx-dev/sbx runs
// the sbx binary Options.Sbx with the container's args and env
// (literal, Secret- and ConfigMap-backed), inside the pod's namespace
// (ip netns exec). Images Options.Apps knows (the baseline's sample apps)
// are served in process on their container ports inside the pod's
// namespace. Any other image fails as a kubelet fails to pull it:
// ErrImagePull, then ImagePullBackOff, with Warning events (FailPull makes
// a relay image fail so too). A container that exits is restarted with a
// back-off (restartCount, CrashLoopBackOff); Ready comes from the
// readinessProbe's HTTP GET to the pod's address (a failing probe makes an
// Unhealthy event); a deleted pod's processes get SIGTERM, then SIGKILL
// after the grace period, and the stand-in then removes the pod.
//
// Networking: pods get addresses in a /24 of 10.200-255.x.0 chosen at run
// time (.2-.127), a veth each to the host (whose side has .1), and a
// resolv.conf pointing at the stand-in's DNS server (see dns.go) on .254.
// Port-forward connects to 127.0.0.1:PORT inside the pod's namespace, as
// the kubelet does (the relay's tunnel port listens on loopback only).
// Everything is named after the test process's pid and removed by Close;
// a later run removes what a dead one left.
//
// Linux, root, and iproute2 (ip netns) only.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
)

// Options configure Start.
type Options struct {
	// Name is the Node's name (required).
	Name string
	// URL and CA are the control plane's (controlplane.ControlPlane's).
	URL string
	CA  *controlplane.CA
	// Sbx is the sbx binary that runs relay images (required).
	Sbx string
	// Dir holds the containers' logs (required).
	Dir string
	// Logf reports what the node does (default: nothing).
	Logf func(format string, args ...any)
	// Apps runs images that are not sbx's (the baseline's sample apps) as
	// in-process HTTP servers: for an image it knows, it returns the
	// handler of a pod's container, which the stand-in serves on each of
	// the container's ports inside the pod's network namespace.
	Apps func(image string, pod *corev1.Pod, c *corev1.Container) (http.Handler, bool)
	// DialService connects to port of Service ns/name, for the pods'
	// connections to the address the cluster DNS gave that Service (the
	// mesh: meshbridge.Bridge.DialService). nil refuses them.
	DialService func(ctx context.Context, ns, name string, port int32) (net.Conn, error)
	// Subnet is the pods' /24 (default: a free one in 10.200-255.x.0/24,
	// chosen at run time).
	Subnet netip.Prefix
}

// Node is a running node stand-in.
type Node struct {
	o       Options
	client  kubernetes.Interface // as system:node:NAME
	sched   kubernetes.Interface // as system:kube-scheduler
	kubelet *kubeletServer
	dns     *dnsServer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // informers, heartbeat, pods

	mu         sync.Mutex
	unpullable map[string]bool
	unready    map[string]bool
	podIndex   cache.Store // the pods bound to the node
	pods       map[types.UID]*podRunner
	closed     bool
	stats      struct{ portForwards atomic.Int64 }
}

// RelayRepo is the image repository whose images run the sbx binary.
const RelayRepo = "ghcr.io/sbx-dev/sbx"

// Start registers the node and starts serving. Close stops it.
func Start(ctx context.Context, o Options) (_ *Node, err error) {
	if o.Name == "" || o.CA == nil || o.URL == "" || o.Sbx == "" || o.Dir == "" {
		return nil, errors.New("node.Start: Name, URL, CA, Sbx and Dir are required")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	cleanLeftovers(ctx, o.Logf)
	if !o.Subnet.IsValid() {
		if o.Subnet, err = pickSubnet(ctx); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	n := &Node{o: o, pods: map[types.UID]*podRunner{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.client, err = n.clientAs("system:node:"+o.Name, []string{"system:nodes"}); err != nil {
		return nil, err
	}
	if n.sched, err = n.clientAs("system:kube-scheduler", nil); err != nil {
		return nil, err
	}
	cert, err := o.CA.IssueServing("system:node:"+o.Name, []string{"localhost", o.Name}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	if n.kubelet, err = startKubelet(n, cert); err != nil {
		return nil, err
	}
	if n.dns, err = startDNS(n); err != nil {
		return nil, err
	}
	if err := n.register(ctx); err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go n.heartbeat()
	if err := n.runInformers(ctx); err != nil {
		return nil, err
	}
	o.Logf("node stand-in %s up: kubelet at 127.0.0.1:%d, pods in %s, cluster DNS at %s", o.Name, n.kubelet.port(), o.Subnet, n.dnsAddr())
	return n, nil
}

// FailPull makes image fail to pull from now on, as an image no registry
// has (a development build's default relay image, ghcr.io/sbx-dev/sbx:<git
// sha>) does, though its repository is RelayRepo.
func (n *Node) FailPull(image string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unpullable == nil {
		n.unpullable = map[string]bool{}
	}
	n.unpullable[image] = true
}

// FailReadiness makes the readiness probe of containers of image fail
// from now on (as a relay whose /readyz does not answer).
func (n *Node) FailReadiness(image string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unready == nil {
		n.unready = map[string]bool{}
	}
	n.unready[image] = true
}

func (n *Node) readinessFails(image string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.unready[image]
}

func (n *Node) pullable(image string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return imageRepo(image) == RelayRepo && !n.unpullable[image]
}

func (n *Node) app(pod *corev1.Pod, c *corev1.Container) (http.Handler, bool) {
	if n.o.Apps == nil {
		return nil, false
	}
	return n.o.Apps(c.Image, pod, c)
}

// Subnet is the pods' /24.
func (n *Node) Subnet() netip.Prefix { return n.o.Subnet }

// PortForwards counts the port-forward requests the kubelet API served.
func (n *Node) PortForwards() int64 { return n.stats.portForwards.Load() }

// CutPortForwards closes every connection of the kubelet API at once
// (the API server's port-forward connections to it and the forwarded
// streams' connections into the pods), as a kubelet restart or a network
// failure between the API server and the node does; the API server then
// closes its clients' port-forwards. The kubelet API keeps serving. It
// returns how many connections the API server had open to it.
func (n *Node) CutPortForwards() int { return n.kubelet.cutAll() }

// Close stops every pod's processes (SIGTERM, then SIGKILL) and removes
// their network namespaces, and stops serving. The API objects stay, as
// when a kubelet stops: a new stand-in of the same name runs the pods
// again.
func (n *Node) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	runners := make([]*podRunner, 0, len(n.pods))
	for _, r := range n.pods {
		runners = append(runners, r)
	}
	n.mu.Unlock()
	for _, r := range runners {
		r.stop(2 * time.Second)
	}
	n.cancel()
	n.wg.Wait()
	if n.kubelet != nil {
		n.kubelet.close()
	}
	if n.dns != nil {
		n.dns.close()
	}
	n.o.Logf("node stand-in %s stopped", n.o.Name)
}

func (n *Node) clientAs(user string, groups []string) (kubernetes.Interface, error) {
	certPEM, keyPEM, err := n.o.CA.IssueClient(user, groups)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(&rest.Config{
		Host:            n.o.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: n.o.CA.PEM, CertData: certPEM, KeyData: keyPEM},
		QPS:             50, Burst: 100,
	})
}

// gateway is the host's address on every pod's veth: the first of the
// subnet. The cluster DNS server listens there.
func (n *Node) gateway() netip.Addr { return n.o.Subnet.Addr().Next() }

// register creates the Node (or takes over the existing one, after a
// restart) with the kubelet's address and port.
func (n *Node) register(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.o.Name, Labels: map[string]string{
		"kubernetes.io/hostname": n.o.Name, "kubernetes.io/os": "linux",
	}}}
	if _, err := n.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register Node %s: %w", n.o.Name, err)
	}
	return n.postStatus(ctx)
}

func (n *Node) postStatus(ctx context.Context) error {
	// The node lifecycle controller writes the Node too (taints).
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return n.postStatusOnce(ctx) })
}

func (n *Node) postStatusOnce(ctx context.Context) error {
	node, err := n.client.CoreV1().Nodes().Get(ctx, n.o.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
		{Type: corev1.NodeHostName, Address: n.o.Name},
	}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(n.kubelet.port())
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status.Capacity, node.Status.Allocatable = capacity, capacity
	node.Status.NodeInfo.KubeletVersion = controlplane.KubernetesVersion
	node.Status.NodeInfo.OperatingSystem, node.Status.NodeInfo.Architecture = "linux", "amd64"
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "sbx node stand-in is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
	}}
	_, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node's Lease and status, so the node lifecycle
// controller never marks it NotReady (and evicts its pods).
func (n *Node) heartbeat() {
	defer n.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		if err := n.renewLease(ctx); err != nil && n.ctx.Err() == nil {
			n.o.Logf("node stand-in: renew the node Lease: %v", err)
		}
		if err := n.postStatus(ctx); err != nil && n.ctx.Err() == nil {
			n.o.Logf("node stand-in: post the node status: %v", err)
		}
		cancel()
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) renewLease(ctx context.Context) error {
	leases := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, n.o.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.o.Name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(n.o.Name), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// runInformers starts the scheduler's watch of unbound pods and the
// kubelet's of the pods bound to the node.
func (n *Node) runInformers(ctx context.Context) error {
	lw := func(c kubernetes.Interface, sel string) *cache.ListWatch {
		return cache.NewListWatchFromClient(c.CoreV1().RESTClient(), "pods", metav1.NamespaceAll, fields.ParseSelectorOrDie(sel))
	}
	unbound := cache.NewSharedIndexInformer(lw(n.sched, "spec.nodeName="), &corev1.Pod{}, 0, cache.Indexers{})
	bind := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
			n.bind(p)
		}
	}
	if _, err := unbound.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: bind, UpdateFunc: func(_, obj any) { bind(obj) },
	}); err != nil {
		return err
	}
	bound := cache.NewSharedIndexInformer(lw(n.client, "spec.nodeName="+n.o.Name), &corev1.Pod{}, 0, cache.Indexers{})
	n.mu.Lock()
	n.podIndex = bound.GetStore()
	n.mu.Unlock()
	if _, err := bound.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.sync(obj, false) },
		UpdateFunc: func(_, obj any) { n.sync(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			n.sync(obj, true)
		},
	}); err != nil {
		return err
	}
	for _, inf := range []cache.SharedIndexInformer{unbound, bound} {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			inf.Run(n.ctx.Done())
		}()
	}
	if !cache.WaitForCacheSync(ctx.Done(), unbound.HasSynced, bound.HasSynced) {
		return fmt.Errorf("node stand-in: the pod watches did not sync: %w", ctx.Err())
	}
	return nil
}

// bind binds p to the node, as the scheduler does.
func (n *Node) bind(p *corev1.Pod) {
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	err := n.sched.CoreV1().Pods(p.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, UID: p.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: n.o.Name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && n.ctx.Err() == nil {
		n.o.Logf("node stand-in: bind pod %s/%s: %v", p.Namespace, p.Name, err)
		return
	}
	if err == nil {
		n.o.Logf("node stand-in: bound pod %s/%s", p.Namespace, p.Name)
	}
}

// sync starts a runner for a new pod and stops the runner of a pod being
// deleted (gone: deleted from the API).
func (n *Node) sync(obj any, gone bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	r := n.pods[p.UID]
	switch {
	case r == nil && !gone && p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
		ip, ok := n.allocIP(p)
		if !ok {
			n.o.Logf("node stand-in: no free address in %s for pod %s/%s", n.o.Subnet, p.Namespace, p.Name)
			return
		}
		idx := int(ip.As4()[3])
		r = newPodRunner(n, p, idx, ip)
		n.pods[p.UID] = r
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			r.run()
			n.mu.Lock()
			delete(n.pods, p.UID)
			n.mu.Unlock()
		}()
	case r == nil && !gone && p.DeletionTimestamp != nil:
		// Deleted while nothing ran it here (the stand-in was down): as
		// the kubelet, finish the deletion.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			defer cancel()
			_ = n.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
				GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID},
			})
		}()
	case r != nil && gone:
		r.stop(0)
	case r != nil && p.DeletionTimestamp != nil:
		grace := 30 * time.Second
		if p.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
		}
		r.stop(grace)
	}
}

// allocIP picks pod p's address: the one its status has if it is in the
// subnet and free (a pod keeps its IP across a restart of the stand-in:
// the API server does not let a pod's IPs change), else the first free
// one. n.mu is held.
func (n *Node) allocIP(p *corev1.Pod) (netip.Addr, bool) {
	used := map[netip.Addr]bool{n.gateway(): true}
	for _, r := range n.pods {
		used[r.ip] = true
	}
	if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil && n.o.Subnet.Contains(ip) && !used[ip] {
		return ip, true
	}
	for ip := n.gateway().Next(); ip.As4()[3] <= podIPLimit; ip = ip.Next() {
		if !used[ip] && !n.reserved(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// reserved reports whether ip is some pod's in the API (its runner may not
// run yet, after a restart). n.mu is held.
func (n *Node) reserved(ip netip.Addr) bool {
	if n.podIndex == nil {
		return false
	}
	for _, obj := range n.podIndex.List() {
		if p, ok := obj.(*corev1.Pod); ok && p.Status.PodIP == ip.String() {
			return true
		}
	}
	return false
}

// podNetns is the network namespace of pod ns/name.
func (n *Node) podNetns(ns, name string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.pods {
		if pn := r.net(); r.ns == ns && r.name == name && pn != nil {
			return pn.ns, nil
		}
	}
	return "", fmt.Errorf("pod %s/%s does not run on node %s", ns, name, n.o.Name)
}
