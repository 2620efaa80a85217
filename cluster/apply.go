package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// Action is what happened to an object, as reported to a progress callback.
type Action string

// Progress actions.
const (
	ActionCreated   Action = "created"
	ActionUpdated   Action = "updated"
	ActionUnchanged Action = "unchanged"
	ActionDeleted   Action = "deleted"
	ActionWaiting   Action = "waiting"
	ActionReady     Action = "ready"
	ActionWarning   Action = "warning"
	// ActionRouting says how a Service's keyed requests are routed (Istio
	// VirtualServices or Gateway API) and why.
	ActionRouting Action = "routing"
)

// Event is one progress report of Apply, Delete, GC or WaitRelay.
type Event struct {
	Action    Action `json:"action"`
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Message   string `json:"message,omitempty"`
}

// String renders the event for a terminal: "created Deployment hotrod/x".
func (e Event) String() string {
	s := string(e.Action)
	if e.Kind != "" {
		s += " " + e.Kind + " " + e.Namespace + "/" + e.Name
	}
	if e.Message != "" {
		if e.Kind != "" {
			s += ":"
		}
		s += " " + e.Message
	}
	return s
}

// Result is what Apply did and what the caller needs next.
type Result struct {
	// Ref is the sandbox as applied: its routing key, the relay's
	// namespace, every namespace it has objects in, the token verifier.
	Ref Ref
	// RelayName is the relay Deployment's name.
	RelayName string
	// Services names, per mapping, the baseline Services
	// ("name.namespace") whose keyed requests now reach the sandbox.
	Services map[Mapping][]string
	Objects  *Objects
	// Routes says where keyed requests go, per mapped Service port.
	Routes *RouteStatus
}

// Mapping identifies one mapping of a sandbox: a local workload (the
// spec's local[].name) and the baseline Service port it maps.
type Mapping struct {
	Workload string
	Port     int32
}

// mappedServices is Result.Services of objs.
func mappedServices(objs *Objects) map[Mapping][]string {
	out := map[Mapping][]string{}
	for _, w := range objs.Workloads {
		for _, p := range w.Ports {
			key := Mapping{Workload: w.Local.Name, Port: p.Port}
			for _, svc := range p.Services {
				out[key] = append(out[key], svc.Name+"."+svc.Namespace)
			}
		}
	}
	return out
}

