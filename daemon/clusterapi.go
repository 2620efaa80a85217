package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
)

// Cluster is everything a session needs from the Kubernetes side. The real
// implementation adapts package cluster (objects, port-forward); tests use
// fakes that hand out loopback connections to an in-process relay.
type Cluster interface {
	// Apply creates or updates the sandbox's objects for o.RoutingKey and
	// o.TokenVerifier (idempotent) and returns where its relay runs.
	// progress receives one line per step ("created Deployment hotrod/…").
	Apply(ctx context.Context, sb *spec.Sandbox, o ApplyOptions, progress func(string)) (Applied, error)
	// WaitRelay returns once a relay pod of t is ready (with
	// t.TokenVerifier when set), reporting what it waits for through
	// progress. Its error says why the pod is not ready.
	WaitRelay(ctx context.Context, t Target, progress func(string)) error
	// DialRelay opens one connection to the tunnel port of t's current
	// ready relay pod (a port-forward stream). It finds the pod itself, so
	// a pod that moved is found again.
	DialRelay(ctx context.Context, t Target) (net.Conn, error)
	// RenewLease extends t's Lease; sbx gc removes sandboxes whose Lease
	// expired.
	RenewLease(ctx context.Context, t Target) error
	// Delete removes every object the sandbox created, including its
	// routes inside shared VirtualServices.
	Delete(ctx context.Context, t Target, sb *spec.Sandbox) error
	// List returns the sandboxes sbx created in namespace ("" = all the
	// caller may list).
	List(ctx context.Context, namespace string) ([]ClusterSandbox, error)
	// GC deletes sandboxes in namespace whose Lease expired more than the
	// grace period ago and returns their names.
	GC(ctx context.Context, namespace string) ([]string, error)
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
	// and reports each check, until ctx ends.
	WatchRoutes(ctx context.Context, sb *spec.Sandbox, t Target, o ApplyOptions, report func(RouteCheck))
}

// RouteCheck is the outcome of one look at a sandbox's routes.
type RouteCheck struct {
	// Changed names the VirtualServices rewritten ("namespace/name").
	Changed  []string
	Ports    []meshreport.PortReport
	Warnings []string
	// Err is why the check failed; the other fields are then empty.
	Err error
}

// ErrVerifierMismatch is returned (wrapped) by Apply with
// RefuseOtherVerifier and by WaitRelay when the relay checks another token
// verifier than this daemon's: another daemon applied the sandbox with its
// own token, or someone edited the relay Deployment.
var ErrVerifierMismatch = cluster.ErrVerifierMismatch

// ErrSandboxGone is returned (wrapped) by RenewLease when the sandbox's
// objects were deleted behind the daemon's back (gc after a long sleep,
// kubectl delete): the session re-applies them.
var ErrSandboxGone = errors.New("the sandbox's objects are gone from the cluster")

// ClusterProvider returns the Cluster for a kubeconfig source and context
// name (both may be empty: kubectl's defaults). Implementations cache.
type ClusterProvider func(ctx context.Context, kubeconfig api.KubeconfigSource, kubeContext string) (Cluster, error)

// ApplyOptions are the settings of one Apply besides the spec.
type ApplyOptions struct {
	// RoutingKey is the sandbox's key; the daemon keeps it across
	// reconnects and restarts.
	RoutingKey string
	// TokenVerifier is the SHA-256 (hex) of the daemon's tunnel token, the
	// relay's --token-sha256: the token itself never goes to the cluster.
	TokenVerifier string
	// RefuseOtherVerifier makes Apply fail (ErrVerifierMismatch) rather
	// than replace a relay that checks another verifier: set when the
	// daemon re-applies on its own, so that two daemons connected to one
	// sandbox do not take it from each other in turn.
	RefuseOtherVerifier bool
	// BaggageKey, RelayImage, RelayMaxStreams and RelayDeny come from the
	// user config (RelayDeny from outbound.deny); empty or 0 means the
	// cluster package's defaults.
	BaggageKey      string
	RelayImage      string
	RelayMaxStreams int
	RelayDeny       []netip.Prefix
	// Holder is user@host, written to the Lease.
	Holder string
	// ClusterDomain is the cluster's DNS domain ("" = cluster.local).
	ClusterDomain string
}

// Target identifies one sandbox's relay in the cluster.
type Target struct {
	Sandbox    string `json:"sandbox"`
	RoutingKey string `json:"routingKey"`
	// Namespace is where the relay Deployment runs.
	Namespace string `json:"namespace"`
	// Namespaces are all the namespaces the sandbox has objects in (its
	// workloads' namespaces).
	Namespaces []string `json:"namespaces,omitempty"`
	// TokenVerifier is the verifier the daemon applied; WaitRelay waits for
	// a pod whose relay checks it ("" waits for any).
	TokenVerifier string `json:"tokenVerifier,omitempty"`
}

// Applied is the result of Cluster.Apply. It stays in the daemon: status
// carries what it says per mapping (MappingStatus.Services).
type Applied struct {
	Target
	// Services names, per mapping, the baseline Services
	// ("name.namespace") whose keyed requests now reach the laptop.
	Services map[MappingKey][]string `json:"-"`
	// Routes is where keyed requests go after the apply (nil from fakes).
	Routes *RouteCheck `json:"-"`
}

// MappingKey identifies one mapping of a sandbox: a local workload (the
// spec's local[].name) and the baseline Service port it maps.
type MappingKey struct {
	Workload string
	Port     int32
}

// ClusterSandbox is a sandbox found in the cluster by its labels.
type ClusterSandbox struct {
	Name         string
	RoutingKey   string
	Namespace    string
	LeaseExpires time.Time
}
