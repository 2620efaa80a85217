package cluster

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	istioapi "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BaselineRouteName names the default route of a VirtualService sbx
// created: it sends everything without a sandbox key to the baseline.
const BaselineRouteName = "sbx-baseline"

// sandboxRouteRE matches the names of routes any sandbox owns.
var sandboxRouteRE = regexp.MustCompile(`^sbx-[0-9a-z]{13}-`)

// IsSandboxRoute reports whether a VirtualService route belongs to some
// sandbox (named "sbx-<key>-…").
func IsSandboxRoute(name string) bool { return sandboxRouteRE.MatchString(name) }

// RouteTarget is one VirtualService sbx writes routes into: a new one it
// creates, or an existing one (from CD or another sandbox) it adds its
// routes to.
type RouteTarget struct {
	Namespace string
	Name      string
	// Create is true when no usable VirtualService exists for the host(s)
	// and sbx creates one.
	Create bool
	// Routes are this sandbox's routes, in order; they go on top of http.
	Routes []*istioapi.HTTPRoute
	// Object is the whole VirtualService as sbx would write it: the new one,
	// or the existing one with the routes merged in.
	Object *istionet.VirtualService
}

// buildRoute builds the route that sends keyed requests for port of a
// baseline host to the sandbox Service.
func buildRoute(name, regex string, port int32, authority, destHost string) *istioapi.HTTPRoute {
	m := &istioapi.HTTPMatchRequest{
		Headers: map[string]*istioapi.StringMatch{
			"baggage": {MatchType: &istioapi.StringMatch_Regex{Regex: regex}},
		},
		Port: uint32(port),
	}
	if authority != "" {
		m.Authority = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: authority}}
	}
	return &istioapi.HTTPRoute{
		Name:  name,
		Match: []*istioapi.HTTPMatchRequest{m},
		Route: []*istioapi.HTTPRouteDestination{{
			Destination: &istioapi.Destination{Host: destHost, Port: &istioapi.PortSelector{Number: uint32(port)}},
		}},
		Retries: SandboxRouteRetries(),
	}
}

// SandboxRouteRetries is the retry policy of a keyed route. Istio's default
// retries 503 and gRPC "unavailable" twice, but those are exactly what the
// relay answers after holding a request for --grace while the laptop is
// offline: the default would make the caller wait three grace periods for
// the same answer. Connection failures (the relay pod restarting) are still
// retried.
func SandboxRouteRetries() *istioapi.HTTPRetry {
	return &istioapi.HTTPRetry{Attempts: 2, RetryOn: "connect-failure,refused-stream"}
}

// authorityRegex matches the Host/:authority values a client may use for a
// Service: short, namespaced or fully qualified name, with or without the
// port. It is only needed when one VirtualService serves several hosts.
func authorityRegex(svc, ns string, port int32) string {
	names := []string{svc, svc + "." + ns, svc + "." + ns + ".svc", ServiceFQDN(svc, ns)}
	for i, n := range names {
		names[i] = regexp.QuoteMeta(n)
	}
	return fmt.Sprintf(`(?:%s)(?::%d)?`, strings.Join(names, "|"), port)
}

// mergeRoutes puts desired (the routes of key) on top of http. It reports
// changed=false when they are already there, unchanged and ahead of every
// route that is not a sandbox's, so a second apply writes nothing and two
// sandboxes do not keep swapping places.
func mergeRoutes(http []*istioapi.HTTPRoute, key string, desired []*istioapi.HTTPRoute) ([]*istioapi.HTTPRoute, bool) {
	prefix := RouteNamePrefix(key)
	var ours, others []*istioapi.HTTPRoute
	inPlace := true
	seenForeign := false
	for _, r := range http {
		if strings.HasPrefix(r.GetName(), prefix) {
			ours = append(ours, r)
			if seenForeign {
				inPlace = false
			}
			continue
		}
		if !IsSandboxRoute(r.GetName()) {
			seenForeign = true
		}
		others = append(others, r)
	}
	if inPlace && len(ours) == len(desired) {
		same := true
		for i := range ours {
			if !proto.Equal(ours[i], desired[i]) {
				same = false
				break
			}
		}
		if same {
			return http, false
		}
	}
	out := make([]*istioapi.HTTPRoute, 0, len(desired)+len(others))
	for _, r := range desired {
		out = append(out, proto.Clone(r).(*istioapi.HTTPRoute))
	}
	return append(out, others...), true
}

