package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"sigs.k8s.io/yaml"

	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/relay/relayargs"
	"github.com/sbx-dev/sbx/tunnel"
)

// VerifierPlaceholder stands for the token verifier in rendered output:
// the sbx daemon mints the token when it connects a sandbox.
const VerifierPlaceholder = "<sha256 of the tunnel token the sbx daemon mints>"

// uidPlaceholder stands for an owner's UID, which the API server assigns.
const uidPlaceholder = "<uid of the Lease, assigned by the API server>"

// DefaultRelayImageRepo is where the release pipeline publishes the sbx
// image; callers pass DefaultRelayImageRepo + ":" + version as RelayImage
// unless the user configured another (relayImage in the config, or
// --relay-image).
const DefaultRelayImageRepo = "ghcr.io/sbx-dev/sbx"

// Options are the inputs of Plan and Apply besides the spec.
type Options struct {
	// RoutingKey is the sandbox's key. Apply reuses the existing sandbox's
	// key when empty, or generates one; Plan requires it.
	RoutingKey string
	// TokenVerifier is the hex SHA-256 of the tunnel token (required): the
	// relay accepts a daemon whose token hashes to it. Only the verifier
	// reaches the cluster, in the relay's args, where anyone who may read
	// the Deployment sees it; the token stays with the daemon that minted
	// it. A new verifier changes the relay's pod template and so rolls the
	// relay; the same one leaves the Deployment unchanged. Plan also takes
	// VerifierPlaceholder (sbx render); Apply does not.
	TokenVerifier string
	// RefuseOtherVerifier makes Apply fail with ErrVerifierMismatch, before
	// it writes anything, when the sandbox's relay Deployment exists with
	// another verifier: someone else (another daemon, or an edit) put it
	// there. The daemon sets it when it re-applies on its own, so that two
	// daemons connected to one sandbox do not take it from each other in
	// turn; it leaves it unset when it minted the token or the user asked
	// to connect.
	RefuseOtherVerifier bool
	// RelayImage is the image that runs `sbx relay` (required).
	RelayImage string
	// BaggageKey is the W3C baggage key carrying the routing key (default
	// routingkey.DefaultBaggageKey).
	BaggageKey string
	// RelayMaxStreams is the relay's stream cap (--max-streams), 0 for its
	// default (relayargs.DefaultMaxStreams); the relay's memory scales with it.
	RelayMaxStreams int
	// RelayDeny are ranges the relay refuses to dial on top of its
	// built-in list (--deny, one per entry; outbound.deny in the sbx
	// config), as relayargs.ParseDeny returns them. Changing it changes the
	// relay Deployment, and so its spec hash.
	RelayDeny []netip.Prefix
	// Holder is written to the Lease's holderIdentity (e.g. user@host).
	Holder string
	// Mesh is how keyed requests are routed: MeshAuto (""), MeshIstio or
	// MeshGatewayAPI (the sbx config's mesh).
	Mesh string
	// ClusterDomain is the cluster's DNS domain (default cluster.local),
	// for the few hosts sbx must write fully qualified: a sandbox Service
	// named from a VirtualService of another namespace.
	ClusterDomain string
}