// Apply creates or updates every object of the sandbox so the cluster
// matches sb, and removes what an earlier apply created but sb no longer
// needs. It is idempotent: applying the same sandbox twice writes nothing
// the second time. An empty o.RoutingKey reuses the existing sandbox's (so
// a restarted daemon keeps its key) or generates a new one. The token
// verifier is the caller's: Apply never sees a token, and writes no
// Secret.
func Apply(ctx context.Context, c Clients, sb *spec.Sandbox, o Options, progress func(Event)) (*Result, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	o = o.withDefaults()
	nss := sb.Namespaces()
	if len(nss) == 0 {
		return nil, errors.New("no local workloads (spec.local is empty)") // the caller names the sandbox
	}
	home := nss[0]
	leaseName := LeaseName(sb.Name)

	// What exists already: earlier keys and namespaces.
	prevNS := []string{}
	var prevKeys []string
	for _, ns := range nss {
		l, err := c.Kube.CoordinationV1().Leases(ns).Get(ctx, leaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read Lease %s/%s: %w", ns, leaseName, err)
		}
		if l.Labels[LabelSandbox] != sb.Name || l.Labels[LabelManagedBy] != ManagedByValue {
			return nil, fmt.Errorf("Lease %s/%s exists but does not belong to sbx sandbox %s; choose another sandbox name", ns, leaseName, sb.Name)
		}
		prevNS = addNamespaces(prevNS, ns)
		if _, ok := l.Annotations[AnnotationNamespaces]; ok {
			prevNS = addNamespaces(prevNS, leaseNamespaces(l)...)
		}
		if k := l.Labels[LabelRoutingKey]; routingkey.Validate(k) == nil && !slices.Contains(prevKeys, k) {
			prevKeys = append(prevKeys, k)
		}
	}
	if o.RoutingKey == "" && len(prevKeys) > 0 {
		o.RoutingKey = prevKeys[0]
	}
	if o.RoutingKey == "" {
		o.RoutingKey = routingkey.New()
	}
	if err := ValidateTokenVerifier(o.TokenVerifier); err != nil {
		return nil, err
	}
	if o.RefuseOtherVerifier {
		if err := checkVerifier(ctx, c, home, sb.Name, o.TokenVerifier); err != nil {
			return nil, err
		}
	}

	objs, err := Plan(ctx, LiveBaseline{C: c}, sb, o)
	if err != nil {
		return nil, err
	}
	for _, w := range objs.Warnings {
		progress(Event{Action: ActionWarning, Message: w})
	}

	// Leases first: their UIDs are the owners of everything else. The home
	// Lease records old and new namespaces until pruning is done, so an
	// interrupted apply still knows where to clean up.
	allNS := addNamespaces(nss, prevNS...)
	owners := map[string]metav1.OwnerReference{}
	for _, l := range objs.Leases {
		if l.Namespace == home {
			l.Annotations[AnnotationNamespaces] = strings.Join(allNS, ",")
		}
		live, err := applyLease(ctx, c, l, progress)
		if err != nil {
			return nil, err
		}
		owners[l.Namespace] = leaseOwner(live.Name, live.UID)
	}
	setOwner(objs, owners)

	for _, s := range objs.Services {
		if err := applyService(ctx, c, s, progress); err != nil {
			return nil, err
		}
	}
	if err := applyDeployment(ctx, c, objs.Relay, progress); err != nil {
		return nil, err
	}
	// Routes last: they send keyed requests to the Services just written.
	// Routes of earlier keys and of namespaces the spec dropped go too.
	rsb := objs.routes
	rsb.StaleKeys = slices.DeleteFunc(slices.Clone(prevKeys), func(k string) bool { return k == o.RoutingKey })
	routes, err := reconcile(ctx, c, rsb, allNS, sb.Name, o.Mesh, o.ClusterDomain, progress)
	if err != nil {
		return nil, fmt.Errorf("mesh routes: %w", err)
	}

	if err := prune(ctx, c, objs, allNS, progress); err != nil {
		return nil, err
	}
	if len(allNS) != len(nss) {
		// Pruning is done: the home Lease now lists only current namespaces.
		for _, l := range objs.Leases {
			if l.Namespace == home {
				l.Annotations[AnnotationNamespaces] = strings.Join(nss, ",")
				if _, err := applyLease(ctx, c, l, progress); err != nil {
					return nil, err
				}
			}
		}
	}
	ref := Ref{Name: sb.Name, RoutingKey: o.RoutingKey, Namespace: home, Namespaces: nss, TokenVerifier: o.TokenVerifier}
	return &Result{Ref: ref, RelayName: objs.Relay.Name, Services: mappedServices(objs), Objects: objs, Routes: routes}, nil
}

// ErrVerifierMismatch: the sandbox's relay checks Hellos against another
// token verifier than the caller's (Options.RefuseOtherVerifier, and
// WaitRelay). Another daemon applied the sandbox with its own token, or
// someone edited the Deployment.
var ErrVerifierMismatch = errors.New("the relay's verifier does not match this daemon's token: the relay was re-created by another daemon or its Deployment was edited")

// VerifierMismatchError says which relay checks which verifier. Only
// prefixes are shown: enough to tell two apart, and a verifier is no
// secret anyway.
type VerifierMismatchError struct {
	Namespace, Deployment string
	// Relay is the verifier the relay Deployment passes ("" for none);
	// Want the caller's.
	Relay, Want string
}

func (e *VerifierMismatchError) Error() string {
	return fmt.Sprintf("%v (Deployment %s/%s has --token-sha256 %s, this daemon's token hashes to %s)",
		ErrVerifierMismatch, e.Namespace, e.Deployment, verifierPrefix(e.Relay), verifierPrefix(e.Want))
}

// Unwrap makes errors.Is(err, ErrVerifierMismatch) work.
func (e *VerifierMismatchError) Unwrap() error { return ErrVerifierMismatch }

func verifierPrefix(v string) string {
	if v == "" {
		return "(none)"
	}
	if len(v) > 12 {
		return v[:12] + "…"
	}
	return v
}

// checkVerifier fails with a *VerifierMismatchError when the sandbox's
// relay Deployment exists and passes the relay another verifier than want.
// A Deployment that is not the sandbox's is left for upsert to refuse.
func checkVerifier(ctx context.Context, c Clients, ns, sandbox, want string) error {
	d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, RelayName(sandbox), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read Deployment %s/%s: %w", ns, RelayName(sandbox), err)
	}
	if d.Labels[LabelSandbox] != sandbox || d.Labels[LabelManagedBy] != ManagedByValue {
		return nil
	}
	if got := relayVerifier(&d.Spec.Template.Spec); got != want {
		return &VerifierMismatchError{Namespace: ns, Deployment: d.Name, Relay: got, Want: want}
	}
	return nil
}

