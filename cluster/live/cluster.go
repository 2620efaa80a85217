package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

// Cluster is one open cluster: package cluster's operations on its
// clients, with the API server's errors explained (see explainAPIError),
// the RBAC fallbacks to the context's namespace, and port-forwards to the
// relays. Its methods are safe for concurrent use.
type Cluster struct {
	o         Options
	owner     *Clusters // nil for NewFromKube
	kc        *kube.Cluster
	clients   cluster.Clients
	namespace string // the context's namespace
	log       *slog.Logger
	server    apiServer // for the hints of failed calls

	mu      sync.Mutex
	dialers map[relayRef]*portforward.Dialer
}

// NewFromKube returns the Cluster for an already loaded connection (REST
// config and clientsets), with port-forwards to the relays; the simulated
// cluster's clients and port-forward server plug in here. Close closes
// its port-forwards.
func NewFromKube(kc *kube.Cluster, o Options) *Cluster {
	return newCluster(kc, NewClusters(o).o)
}

// newCluster returns the Cluster of kc; o has its defaults.
func newCluster(kc *kube.Cluster, o Options) *Cluster {
	c := &Cluster{
		o:         o,
		kc:        kc,
		clients:   cluster.Clients{Kube: kc.Kube, Istio: kc.Istio, Dynamic: kc.Dynamic},
		namespace: kc.Namespace,
		log:       o.Logger.With("context", kc.Context),
		dialers:   map[relayRef]*portforward.Dialer{},
		server:    apiServer{context: kc.Context},
	}
	if kc.REST != nil {
		c.server.url = redactedURL(kc.REST.Host)
	}
	return c
}

// Context is the kube context the cluster was opened with.
func (c *Cluster) Context() string { return c.server.context }

// Close closes the cluster's port-forwards.
func (c *Cluster) Close() error {
	c.closeDialers("", nil)
	return nil
}

// closeSandboxDialers closes the sandbox's port-forwards but keep, in
// every connection of c's Clusters (only c's for NewFromKube).
func (c *Cluster) closeSandboxDialers(sandbox string, keep *portforward.Dialer) {
	if c.owner != nil {
		c.owner.closeDialers(sandbox, keep)
	} else {
		c.closeDialers(sandbox, keep)
	}
}

// WatchServices returns a watcher of the cluster's Services (o.Client
// is set here), for outbound access.
func (c *Cluster) WatchServices(o discovery.Options) (*discovery.Watcher, error) {
	o.Client = c.clients.Kube
	return discovery.New(o)
}

// Apply is cluster.Apply, with o.RelayImage defaulting to
// Options.DefaultRelayImage. An error that retrying will not cure (a
// refusal, a workload that does not exist, a VirtualService sbx must not
// touch, a relay of another daemon's token) has IsPermanent.
func (c *Cluster) Apply(ctx context.Context, sb *spec.Sandbox, o cluster.Options, progress func(cluster.Event)) (*cluster.Result, error) {
	if o.RelayImage == "" {
		o.RelayImage = c.o.DefaultRelayImage
	}
	res, err := cluster.Apply(ctx, c.clients, sb, o, progress)
	if errors.Is(err, cluster.ErrVerifierMismatch) {
		// The caller's "apply the cluster objects" does not name it.
		return nil, &permanentError{fmt.Errorf("sandbox %s: %w", sb.Name, err)}
	}
	if err != nil {
		// Apply reads, creates and patches many kinds: a refusal names
		// the resource, and the hint asks what the user may do.
		var home string
		if nss := sb.Namespaces(); len(nss) > 0 {
			home = nss[0]
		}
		err = explainAPIError(err, c.server, apiOp{namespace: home})
		if !Transient(err) {
			return nil, &permanentError{err}
		}
		return nil, err
	}
	return res, nil
}

// permanentError is an error retrying will not cure.
type permanentError struct{ err error }

