// Package discovery watches the Services of a set of namespaces and reports
// the host names and ports a pod would use to reach them, so the daemon can
// offer the same names on the laptop (hosts block or proxy) and send the
// connections through the tunnel.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// DefaultClusterDomain is the DNS domain of most clusters.
const DefaultClusterDomain = "cluster.local"

// Port is one Service port.
type Port struct {
	Name        string `json:"name,omitempty"`
	Port        int32  `json:"port"`
	Protocol    string `json:"protocol"`              // TCP, UDP, SCTP
	AppProtocol string `json:"appProtocol,omitempty"` // e.g. http, grpc
}

// Service is what the daemon needs to know about one Service.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Type is ClusterIP, NodePort, LoadBalancer or ExternalName.
	Type string `json:"type"`
	// Headless is true for ClusterIP: None (names resolve to pod IPs).
	Headless bool `json:"headless,omitempty"`
	// ExternalName is the target of an ExternalName Service.
	ExternalName string `json:"externalName,omitempty"`
	// Hosts are the names a pod uses, shortest first: svc, svc.ns,
	// svc.ns.svc and svc.ns.svc.<cluster domain>.
	Hosts []string `json:"hosts"`
	Ports []Port   `json:"ports"`
}

// Key is "namespace/name".
func (s Service) Key() string { return s.Namespace + "/" + s.Name }

// EventType says what happened to a Service.
type EventType string

// The event types.
const (
	Added   EventType = "added"
	Updated EventType = "updated"
	Deleted EventType = "deleted"
)

// Event reports a change. For Deleted, Service is the last known state.
type Event struct {
	Type    EventType
	Service Service
}

// Options configure a Watcher. Client and Namespaces are required.
type Options struct {
	Client kubernetes.Interface
	// Namespaces to watch. The order matters for short names: "svc" resolves
	// in the first namespace that has it, as for a pod in that namespace.
	Namespaces []string
	// Selector, if set, is a label selector restricting the Services (for
	// instance "app.kubernetes.io/managed-by!=sbx").
	Selector string
	// ClusterDomain defaults to DefaultClusterDomain.
	ClusterDomain string
	// OnEvent receives every change, one call at a time, starting with an
	// Added event per existing Service. It must not block for long.
	OnEvent func(Event)
	Logger  *slog.Logger
}

// Watcher keeps the current Services of its namespaces.
type Watcher struct {
	opts     Options
	log      *slog.Logger
	selector labels.Selector
	synced   chan struct{}

	dispatchMu sync.Mutex // one event at a time, state change and callback together
	mu         sync.Mutex
	services   map[string]Service // by Key
	running    bool
}

// New checks opts and returns a Watcher; Run starts it.
func New(opts Options) (*Watcher, error) {
	if opts.Client == nil {
		return nil, errors.New("service discovery: Options.Client is required")
	}
	if len(opts.Namespaces) == 0 {
		return nil, errors.New("service discovery: no namespaces to watch")
	}
	seen := map[string]bool{}
	for _, ns := range opts.Namespaces {
		if ns == "" || seen[ns] {
			return nil, fmt.Errorf("service discovery: namespace list %q has an empty or repeated entry", opts.Namespaces)
		}
		seen[ns] = true
	}
	sel, err := labels.Parse(opts.Selector)
	if err != nil {
		return nil, fmt.Errorf("service discovery: selector %q: %w", opts.Selector, err)
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = DefaultClusterDomain
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{opts: opts, log: logger, selector: sel, synced: make(chan struct{}), services: map[string]Service{}}, nil
}

// Run watches until ctx ends, then stops the informers and waits for them.
// It returns ctx's error if the initial sync did not finish, nil otherwise.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("service discovery: Run called twice")
	}
	w.running = true
	w.mu.Unlock()

	factories := make([]informers.SharedInformerFactory, 0, len(w.opts.Namespaces))
	// A handler registration's HasSynced, unlike the informer's, turns true
	// only after the handler has seen every initially listed object.
	regs := make([]cache.ResourceEventHandlerRegistration, 0, len(w.opts.Namespaces))
	for _, ns := range w.opts.Namespaces {
		// No resync: upsert reports only changes, so it would be idle work.
		f := informers.NewSharedInformerFactoryWithOptions(w.opts.Client, 0,
			informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = w.opts.Selector }))
		inf := f.Core().V1().Services().Informer()
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.upsert(obj) },
			UpdateFunc: func(_, obj any) { w.upsert(obj) },
			DeleteFunc: w.remove,
		})
		if err != nil {
			return fmt.Errorf("service discovery: watch namespace %s: %w", ns, err)
		}
		factories = append(factories, f)
		regs = append(regs, reg)
	}
	defer func() {
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	for i, reg := range regs {
		if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
			return fmt.Errorf("service discovery: initial list of Services in namespace %s: %w",
				w.opts.Namespaces[i], context.Cause(ctx))
		}
	}
	close(w.synced)
	w.log.Debug("service discovery synced", "namespaces", w.opts.Namespaces, "services", len(w.Services()))
	<-ctx.Done()
	return nil
}

