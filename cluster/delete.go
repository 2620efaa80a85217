package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sbx-dev/sbx/cluster/routingkey"
)

// ErrSandboxNotFound is returned (wrapped) by Delete when the cluster has no
// object of the sandbox.
var ErrSandboxNotFound = errors.New("sandbox not found")

// Ref names a sandbox in the cluster: the one reference to it that Apply
// returns and WaitRelay, RenewLease and Delete take.
type Ref struct {
	Name string `json:"name"`
	// RoutingKey is the sandbox's key; WaitRelay waits for a relay pod of
	// this key ("" = any).
	RoutingKey string `json:"routingKey,omitempty"`
	// Namespace is the relay's (home) namespace: the first of Namespaces.
	Namespace string `json:"namespace,omitempty"`
	// Namespaces to look in (every namespace the sandbox has objects in).
	// Empty means every namespace, which needs cluster-wide list
	// permission on Leases.
	Namespaces []string `json:"namespaces,omitempty"`
	// TokenVerifier is the verifier the daemon applied: WaitRelay waits
	// for a pod whose relay checks it ("" waits for any).
	TokenVerifier string `json:"tokenVerifier,omitempty"`
}

// namespaces returns where the sandbox has objects: the given namespaces,
// or those of its Leases found cluster-wide; plus any a home Lease lists.
func (r Ref) namespaces(ctx context.Context, c Clients) ([]string, error) {
	if len(r.Namespaces) > 0 {
		return r.Namespaces, nil
	}
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelSandbox: r.Name}.String()
	list, err := c.Kube.CoordinationV1().Leases(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		// No hint here: the next step depends on the cause (RBAC,
		// network), which the caller tells apart.
		return nil, fmt.Errorf("find the Leases of sandbox %s in all namespaces: %w", r.Name, err)
	}
	var out []string
	for i := range list.Items {
		out = addNamespaces(out, list.Items[i].Namespace)
		if _, ok := list.Items[i].Annotations[AnnotationNamespaces]; ok {
			out = addNamespaces(out, leaseNamespaces(&list.Items[i])...)
		}
	}
	return out, nil
}

// sandboxSelector selects every object of a sandbox.
func sandboxSelector(name string) string {
	return labels.Set{LabelManagedBy: ManagedByValue, LabelSandbox: name}.String()
}

// Delete removes everything the sandbox created: its routes inside shared
// VirtualServices (which the garbage collector cannot), the relay
// Deployment, Services, and last the Leases. Objects already gone
// are fine; a sandbox with no objects at all gives ErrSandboxNotFound.
func Delete(ctx context.Context, c Clients, ref Ref, progress func(Event)) error {
	if progress == nil {
		progress = func(Event) {}
	}
	nss, err := ref.namespaces(ctx, c)
	if err != nil {
		return err
	}
	sel := sandboxSelector(ref.Name)
	found := false
	// Routing keys from the Leases and the relay: every key the sandbox
	// ever used that still has objects.
	var keys []string
	for _, ns := range nss {
		l, err := c.Kube.CoordinationV1().Leases(ns).Get(ctx, LeaseName(ref.Name), metav1.GetOptions{})
		if err == nil && l.Labels[LabelSandbox] == ref.Name {
			found = true
			nss = addNamespaces(nss, leaseNamespaces(l)...)
			keys = addKey(keys, l.Labels[LabelRoutingKey])
		} else if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("read Lease %s/%s: %w", ns, LeaseName(ref.Name), err)
		}
		deps, err := c.Kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return fmt.Errorf("list Deployments of sandbox %s in %s: %w", ref.Name, ns, err)
		}
		for _, d := range deps.Items {
			keys = addKey(keys, d.Labels[LabelRoutingKey])
		}
	}
	if len(keys) > 0 {
		found = true
	}
	if len(keys) > 0 {
		n, err := removeRoutes(ctx, c, ref.Name, keys, nss, "", progress)
		if err != nil {
			return fmt.Errorf("remove the routes of sandbox %s: %w", ref.Name, err)
		}
		if n > 0 {
			found = true
		}
	}
	keep := func(string, string) bool { return false }
	n, err := deleteObjects(ctx, c, nss, ref.Name, keep, true, progress)
	if err != nil {
		return err
	}
	if !found && n == 0 {
		return fmt.Errorf("sandbox %s in namespaces %v: %w", ref.Name, nss, ErrSandboxNotFound)
	}
	return nil
}

func addKey(keys []string, k string) []string {
	if routingkey.Validate(k) == nil && !slices.Contains(keys, k) {
		return append(keys, k)
	}
	return keys
}

// prune removes what an earlier apply of the sandbox created and the
// current objects no longer include: objects of dropped workloads or
// namespaces and objects named after an old key (their routes went in
// Apply's route reconcile).
func prune(ctx context.Context, c Clients, objs *Objects, nss []string, progress func(Event)) error {
	want := map[string]bool{}
	add := func(kind string, m metav1.Object) { want[kind+"/"+m.GetNamespace()+"/"+m.GetName()] = true }
	for _, l := range objs.Leases {
		add("Lease", l)
	}
	add("Deployment", objs.Relay)
	for _, s := range objs.Services {
		add("Service", s)
	}
	_, err := deleteObjects(ctx, c, nss, objs.Sandbox, func(kind, id string) bool { return want[kind+"/"+id] }, false, progress)
	return err
}

// deleteObjects deletes the sandbox's objects in the namespaces, except
// those keep accepts (by kind and "ns/name"). Leases go last (and only when
// withLeases or not kept) since they own the rest.
func deleteObjects(ctx context.Context, c Clients, nss []string, sandbox string, keep func(kind, id string) bool, withLeases bool, progress func(Event)) (int, error) {
	sel := metav1.ListOptions{LabelSelector: sandboxSelector(sandbox)}
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	n := 0
	del := func(kind, ns, name string, f func() error) error {
		if keep(kind, ns+"/"+name) {
			return nil
		}
		if err := f(); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s/%s: %w", kind, ns, name, err)
		}
		n++
		progress(Event{Action: ActionDeleted, Kind: kind, Namespace: ns, Name: name})
		return nil
	}
	sorted := slices.Clone(nss)
	sort.Strings(sorted)
	for _, ns := range sorted {
		deps, err := c.Kube.AppsV1().Deployments(ns).List(ctx, sel)
		if err != nil {
			return n, fmt.Errorf("list Deployments in %s: %w", ns, err)
		}
		for _, d := range deps.Items {
			if err := del("Deployment", ns, d.Name, func() error { return c.Kube.AppsV1().Deployments(ns).Delete(ctx, d.Name, opts) }); err != nil {
				return n, err
			}
		}
		svcs, err := c.Kube.CoreV1().Services(ns).List(ctx, sel)
		if err != nil {
			return n, fmt.Errorf("list Services in %s: %w", ns, err)
		}
		for _, s := range svcs.Items {
			if err := del("Service", ns, s.Name, func() error { return c.Kube.CoreV1().Services(ns).Delete(ctx, s.Name, opts) }); err != nil {
				return n, err
			}
		}
	}
	for _, ns := range sorted {
		leases, err := c.Kube.CoordinationV1().Leases(ns).List(ctx, sel)
		if err != nil {
			return n, fmt.Errorf("list Leases in %s: %w", ns, err)
		}
		for _, l := range leases.Items {
			if !withLeases && keep("Lease", ns+"/"+l.Name) {
				continue
			}
			if err := del("Lease", ns, l.Name, func() error { return c.Kube.CoordinationV1().Leases(ns).Delete(ctx, l.Name, opts) }); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}
