package daemon

import (
	"context"
	"errors"
	"net"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/discovery"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
)

// Cluster is everything a session needs from the Kubernetes side, in
// package cluster's own types. The real implementation is cluster/live's
// Cluster; tests use fakes that hand out loopback connections to an
// in-process relay.
//
// An error retrying cannot cure (an invalid spec, a refusal, a workload
// that does not exist) has an IsPermanent method that returns true (see
// isPermanent); one whose remedy is not the generic "fix the cause and
// connect again" has a NextStep method that says it (see failedMessage).
type Cluster interface {
	// Apply creates or updates the sandbox's objects for o.RoutingKey and
	// o.TokenVerifier (idempotent) and returns the sandbox as applied.
	// progress receives each step ("created Deployment hotrod/…").
	Apply(ctx context.Context, sb *spec.Sandbox, o cluster.Options, progress func(cluster.Event)) (*cluster.Result, error)
	// WaitRelay returns once a relay pod of ref is ready (with
	// ref.TokenVerifier when set), reporting what it waits for through
	// progress. Its error says why the pod is not ready; a relay that
	// checks another verifier fails it with cluster.ErrVerifierMismatch.
	WaitRelay(ctx context.Context, ref cluster.Ref, progress func(cluster.Event)) error
	// DialRelay opens one connection to the tunnel port of ref's current
	// ready relay pod (a port-forward stream). It finds the pod itself, so
	// a pod that moved is found again.
	DialRelay(ctx context.Context, ref cluster.Ref) (net.Conn, error)
	// RenewLease extends ref's Leases (sbx gc removes sandboxes whose
	// Lease expired); cluster.ErrSandboxGone when they are gone.
	RenewLease(ctx context.Context, ref cluster.Ref) error
	// Delete removes every object the sandbox created, including its
	// routes inside shared VirtualServices; one already gone is no error.
	Delete(ctx context.Context, ref cluster.Ref) error
	// List returns the sandboxes sbx created in namespace ("" = all the
	// caller may list).
	List(ctx context.Context, namespace string) ([]cluster.SandboxInfo, error)
	// GC deletes sandboxes in namespace whose Lease expired more than the
	// grace period ago (dryRun: deletes nothing) and reports them, and
	// those whose Lease expired more recently.
	GC(ctx context.Context, namespace string, dryRun bool) (*cluster.GCReport, error)
}

// RouteSweeper is implemented by Clusters that find and remove routes of
// sandboxes that are gone (the real one; test fakes may leave it out).
type RouteSweeper interface {
	// Leftovers lists them in namespace ("" = all the caller may list).
	Leftovers(ctx context.Context, namespace string) ([]meshreport.Leftover, error)
	// SweepRoutes removes them and returns what it changed.
	SweepRoutes(ctx context.Context, namespace string) ([]meshreport.Leftover, error)
}

// RouteWatcher is implemented by Clusters that keep a connected sandbox's
// mesh routes in place (the real one; test fakes may leave it out).
type RouteWatcher interface {
	// WatchRoutes checks the sandbox's routes whenever a VirtualService
	// changes, and now and then regardless, puts back what is missing,
	// and reports each check (its status, or why it failed), until ctx
	// ends.
	WatchRoutes(ctx context.Context, sb *spec.Sandbox, ref cluster.Ref, o cluster.Options, report func(*cluster.RouteStatus, error))
}

// ServiceDiscoverer is implemented by Clusters whose Services the daemon
// can watch for outbound access (the real one). It is separate from
// Cluster so that a Cluster without an API server behind it (a test
// double) still works: its sandboxes then get no discovered names, and
// the proxy still sends names ending in .svc through the tunnel.
type ServiceDiscoverer interface {
	// WatchServices returns a watcher of the cluster's Services with o
	// (its Client set by the cluster); nil and no error when the cluster
	// offers none.
	WatchServices(o discovery.Options) (*discovery.Watcher, error)
}

// ClusterProvider returns the Cluster for a kubeconfig source and context
// name (both may be empty: kubectl's defaults). Implementations cache.
type ClusterProvider func(ctx context.Context, kubeconfig api.KubeconfigSource, kubeContext string) (Cluster, error)

// isPermanent reports whether err, or an error it wraps, says retrying
// cannot cure it.
func isPermanent(err error) bool {
	var p interface{ IsPermanent() bool }
	return errors.As(err, &p) && p.IsPermanent()
}