// Synced is closed once every namespace's Services have been listed (and
// reported as Added).
func (w *Watcher) Synced() <-chan struct{} { return w.synced }

// Services returns the current Services sorted by namespace and name.
func (w *Watcher) Services() []Service {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Service, 0, len(w.services))
	for _, s := range w.services {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Key(), b.Key()) })
	return out
}

// Lookup finds the Service a host name designates (any of its Hosts, case
// insensitive, with or without a trailing dot). A short name resolves in the
// first watched namespace that has it.
func (w *Watcher) Lookup(host string) (Service, bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	name, rest, _ := strings.Cut(host, ".")
	w.mu.Lock()
	defer w.mu.Unlock()
	if rest == "" {
		for _, ns := range w.opts.Namespaces {
			if s, ok := w.services[ns+"/"+name]; ok {
				return s, true
			}
		}
		return Service{}, false
	}
	ns, _, _ := strings.Cut(rest, ".")
	s, ok := w.services[ns+"/"+name]
	if !ok || !slices.Contains(s.Hosts, host) {
		return Service{}, false
	}
	return s, true
}

// Hosts returns the names of Service name in namespace ns, shortest first.
func Hosts(ns, name, clusterDomain string) []string {
	return []string{
		name,
		name + "." + ns,
		name + "." + ns + ".svc",
		name + "." + ns + ".svc." + clusterDomain,
	}
}

func (w *Watcher) convert(svc *corev1.Service) Service {
	s := Service{
		Namespace:    svc.Namespace,
		Name:         svc.Name,
		Type:         string(svc.Spec.Type),
		Headless:     svc.Spec.ClusterIP == corev1.ClusterIPNone,
		ExternalName: svc.Spec.ExternalName,
		Hosts:        Hosts(svc.Namespace, svc.Name, w.opts.ClusterDomain),
		Ports:        make([]Port, 0, len(svc.Spec.Ports)),
	}
	if s.Type == "" {
		s.Type = string(corev1.ServiceTypeClusterIP)
	}
	for _, p := range svc.Spec.Ports {
		port := Port{Name: p.Name, Port: p.Port, Protocol: string(p.Protocol)}
		if port.Protocol == "" {
			port.Protocol = string(corev1.ProtocolTCP)
		}
		if p.AppProtocol != nil {
			port.AppProtocol = *p.AppProtocol
		}
		s.Ports = append(s.Ports, port)
	}
	return s
}

func (w *Watcher) upsert(obj any) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	if !w.selector.Matches(labels.Set(svc.Labels)) {
		// The API server filters too; a label change that makes a Service
		// leave the selection arrives as a delete there.
		w.remove(obj)
		return
	}
	s := w.convert(svc)
	w.dispatchMu.Lock()
	defer w.dispatchMu.Unlock()
	w.mu.Lock()
	old, existed := w.services[s.Key()]
	w.services[s.Key()] = s
	w.mu.Unlock()
	switch {
	case !existed:
		w.emit(Event{Type: Added, Service: s})
	case !equal(old, s):
		w.emit(Event{Type: Updated, Service: s})
	}
}

func (w *Watcher) remove(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	key := svc.Namespace + "/" + svc.Name
	w.dispatchMu.Lock()
	defer w.dispatchMu.Unlock()
	w.mu.Lock()
	old, existed := w.services[key]
	delete(w.services, key)
	w.mu.Unlock()
	if existed {
		w.emit(Event{Type: Deleted, Service: old})
	}
}

func (w *Watcher) emit(ev Event) {
	w.log.Debug("service "+string(ev.Type), "service", ev.Service.Key(), "ports", len(ev.Service.Ports))
	if w.opts.OnEvent != nil {
		w.opts.OnEvent(ev)
	}
}

func equal(a, b Service) bool {
	return a.Type == b.Type && a.Headless == b.Headless && a.ExternalName == b.ExternalName &&
		slices.Equal(a.Hosts, b.Hosts) && slices.Equal(a.Ports, b.Ports)
}