func (e *permanentError) Error() string     { return e.err.Error() }
func (e *permanentError) Unwrap() error     { return e.err }
func (e *permanentError) IsPermanent() bool { return true }

// WaitRelay is cluster.WaitRelay bounded by Options.WaitTimeout. A relay
// Deployment that checks another verifier than ref's fails it with
// cluster.ErrVerifierMismatch, permanently; so does a pod whose image or
// container config cannot work (a *cluster.RelayError of an image pull
// or CreateContainerConfigError), whose message says what to change:
// retrying would only repeat it until the connect's deadline, and a
// config change re-applies. A crash loop stays worth retrying: a relay
// killed once (OOM) shows CrashLoopBackOff while the kubelet waits to
// restart it.
func (c *Cluster) WaitRelay(ctx context.Context, ref cluster.Ref, progress func(cluster.Event)) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.WaitTimeout)
	defer cancel()
	_, err := cluster.WaitRelay(ctx, c.clients, cluster.WaitOptions{Ref: ref, RelayImage: c.o.DefaultRelayImage}, progress)
	var re *cluster.RelayError
	if errors.Is(err, cluster.ErrVerifierMismatch) || errors.As(err, &re) && re.Reason != "CrashLoopBackOff" {
		return &permanentError{err}
	}
	return explainAPIError(err, c.server, apiOp{namespace: ref.Namespace})
}

// relayRef keys the port-forward dialers: one per relay.
type relayRef struct{ namespace, sandbox, key string }

func dialerKey(ref cluster.Ref) relayRef { return relayRef{ref.Namespace, ref.Name, ref.RoutingKey} }

// DialRelay opens a port-forwarded connection to the tunnel port of
// ref's ready relay pod. The dialer looks the pod up on every dial, so a
// moved pod is found.
func (c *Cluster) DialRelay(ctx context.Context, ref cluster.Ref) (net.Conn, error) {
	t := ref
	c.mu.Lock()
	d, ok := c.dialers[dialerKey(t)]
	if !ok {
		sel := labels.Set{
			cluster.LabelSandbox:    t.Name,
			cluster.LabelRoutingKey: t.RoutingKey,
			cluster.LabelComponent:  "relay",
		}.String()
		var err error
		d, err = portforward.New(portforward.Config{
			REST:        c.kc.REST,
			Client:      c.kc.Kube,
			Namespace:   t.Namespace,
			Selector:    sel,
			Port:        relayargs.TunnelPort,
			Connections: c.o.PortForwardConnections,
			Logger:      c.log.With("sandbox", t.Name),
		})
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.dialers[dialerKey(t)] = d
		c.mu.Unlock()
		// A session dials one relay through one connection at a time,
		// and its previous attempt's tunnel is closed before this one
		// dials. A dialer it left in a connection superseded by a
		// changed kubeconfig, or for a relay it no longer uses, would
		// keep its API server connections open until disconnect.
		c.closeSandboxDialers(t.Name, d)
	} else {
		c.mu.Unlock()
	}
	return d.Dial(ctx)
}

// closeDialers closes the dialers of one sandbox ("" = all) except keep
// (nil: none).
func (c *Cluster) closeDialers(sandbox string, keep *portforward.Dialer) {
	c.mu.Lock()
	var ds []*portforward.Dialer
	for k, d := range c.dialers {
		if d != keep && (sandbox == "" || k.sandbox == sandbox) {
			ds = append(ds, d)
			delete(c.dialers, k)
		}
	}
	c.mu.Unlock()
	for _, d := range ds {
		_ = d.Close()
	}
}

// RenewLease is cluster.RenewLease now; a sandbox whose Lease is gone
// fails it with cluster.ErrSandboxGone (apply it again).
func (c *Cluster) RenewLease(ctx context.Context, ref cluster.Ref) error {
	err := cluster.RenewLease(ctx, c.clients, ref, c.o.Now())
	if err == nil || errors.Is(err, cluster.ErrSandboxGone) {
		return err
	}
	op := apiOp{verb: "update", resource: "leases.coordination.k8s.io", namespace: ref.Namespace}
	if len(ref.Namespaces) > 0 {
		op.namespace = ref.Namespaces[0]
	}
	return explainAPIError(err, c.server, op)
}

