package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

// Baseline is where sbx reads the baseline: the live cluster for apply, a
// manifest file for render. Both answer the same questions, so the objects
// sbx renders are the objects it applies.
type Baseline interface {
	// PodLabels returns the labels of the workload's pod template.
	PodLabels(ctx context.Context, w spec.Workload) (map[string]string, error)
	// Services lists the Services of a namespace.
	Services(ctx context.Context, namespace string) ([]*corev1.Service, error)
	// Routing returns what routes requests in the mesh: VirtualServices of
	// every namespace (only those of namespaces when the caller may not
	// list them all), the mesh's default exportTo, Gateway API routes.
	Routing(ctx context.Context, namespaces []string) (*Routing, error)
}

// ResolvedPort is one mapping resolved against the baseline Services.
type ResolvedPort struct {
	// Port is the baseline Service port number (the mapping's port).
	Port int32
	// Name and AppProtocol are copied from the baseline Service port so the
	// mesh detects the same protocol on the sandbox Service.
	Name        string
	AppProtocol *string
	// Protocol is what the relay is told (its --inbound appProtocol).
	Protocol relayargs.AppProtocol
	// Routable is false for ports the mesh treats as opaque TCP, where a
	// header match cannot work.
	Routable bool
	// Services are the baseline Services that expose this port for the
	// workload.
	Services []*corev1.Service
	// RelayPort is the relay container port that serves it.
	RelayPort int32
	// ToLocal is the laptop address, for reports.
	ToLocal string
}

// ResolvedWorkload is one local workload resolved against the baseline.
type ResolvedWorkload struct {
	Local     spec.Local
	PodLabels map[string]string
	// Services are all baseline Services selecting the workload's pods,
	// sorted by name.
	Services []*corev1.Service
	// Ports has one entry per mapping, in spec order.
	Ports []ResolvedPort
}

// Resolve resolves every local workload of sb: pod template labels → the
// Services whose selectors match → the Service port of each mapping. Relay
// container ports are handed out from FirstInboundPort in spec order.
func Resolve(ctx context.Context, b Baseline, sb *spec.Sandbox) ([]ResolvedWorkload, error) {
	svcCache := map[string][]*corev1.Service{}
	next := int32(FirstInboundPort)
	var out []ResolvedWorkload
	for i, l := range sb.Spec.Local {
		field := fmt.Sprintf("spec.local[%d]", i)
		w := l.From
		podLabels, err := b.PodLabels(ctx, w)
		if errors.Is(err, errObjectNotFound) {
			return nil, &SpecError{fmt.Errorf("%s: %w", field, err)}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		svcs, ok := svcCache[w.Namespace]
		if !ok {
			svcs, err = b.Services(ctx, w.Namespace)
			if err != nil {
				return nil, fmt.Errorf("%s: list Services in namespace %s: %w", field, w.Namespace, err)
			}
			svcCache[w.Namespace] = svcs
		}
		var matching []*corev1.Service
		for _, s := range svcs {
			if s.Labels[LabelManagedBy] == ManagedByValue || len(s.Spec.Selector) == 0 {
				continue // sbx's own Services and selector-less ones select no baseline pods
			}
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) {
				matching = append(matching, s)
			}
		}
		sort.Slice(matching, func(a, b int) bool { return matching[a].Name < matching[b].Name })
		if len(matching) == 0 {
			return nil, &SpecError{fmt.Errorf("%s: no Service in namespace %s selects %s %s/%s (pod labels %s); sbx routes requests by Service, so the workload needs one. Services there: %s",
				field, w.Namespace, w.Kind, w.Namespace, w.Name, formatLabels(podLabels), describeServices(svcs))}
		}
		rw := ResolvedWorkload{Local: l, PodLabels: podLabels, Services: matching}
		for j, m := range l.Mappings {
			rp := ResolvedPort{Port: m.Port, ToLocal: m.ToLocal}
			for _, s := range matching {
				for _, p := range s.Spec.Ports {
					if p.Port != m.Port {
						continue
					}
					if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
						return nil, &SpecError{fmt.Errorf("%s.mappings[%d].port: port %d of Service %s/%s is %s; the sbx tunnel carries TCP only",
							field, j, m.Port, s.Namespace, s.Name, p.Protocol)}
					}
					if len(rp.Services) == 0 {
						rp.Name, rp.AppProtocol = p.Name, p.AppProtocol
						rp.Protocol, rp.Routable = portProtocol(p)
					}
					rp.Services = append(rp.Services, s)
				}
			}
			if len(rp.Services) == 0 {
				return nil, &SpecError{fmt.Errorf("%s.mappings[%d].port: %d is not a port of the Services selecting %s %s/%s; available ports: %s",
					field, j, m.Port, w.Kind, w.Namespace, w.Name, availablePorts(matching))}
			}
			rp.RelayPort = next
			next++
			rw.Ports = append(rw.Ports, rp)
		}
		out = append(out, rw)
	}
	return out, nil
}

// portProtocol returns what the relay should be told about a Service port
// and whether the mesh can route it by header. Istio reads appProtocol
// first, then the port name prefix ("http-web"); with neither it sniffs the
// protocol, so the port stays routable.
func portProtocol(p corev1.ServicePort) (proto relayargs.AppProtocol, routable bool) {
	name := ""
	if p.AppProtocol != nil {
		name = strings.ToLower(*p.AppProtocol)
	} else if p.Name != "" {
		name, _, _ = strings.Cut(strings.ToLower(p.Name), "-")
	}
	switch name {
	case "http", "https-h1", "http1":
		return relayargs.ProtoHTTP, true
	case "http2", "kubernetes.io/h2c", "h2c":
		return relayargs.ProtoHTTP2, true
	case "grpc", "grpc-web":
		return relayargs.ProtoGRPC, true
	case "tcp", "tls", "https", "mongo", "mysql", "redis", "kubernetes.io/ws", "kubernetes.io/wss":
		return relayargs.ProtoTCP, false
	}
	return relayargs.ProtoTCP, true
}

func formatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	return "{" + labels.Set(m).String() + "}"
}

func describeServices(svcs []*corev1.Service) string {
	var parts []string
	for _, s := range svcs {
		if s.Labels[LabelManagedBy] == ManagedByValue {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (selector %s)", s.Name, formatLabels(s.Spec.Selector)))
	}
	if len(parts) == 0 {
		return "none"
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func availablePorts(svcs []*corev1.Service) string {
	var parts []string
	for _, s := range svcs {
		for _, p := range s.Spec.Ports {
			d := fmt.Sprintf("%d", p.Port)
			if p.Name != "" {
				d += "/" + p.Name
			}
			parts = append(parts, d+" (Service "+s.Name+")")
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// SpecError is a spec that does not fit the cluster: a workload that does
// not exist, a port no Service exposes. The user fixes the spec (not the
// cluster, not the network); the message says where.
type SpecError struct{ Err error }

func (e *SpecError) Error() string { return e.Err.Error() }
func (e *SpecError) Unwrap() error { return e.Err }

// errObjectNotFound marks objectNotFound's not-found errors.
var errObjectNotFound = errors.New("not found")

// objectNotFound turns a NotFound from the API into an error that says what
// to check.
func objectNotFound(kind, namespace, name string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s %s/%s %w: check spec.local[].from (kubectl get %s -n %s)", kind, namespace, name, errObjectNotFound, strings.ToLower(kind), namespace)
	}
	return fmt.Errorf("read %s %s/%s: %w", kind, namespace, name, err)
}