// removeRoutes drops every route of the given keys and keeps the rest, in
// order and untouched.
func removeRoutes(http []*istioapi.HTTPRoute, keys ...string) ([]*istioapi.HTTPRoute, bool) {
	var out []*istioapi.HTTPRoute
	changed := false
	for _, r := range http {
		drop := false
		for _, k := range keys {
			if strings.HasPrefix(r.GetName(), RouteNamePrefix(k)) {
				drop = true
			}
		}
		if drop {
			changed = true
			continue
		}
		out = append(out, r)
	}
	return out, changed
}

// hasSandboxRoutes reports whether any sandbox still has routes in http.
func hasSandboxRoutes(http []*istioapi.HTTPRoute) bool {
	for _, r := range http {
		if IsSandboxRoute(r.GetName()) {
			return true
		}
	}
	return false
}

// planRoutes works out, for every baseline Service the sandbox's mappings go
// through, which VirtualService gets which routes.
func planRoutes(key, home, regex string, workloads []ResolvedWorkload,
	vssByNS map[string][]*istionet.VirtualService, ownerNS map[string]metav1.OwnerReference) ([]RouteTarget, []string, error) {

	type svcKey struct{ ns, name string }
	type svcRoutes struct {
		svc    *corev1.Service
		routes []struct {
			name string
			port int32
			dest string
		}
	}
	bySvc := map[svcKey]*svcRoutes{}
	var order []svcKey
	claimed := map[string]string{} // ns/svc/port → workload
	var warnings []string
	for _, w := range workloads {
		dest := ServiceFQDN(ServiceName(w.Local.Name, key), home)
		for _, p := range w.Ports {
			if !p.Routable {
				warnings = append(warnings, fmt.Sprintf("port %d of %s %s/%s is opaque TCP (Service port %q): the mesh cannot route it by the baggage header; only direct calls to %s reach the sandbox",
					p.Port, w.Local.From.Kind, w.Local.From.Namespace, w.Local.From.Name, p.Name, dest))
				continue
			}
			for _, s := range p.Services {
				c := fmt.Sprintf("%s/%s/%d", s.Namespace, s.Name, p.Port)
				if other, ok := claimed[c]; ok && other != w.Local.Name {
					return nil, nil, fmt.Errorf("Service %s/%s port %d selects the pods of both local workloads %q and %q; sbx cannot send its keyed requests to two places: keep one of them in the sandbox",
						s.Namespace, s.Name, p.Port, other, w.Local.Name)
				}
				claimed[c] = w.Local.Name
				k := svcKey{s.Namespace, s.Name}
				sr, ok := bySvc[k]
				if !ok {
					sr = &svcRoutes{svc: s}
					bySvc[k] = sr
					order = append(order, k)
				}
				sr.routes = append(sr.routes, struct {
					name string
					port int32
					dest string
				}{routeName(key, w.Local.Name, p.Port), p.Port, dest})
			}
		}
	}
	sort.Slice(order, func(a, b int) bool {
		if order[a].ns != order[b].ns {
			return order[a].ns < order[b].ns
		}
		return order[a].name < order[b].name
	})

	targets := map[string]*RouteTarget{}
	var targetOrder []string
	for _, k := range order {
		sr := bySvc[k]
		vs, warn, err := findVirtualService(vssByNS[k.ns], k.name, k.ns)
		if err != nil {
			return nil, nil, err
		}
		warnings = append(warnings, warn...)
		id := ""
		multiHost := vs != nil && len(vs.Spec.GetHosts()) > 1
		var t *RouteTarget
		if vs == nil {
			name := OwnedVirtualServiceName(k.name)
			id = k.ns + "/" + name
			t = &RouteTarget{Namespace: k.ns, Name: name, Create: true, Object: newOwnedVirtualService(name, k.ns, k.name)}
		} else {
			id = k.ns + "/" + vs.Name
			t = &RouteTarget{Namespace: k.ns, Name: vs.Name, Object: vs.DeepCopy()}
		}
		if existing, ok := targets[id]; ok {
			t = existing
		} else {
			targets[id] = t
			targetOrder = append(targetOrder, id)
		}
		for _, r := range sr.routes {
			auth := ""
			if multiHost {
				auth = authorityRegex(k.name, k.ns, r.port)
			}
			t.Routes = append(t.Routes, buildRoute(r.name, regex, r.port, auth, r.dest))
		}
	}
	out := make([]RouteTarget, 0, len(targetOrder))
	for _, id := range targetOrder {
		t := targets[id]
		t.Object.Spec.Http, _ = mergeRoutes(t.Object.Spec.Http, key, t.Routes)
		if t.Object.Labels[LabelManagedBy] == ManagedByValue {
			// Shared among sandboxes: an owner, never the controller.
			o := ownerNS[t.Namespace]
			o.Controller = nil
			addOwner(&t.Object.ObjectMeta, o)
		}
		out = append(out, *t)
	}
	return out, warnings, nil
}