// Delete removes every object of ref's sandbox, including its routes
// inside shared VirtualServices, and closes its port-forwards. A sandbox
// already gone is no error. Without ref.Namespaces it finds them by
// listing Leases in every namespace.
func (c *Cluster) Delete(ctx context.Context, ref cluster.Ref) error {
	c.closeSandboxDialers(ref.Name, nil)
	err := cluster.Delete(ctx, c.clients, ref, nil)
	if errors.Is(err, cluster.ErrSandboxNotFound) {
		return nil // already gone (gc, or deleted by hand)
	}
	// Without namespaces, Delete finds them by listing Leases
	// cluster-wide; with them, it reads, lists and deletes many kinds.
	op := apiOp{verb: "list", resource: "leases.coordination.k8s.io"}
	if len(ref.Namespaces) > 0 {
		op = apiOp{namespace: ref.Namespaces[0]}
	}
	return explainAPIError(err, c.server, op)
}

// namespaces turns a -n value into the namespaces to look in: all when
// empty.
func namespaces(ns string) []string {
	if ns == "" {
		return nil
	}
	return []string{ns}
}

// List is cluster.List in namespace ns ("" = all, falling back to the
// context's namespace when the user may not list Leases cluster-wide).
func (c *Cluster) List(ctx context.Context, ns string) ([]cluster.SandboxInfo, error) {
	infos, err := cluster.List(ctx, c.clients, namespaces(ns), c.o.Now())
	if err != nil && ns == "" && apierrors.IsForbidden(err) && c.namespace != "" {
		// No cluster-wide list: fall back to the context's namespace.
		ns = c.namespace
		infos, err = cluster.List(ctx, c.clients, []string{c.namespace}, c.o.Now())
	}
	if err != nil {
		return nil, explainAPIError(err, c.server, apiOp{verb: "list", resource: "leases.coordination.k8s.io", namespace: ns})
	}
	return infos, nil
}

// GC is cluster.GC in namespace ns ("" = all, with List's fallback),
// with Options.GCGrace.
func (c *Cluster) GC(ctx context.Context, ns string, dryRun bool) (*cluster.GCReport, error) {
	o := cluster.GCOptions{Namespaces: namespaces(ns), Grace: c.o.GCGrace, Now: c.o.Now(), DryRun: dryRun}
	rep, err := cluster.GC(ctx, c.clients, o, nil)
	if err != nil && ns == "" && apierrors.IsForbidden(err) && c.namespace != "" {
		ns = c.namespace
		o.Namespaces = []string{c.namespace}
		rep, err = cluster.GC(ctx, c.clients, o, nil)
	}
	// Across all namespaces the part that needs more than a namespaced
	// Role is listing the Leases; in one, gc reads and deletes many kinds.
	op := apiOp{namespace: ns}
	if ns == "" {
		op = apiOp{verb: "list", resource: "leases.coordination.k8s.io"}
	}
	return rep, explainAPIError(err, c.server, op)
}

// Transient reports whether an Apply error may go away by itself, so the
// supervisor should retry: the network, the API server being unavailable
// or slow, expired credentials (the user logs in again), conflicts.
// Everything else — a workload that does not exist, a port no Service
// exposes, a VirtualService sbx must not touch — needs the user to change
// something; retrying it forever would only hide the message.
func Transient(err error) bool {
	var (
		ne  net.Error
		ue  *url.Error
		api apierrors.APIStatus
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, cluster.ErrRouteConflict):
		return true
	case errors.As(err, &ne), errors.As(err, &ue):
		return true
	case errors.As(err, &api):
		return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
			apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) ||
			apierrors.IsConflict(err) || apierrors.IsUnauthorized(err) || api.Status().Code >= 500
	}
	return false
}