// ValidateTokenVerifier checks a verifier as Options carries it: what
// tunnel.ParseTokenVerifier reads (the relay's --token-sha256), in the
// form its String writes (lowercase), so that one verifier renders one
// Deployment.
func ValidateTokenVerifier(v string) error {
	p, err := tunnel.ParseTokenVerifier(v)
	if err != nil {
		return fmt.Errorf("%w (a bug in the caller)", err)
	}
	if p.String() != v {
		return errors.New("the token verifier is not in lowercase hex, the form the relay's Deployment carries (a bug in the caller)")
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.BaggageKey == "" {
		o.BaggageKey = routingkey.DefaultBaggageKey
	}
	if o.Holder == "" {
		o.Holder = "sbx"
	}
	return o
}

// Objects are everything sbx writes for one sandbox.
type Objects struct {
	Sandbox    string
	RoutingKey string
	// Namespaces are all namespaces of the sandbox. The first, the
	// namespace of the first local workload, is home: it holds the relay
	// and the sandbox Services.
	Namespaces []string
	// Leases anchor the sandbox, one per namespace, home's first.
	Leases   []*coordinationv1.Lease
	Relay    *appsv1.Deployment
	Services []*corev1.Service
	Routes   []RouteTarget
	// GatewayRoutes are sbx's own Gateway API routes (HTTPRoutes and
	// GRPCRoutes: the Gateway API backend).
	GatewayRoutes []runtime.Object
	// Backends say how each mapped Service is routed, and why.
	Backends   []BackendChoice
	Workloads  []ResolvedWorkload
	Warnings   []string
	BaggageKey string
	// Regex is the baggage header regex of the routes.
	Regex string
	// RouteReport says, per mapped Service port and client namespace,
	// where keyed requests go.
	RouteReport []meshreport.PortReport

	routes istiovs.Sandbox
}

// Plan computes every object of the sandbox from the spec and the
// baseline. It is deterministic: the same inputs give the same objects.
// Owner references carry a placeholder UID until Apply knows the Leases.
// Its errors do not name the sandbox: the caller does ("sandbox jo
// failed: apply the cluster objects: …"), and both doing it made the
// message stutter.
func Plan(ctx context.Context, b Baseline, sb *spec.Sandbox, o Options) (*Objects, error) {
	o = o.withDefaults()
	if err := routingkey.Validate(o.RoutingKey); err != nil {
		return nil, err
	}
	if o.TokenVerifier != VerifierPlaceholder {
		if err := ValidateTokenVerifier(o.TokenVerifier); err != nil {
			return nil, err
		}
	}
	if o.RelayImage == "" {
		return nil, fmt.Errorf("no relay image; set relayImage in the sbx config or pass --relay-image (default %s:<version>)", DefaultRelayImageRepo)
	}
	if err := relayargs.ValidateMaxStreams(o.RelayMaxStreams); err != nil {
		return nil, err
	}
	if err := relayargs.ValidateDeny(o.RelayDeny); err != nil {
		return nil, err
	}
	if errs := validation.IsDNS1123Label(sb.Name); len(errs) > 0 {
		return nil, fmt.Errorf("the name is not a DNS label: %s", strings.Join(errs, "; "))
	}
	if len(sb.Spec.Local) == 0 {
		return nil, errors.New("no local workloads (spec.local is empty)")
	}
	for k, v := range sb.Spec.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("spec.labels: key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("spec.labels[%s]: value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	regex, err := BaggageRegex(o.BaggageKey, o.RoutingKey)
	if err != nil {
		return nil, err
	}
	workloads, err := Resolve(ctx, b, sb)
	if err != nil {
		return nil, err
	}
	nss := sb.Namespaces()
	home := nss[0]
	key := o.RoutingKey

	objs := &Objects{
		Sandbox: sb.Name, RoutingKey: key, Namespaces: nss,
		Workloads: workloads, BaggageKey: o.BaggageKey, Regex: regex,
	}
	owners := map[string]metav1.OwnerReference{}
	for _, ns := range nss {
		l := sandboxLease(sb.Name, ns, key, o.Holder, sb.Spec.Labels, sb.Spec.Description)
		if ns == home {
			l.Annotations = withAnnotation(l.Annotations, AnnotationNamespaces, strings.Join(nss, ","))
		}
		objs.Leases = append(objs.Leases, l)
		owners[ns] = leaseOwner(l.Name, types.UID(uidPlaceholder))
	}

	// The relay pod must never receive baseline traffic: refuse if a
	// baseline Service in its namespace would select it.
	relayLabels := labels.Set(relayPodLabels(sb.Name, key))
	svcs, err := b.Services(ctx, home)
	if err != nil {
		return nil, fmt.Errorf("list Services in namespace %s: %w", home, err)
	}
	for _, s := range svcs {
		if s.Labels[LabelManagedBy] != ManagedByValue && len(s.Spec.Selector) > 0 &&
			labels.SelectorFromSet(s.Spec.Selector).Matches(relayLabels) {
			return nil, fmt.Errorf("Service %s/%s (selector %s) would select the relay pod of sandbox %s and send baseline traffic to it; narrow its selector",
				s.Namespace, s.Name, formatLabels(s.Spec.Selector), sb.Name)
		}
	}

	objs.Relay = relayDeployment(sb.Name, home, key, o.TokenVerifier, o.RelayImage, o.RelayMaxStreams, o.RelayDeny, workloads)
	for _, w := range workloads {
		objs.Services = append(objs.Services, sandboxService(sb.Name, home, key, w))
	}

	rsb, warns, err := sandboxRoutes(key, home, regex, workloads)
	if err != nil {
		return nil, err
	}
	objs.routes = rsb
	routing, err := b.Routing(ctx, routingNamespaces(nss, rsb))
	if err != nil {
		return nil, err
	}
	// Offline every key is alive; Apply asks the cluster.
	plan, err := planRoutes(rsb, routing, o.Mesh, o.ClusterDomain, nil, owners, sb.Name)
	if err != nil {
		return nil, err
	}
	objs.Routes = plan.VS
	for _, g := range plan.Gateway {
		objs.GatewayRoutes = append(objs.GatewayRoutes, g.Obj)
	}
	objs.Backends = plan.Choices
	objs.RouteReport = plan.Report
	objs.Warnings = append(warns, plan.Warnings...)

	setOwner(objs, owners)
	return objs, nil
}

// setOwner makes each sandbox object an owned dependent of its namespace's
// Lease.
func setOwner(objs *Objects, owners map[string]metav1.OwnerReference) {
	set := func(m *metav1.ObjectMeta) { m.OwnerReferences = []metav1.OwnerReference{owners[m.Namespace]} }
	set(&objs.Relay.ObjectMeta)
	for _, s := range objs.Services {
		set(&s.ObjectMeta)
	}
}

func withAnnotation(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// addNamespaces merges two namespace lists, keeping order.
func addNamespaces(a []string, b ...string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// List returns every object in apply order: Leases, relay Deployment,
// Services, VirtualServices (whole, with the sandbox's routes).
func (o *Objects) List() []runtime.Object {
	var out []runtime.Object
	for _, l := range o.Leases {
		out = append(out, l)
	}
	out = append(out, o.Relay)
	for _, s := range o.Services {
		out = append(out, s)
	}
	for _, r := range o.Routes {
		if r.Object != nil {
			out = append(out, r.Object)
		}
	}
	out = append(out, o.GatewayRoutes...)
	return out
}

// WriteYAML writes the objects as a YAML stream, as `sbx render` prints
// them. They hold no secret: the relay's --token-sha256 is a hash (or
// VerifierPlaceholder).
func (o *Objects) WriteYAML(w io.Writer) error {
	for i, obj := range o.List() {
		// Through a map, to drop the empty status and creationTimestamp
		// the typed objects carry: they are the server's to fill.
		j, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("render %T: %w", obj, err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			return fmt.Errorf("render %T: %w", obj, err)
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok && md["creationTimestamp"] == nil {
			delete(md, "creationTimestamp")
		}
		b, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("render %T: %w", obj, err)
		}
		sep := "---\n"
		if i == 0 {
			sep = ""
		}
		if _, err := fmt.Fprintf(w, "%s%s", sep, b); err != nil {
			return err
		}
	}
	return nil
}
