package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// SandboxInfo is one sandbox found in the cluster, for `sbx list`.
type SandboxInfo struct {
	Name        string            `json:"name"`
	RoutingKey  string            `json:"routingKey"`
	Namespace   string            `json:"namespace"` // the relay's (home) namespace
	Namespaces  []string          `json:"namespaces"`
	Holder      string            `json:"holder,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	RenewTime   time.Time         `json:"renewTime"`
	Expires     time.Time         `json:"expires"`
	Expired     bool              `json:"expired"`
	// RelayReady is whether the relay Deployment has a ready replica.
	RelayReady bool `json:"relayReady"`
}

// Ref is the reference WaitRelay, RenewLease and Delete take.
func (i SandboxInfo) Ref() Ref {
	return Ref{Name: i.Name, RoutingKey: i.RoutingKey, Namespace: i.Namespace, Namespaces: i.Namespaces}
}

// listLeases returns the sbx Leases in the namespaces (all when empty).
func listLeases(ctx context.Context, c Clients, namespaces []string) ([]coordinationv1.Lease, error) {
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelComponent: "lease"}.String()
	var out []coordinationv1.Lease
	for _, ns := range namespaces {
		list, err := c.Kube.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			where := "namespace " + ns
			if ns == "" {
				// The caller knows the next step, which depends on the
				// cause (RBAC, network) and on how namespaces are passed.
				where = "all namespaces"
			}
			return nil, fmt.Errorf("list sbx Leases in %s: %w", where, err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

// List returns the sandboxes found in the namespaces (all when empty),
// one entry per sandbox, sorted by name.
func List(ctx context.Context, c Clients, namespaces []string, now time.Time) ([]SandboxInfo, error) {
	leases, err := listLeases(ctx, c, namespaces)
	if err != nil {
		return nil, err
	}
	by := map[string]*SandboxInfo{}
	for i := range leases {
		l := &leases[i]
		name := l.Labels[LabelSandbox]
		info, ok := by[name]
		if !ok {
			info = &SandboxInfo{Name: name}
			by[name] = info
		}
		info.Namespaces = addNamespaces(info.Namespaces, l.Namespace)
		exp := leaseExpiry(l)
		if exp.After(info.Expires) {
			info.Expires = exp
			if l.Spec.RenewTime != nil {
				info.RenewTime = l.Spec.RenewTime.Time
			}
		}
		if _, home := l.Annotations[AnnotationNamespaces]; home || info.Namespace == "" {
			info.Namespace = l.Namespace
			info.RoutingKey = l.Labels[LabelRoutingKey]
			info.Description = l.Annotations[AnnotationDescription]
			if l.Spec.HolderIdentity != nil {
				info.Holder = *l.Spec.HolderIdentity
			}
			info.Labels = map[string]string{}
			for k, v := range l.Labels {
				switch k {
				case LabelManagedBy, LabelSandbox, LabelRoutingKey, LabelComponent:
				default:
					info.Labels[k] = v
				}
			}
		}
	}
	out := make([]SandboxInfo, 0, len(by))
	for _, info := range by {
		info.Expired = !info.Expires.After(now)
		d, err := c.Kube.AppsV1().Deployments(info.Namespace).Get(ctx, RelayName(info.Name), metav1.GetOptions{})
		if err == nil {
			info.RelayReady = d.Status.ReadyReplicas > 0
		} else if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read relay Deployment %s/%s: %w", info.Namespace, RelayName(info.Name), err)
		}
		sort.Strings(info.Namespaces)
		out = append(out, *info)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// GCOptions select what GC collects.
type GCOptions struct {
	// Namespaces to look in; empty means all (cluster-wide list).
	Namespaces []string
	// Grace is how long after its Lease expired a sandbox is kept: a laptop
	// that slept through a renewal gets it back when it wakes.
	Grace time.Duration
	// Now is the current time.
	Now time.Time
	// DryRun reports what would be deleted without deleting.
	DryRun bool
}

// GCReport is what GC did (or, dry, would do).
type GCReport struct {
	// Deleted names the sandboxes collected (DryRun: to be collected).
	Deleted []string
	// Waiting are sandboxes whose Lease expired less than Grace ago:
	// collected once the grace is over, unless their daemon comes back.
	Waiting []SandboxInfo
	Grace   time.Duration
	DryRun  bool
}

// GC deletes every sandbox whose Leases all expired more than o.Grace ago
// and says which, and which expired too recently to go yet.
func GC(ctx context.Context, c Clients, o GCOptions, progress func(Event)) (*GCReport, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	infos, err := List(ctx, c, o.Namespaces, o.Now)
	if err != nil {
		return nil, err
	}
	rep := &GCReport{Grace: o.Grace, DryRun: o.DryRun}
	var gone []string
	var errs []error
	for _, info := range infos {
		if info.Expires.Add(o.Grace).After(o.Now) {
			if info.Expired {
				rep.Waiting = append(rep.Waiting, info)
			}
			continue
		}
		progress(Event{Action: ActionDeleted, Kind: "Sandbox", Namespace: info.Namespace, Name: info.Name,
			Message: fmt.Sprintf("lease expired %s ago", o.Now.Sub(info.Expires).Round(time.Second))})
		if o.DryRun {
			gone = append(gone, info.Name)
			continue
		}
		err := Delete(ctx, c, Ref{Name: info.Name, Namespaces: info.Namespaces}, progress)
		if err != nil && !errors.Is(err, ErrSandboxNotFound) {
			errs = append(errs, fmt.Errorf("collect sandbox %s: %w", info.Name, err))
			continue
		}
		gone = append(gone, info.Name)
	}
	rep.Deleted = gone
	return rep, errors.Join(errs...)
}