// findVirtualService picks the VirtualService that routes mesh traffic for
// a Service. It refuses one marked sbx.dev/ignore, reports ones bound only
// to gateways as unusable, and, like Istio, takes the oldest when several
// claim the host.
func findVirtualService(vss []*istionet.VirtualService, svc, ns string) (*istionet.VirtualService, []string, error) {
	var mesh []*istionet.VirtualService
	var warnings []string
	for _, vs := range vss {
		match := false
		for _, h := range vs.Spec.GetHosts() {
			if hostMatches(h, vs.Namespace, svc, ns) {
				match = true
			}
		}
		if !match {
			continue
		}
		if vs.Annotations[AnnotationIgnore] == "true" || vs.Labels[AnnotationIgnore] == "true" {
			return nil, nil, fmt.Errorf("VirtualService %s/%s routes Service %s and is marked %s: \"true\", so sbx must not add routes to it; remove the mark (kubectl annotate virtualservice -n %s %s %s-) or leave %s out of the sandbox",
				vs.Namespace, vs.Name, svc, AnnotationIgnore, vs.Namespace, vs.Name, AnnotationIgnore, svc)
		}
		if !boundToMesh(vs) {
			warnings = append(warnings, fmt.Sprintf("VirtualService %s/%s is unusable for sandbox routing: it is bound only to gateways %v (no \"mesh\"), so it does not route calls between services; sbx routes mesh traffic with its own VirtualService, and requests entering through those gateways reach the baseline of %s",
				vs.Namespace, vs.Name, vs.Spec.GetGateways(), svc))
			continue
		}
		if len(vs.Spec.GetHttp()) == 0 && (len(vs.Spec.GetTcp()) > 0 || len(vs.Spec.GetTls()) > 0) {
			return nil, nil, fmt.Errorf("VirtualService %s/%s routes Service %s with tcp/tls routes only; header-based sandbox routes cannot be added to it", vs.Namespace, vs.Name, svc)
		}
		mesh = append(mesh, vs)
	}
	if len(mesh) == 0 {
		return nil, warnings, nil
	}
	sort.SliceStable(mesh, func(a, b int) bool {
		ta, tb := mesh[a].CreationTimestamp, mesh[b].CreationTimestamp
		if !ta.Equal(&tb) {
			return ta.Before(&tb)
		}
		return mesh[a].Name < mesh[b].Name
	})
	if len(mesh) > 1 {
		warnings = append(warnings, fmt.Sprintf("several VirtualServices route Service %s/%s; Istio uses the oldest, %s, so sbx adds its routes there", ns, svc, mesh[0].Name))
	}
	return mesh[0], warnings, nil
}

// newOwnedVirtualService is the VirtualService sbx creates for a baseline
// Service that has none: only the default route to the baseline, sandbox
// routes go on top. Sandboxes share it; each adds itself as an owner, so the
// garbage collector removes it when the last one is gone.
func newOwnedVirtualService(name, ns, svc string) *istionet.VirtualService {
	host := ServiceFQDN(svc, ns)
	vs := &istionet.VirtualService{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels:      map[string]string{LabelManagedBy: ManagedByValue, LabelComponent: "routes"},
			Annotations: map[string]string{"sbx.dev/baseline-service": svc},
		},
	}
	vs.Spec.Hosts = []string{host}
	vs.Spec.Http = []*istioapi.HTTPRoute{{
		Name:  BaselineRouteName,
		Route: []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: host}}},
	}}
	return vs
}

// addOwner adds ref to meta's owners unless an owner of that kind and name
// is there (replacing its UID, which changes if the Lease was recreated).
func addOwner(meta *metav1.ObjectMeta, ref metav1.OwnerReference) bool {
	for i, o := range meta.OwnerReferences {
		if o.Kind == ref.Kind && o.Name == ref.Name && o.APIVersion == ref.APIVersion {
			if o.UID == ref.UID {
				return false
			}
			meta.OwnerReferences[i].UID = ref.UID
			return true
		}
	}
	meta.OwnerReferences = append(meta.OwnerReferences, ref)
	return true
}

// removeOwner drops the owner with ref's kind and name.
func removeOwner(meta *metav1.ObjectMeta, kind, name string) bool {
	for i, o := range meta.OwnerReferences {
		if o.Kind == kind && o.Name == name {
			meta.OwnerReferences = append(meta.OwnerReferences[:i:i], meta.OwnerReferences[i+1:]...)
			return true
		}
	}
	return false
}