// specHash digests what sbx writes for an object, so a later apply can tell
// whether anything changed without comparing fields the API server fills.
func specHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sbx: marshal %T: %v", v, err)) // our own typed objects always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// objClient is the part of a typed client-go client apply needs.
type objClient[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// upsert creates desired or updates the existing object when its spec hash
// differs. keep copies fields the server owns from the existing object
// into desired before an update. It refuses to touch an object of the same
// name that is not this sandbox's.
func upsert[T metav1.Object](ctx context.Context, cl objClient[T], kind string, desired T, hash string,
	keep func(existing, desired T), progress func(Event)) (T, error) {

	ns, name := desired.GetNamespace(), desired.GetName()
	desired.SetAnnotations(withAnnotation(desired.GetAnnotations(), AnnotationSpecHash, hash))
	var out T
	action := ActionUnchanged
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		existing, err := cl.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			out, err = cl.Create(ctx, desired, metav1.CreateOptions{})
			action = ActionCreated
			return err
		}
		if err != nil {
			return err
		}
		if existing.GetLabels()[LabelSandbox] != desired.GetLabels()[LabelSandbox] || existing.GetLabels()[LabelManagedBy] != ManagedByValue {
			return fmt.Errorf("%s %s/%s exists and does not belong to sbx sandbox %s; delete it or choose another sandbox name",
				kind, ns, name, desired.GetLabels()[LabelSandbox])
		}
		if existing.GetAnnotations()[AnnotationSpecHash] == hash {
			out, action = existing, ActionUnchanged
			return nil
		}
		desired.SetResourceVersion(existing.GetResourceVersion())
		if keep != nil {
			keep(existing, desired)
		}
		out, err = cl.Update(ctx, desired, metav1.UpdateOptions{})
		action = ActionUpdated
		return err
	})
	if err != nil {
		var zero T
		return zero, fmt.Errorf("apply %s %s/%s: %w", kind, ns, name, err)
	}
	progress(Event{Action: action, Kind: kind, Namespace: ns, Name: name})
	return out, nil
}

func applyLease(ctx context.Context, c Clients, l *coordinationv1.Lease, progress func(Event)) (*coordinationv1.Lease, error) {
	hash := specHash(l)
	now := metav1.NowMicro()
	desired := l.DeepCopy()
	desired.Spec.AcquireTime, desired.Spec.RenewTime = &now, &now
	live, err := upsert(ctx, c.Kube.CoordinationV1().Leases(l.Namespace), "Lease", desired, hash,
		func(existing, d *coordinationv1.Lease) { d.Spec.AcquireTime = existing.Spec.AcquireTime }, progress)
	if err != nil {
		return nil, err
	}
	if leaseExpiry(live).Before(now.Time) {
		// Unchanged but expired (the daemon was away): renew it now so GC
		// does not take the sandbox while it is being used again.
		live.Spec.RenewTime = &now
		live, err = c.Kube.CoordinationV1().Leases(l.Namespace).Update(ctx, live, metav1.UpdateOptions{})
		if err != nil {
			return nil, fmt.Errorf("renew Lease %s/%s: %w", l.Namespace, l.Name, err)
		}
	}
	return live, nil
}

func applyService(ctx context.Context, c Clients, s *corev1.Service, progress func(Event)) error {
	_, err := upsert(ctx, c.Kube.CoreV1().Services(s.Namespace), "Service", s.DeepCopy(), specHash(s),
		func(existing, d *corev1.Service) {
			// The cluster IP is immutable and assigned by the server.
			d.Spec.ClusterIP, d.Spec.ClusterIPs = existing.Spec.ClusterIP, existing.Spec.ClusterIPs
			d.Spec.IPFamilies, d.Spec.IPFamilyPolicy = existing.Spec.IPFamilies, existing.Spec.IPFamilyPolicy
		}, progress)
	return err
}

func applyDeployment(ctx context.Context, c Clients, d *appsv1.Deployment, progress func(Event)) error {
	_, err := upsert(ctx, c.Kube.AppsV1().Deployments(d.Namespace), "Deployment", d.DeepCopy(), specHash(d), nil, progress)
	return err
}
