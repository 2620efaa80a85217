// Package meshbridge runs the simulator's mesh router (package sim's
// Mesh) in front of the real control plane's Services: it watches the
// real API server's VirtualServices itself (sim.Mesh's informers on the
// Istio client), and a mirror of the real Services and ready Pods in a
// fake clientset tells it the rest. The sim's Network plays kube-proxy and
// the pod network: each mirrored pod gets a simulated IP whose ports are
// delivered to the real pod's address (in its network namespace on the
// node stand-in), so the mesh forwards to real relay pods and real
// (in-process) baseline apps.
package meshbridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	istioclient "istio.io/client-go/pkg/clientset/versioned"

	"github.com/sbx-dev/sbx/cluster/podstate"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// Bridge is a running mesh over the real cluster's Services.
type Bridge struct {
	// Net is the simulated network: its resolvers dial Services through
	// the mesh (sim.PodHTTPClient(Net.PodResolver(ns, labels))).
	Net  *sim.Network
	Mesh *sim.Mesh

	log    *slog.Logger
	mirror *fake.Clientset
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex // serialises mirror writes
}

// Start mirrors the real cluster (kube, as an admin) and starts the mesh
// on the real VirtualServices (istio).
func Start(ctx context.Context, kube kubernetes.Interface, istio istioclient.Interface, logger *slog.Logger) (*Bridge, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{Net: sim.NewNetwork(""), log: logger, mirror: fake.NewSimpleClientset(), stop: make(chan struct{})}
	f := informers.NewSharedInformerFactory(kube, 0)
	svcs, pods := f.Core().V1().Services().Informer(), f.Core().V1().Pods().Informer()
	handlers := func(upsert func(any), remove func(any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    upsert,
			UpdateFunc: func(_, o any) { upsert(o) },
			DeleteFunc: func(o any) {
				if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				remove(o)
			},
		}
	}
	if _, err := svcs.AddEventHandler(handlers(b.upsertService, b.removeService)); err != nil {
		return nil, err
	}
	if _, err := pods.AddEventHandler(handlers(b.upsertPod, b.removePod)); err != nil {
		return nil, err
	}
	f.Start(b.stop)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		<-b.stop
		f.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), svcs.HasSynced, pods.HasSynced) {
		b.Close()
		return nil, fmt.Errorf("meshbridge: the mirror did not sync: %w", ctx.Err())
	}
	m, err := sim.NewMesh(ctx, sim.MeshOptions{Logger: logger, Network: b.Net, Kube: b.mirror, Istio: istio})
	if err != nil {
		b.Close()
		return nil, err
	}
	b.Mesh = m
	return b, nil
}

// Close stops the mesh and the mirror.
func (b *Bridge) Close() {
	if b.Mesh != nil {
		b.Mesh.Close()
	}
	close(b.stop)
	b.wg.Wait()
}

// HTTPClient is a client whose requests to Service names (short, in
// namespace ns, or fully qualified) go through the mesh, as from a pod in
// ns without labels.
func (b *Bridge) HTTPClient(ns string) *http.Client {
	return sim.PodHTTPClient(b.Net.Resolver(ns))
}

// DialService dials port of Service ns/name through the mesh.
func (b *Bridge) DialService(ctx context.Context, ns, name string, port int32) (net.Conn, error) {
	return b.Net.Resolver(ns).DialContext(ctx, "tcp", net.JoinHostPort(b.Net.ServiceFQDN(ns, name), strconv.Itoa(int(port))))
}

func (b *Bridge) write(obj interface {
	GetNamespace() string
	GetName() string
}, create, update func() error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := create(); apierrors.IsAlreadyExists(err) {
		err = update()
		if err != nil {
			b.log.Warn("mirror update", "object", obj.GetNamespace()+"/"+obj.GetName(), "error", err)
		}
	} else if err != nil {
		b.log.Warn("mirror create", "object", obj.GetNamespace()+"/"+obj.GetName(), "error", err)
	}
}

func (b *Bridge) upsertService(o any) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return
	}
	s = s.DeepCopy()
	s.ResourceVersion = ""
	ctx := context.Background()
	c := b.mirror.CoreV1().Services(s.Namespace)
	b.write(s, func() error { _, err := c.Create(ctx, s, metav1.CreateOptions{}); return err },
		func() error { _, err := c.Update(ctx, s, metav1.UpdateOptions{}); return err })
}

func (b *Bridge) removeService(o any) {
	if s, ok := o.(*corev1.Service); ok {
		b.mu.Lock()
		defer b.mu.Unlock()
		_ = b.mirror.CoreV1().Services(s.Namespace).Delete(context.Background(), s.Name, metav1.DeleteOptions{})
	}
}

// upsertPod mirrors a pod: a ready one with a simulated IP whose ports
// deliver to the real pod's address, any other as not ready.
func (b *Bridge) upsertPod(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	p = p.DeepCopy()
	p.ResourceVersion = ""
	if p.Status.PodIP != "" && podstate.Ready(p) && p.DeletionTimestamp == nil {
		ip, err := b.Net.AddPod(p.Namespace, p.Name)
		if err != nil {
			b.log.Warn("mirror pod", "pod", p.Namespace+"/"+p.Name, "error", err)
			return
		}
		for _, c := range p.Spec.Containers {
			for _, port := range c.Ports {
				real := net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort)))
				_ = b.Net.BindPodPort(p.Namespace, p.Name, port.ContainerPort, real, false)
			}
		}
		p.Status.PodIP, p.Status.PodIPs = ip.String(), []corev1.PodIP{{IP: ip.String()}}
	} else {
		b.Net.RemovePod(p.Namespace, p.Name)
		p.Status.PodIP, p.Status.PodIPs = "", nil
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodReady {
				p.Status.Conditions[i].Status = corev1.ConditionFalse
			}
		}
	}
	ctx := context.Background()
	c := b.mirror.CoreV1().Pods(p.Namespace)
	b.write(p, func() error { _, err := c.Create(ctx, p, metav1.CreateOptions{}); return err },
		func() error { _, err := c.Update(ctx, p, metav1.UpdateOptions{}); return err })
}

func (b *Bridge) removePod(o any) {
	if p, ok := o.(*corev1.Pod); ok {
		b.Net.RemovePod(p.Namespace, p.Name)
		b.mu.Lock()
		defer b.mu.Unlock()
		_ = b.mirror.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
	}
}
