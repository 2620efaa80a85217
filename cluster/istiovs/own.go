// sbx's own VirtualService: a keyed route and a fallback equal to Istio's
// default route, for clients no VirtualService gives a route.

package istiovs

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// ownEdit plans sbx's own VirtualService of a Service.
func (p *planner) ownEdit(st *svcState) (Edit, bool) {
	s := st.svc
	name := p.o.OwnName(s.Name)
	var existing []*networking.HTTPRoute
	if st.own != nil {
		existing = st.own.Spec.GetHttp()
	}
	var want []*networking.HTTPRoute
	if st.ownOK {
		for _, port := range slices.Sorted(maps.Keys(st.ownPorts)) {
			if foreignCovers(existing, uint32(port)) {
				continue // its twin carries the keyed requests
			}
			mp := s.Mapped[port]
			want = append(want, &networking.HTTPRoute{
				Name: fmt.Sprintf("sbx-%s-%s-%d", p.sb.Key, mp.Workload, port),
				Match: []*networking.HTTPMatchRequest{{
					Port:    uint32(port),
					Headers: map[string]*networking.StringMatch{BaggageHeader: {MatchType: &networking.StringMatch_Regex{Regex: p.sb.Regex}}},
				}},
				Route:   []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: p.sandboxHost(mp.SandboxService, s.Namespace), Port: &networking.PortSelector{Number: uint32(port)}}}},
				Retries: proto.Clone(p.sb.Retries).(*networking.HTTPRetry),
			})
		}
	}
	http := p.ownRoutes(st.own, existing, want, s.Name)
	e := Edit{Namespace: s.Namespace, Name: name, VS: st.own, Own: true, Service: s.Name, HTTP: http, Ours: len(want)}
	keyed := slices.ContainsFunc(http, func(r *networking.HTTPRoute) bool { return IsSandboxRoute(r.GetName()) })
	foreign := slices.ContainsFunc(http, isForeign)
	switch {
	case st.own == nil && !keyed:
		return Edit{}, false
	case st.own == nil:
		e.Create = true
		return e, true
	case !st.ownOK || !keyed && !foreign:
		// Next to a wildcard it must go, whatever it holds: its existence
		// takes the Service from the wildcard.
		e.Delete = true
		e.HTTP = nil
		return e, true
	}
	if newer := p.newerThanOwn(st); newer != "" {
		e.Recreate = true
		p.warnf("VirtualService %s for %s/%s is newer than sbx's %s, which Istio would then put first; sbx recreates its own so that it comes last", newer, s.Namespace, s.Name, name)
		return e, true
	}
	if routesEqual(existing, http) && ownShapeOK(st.own, s.Name) {
		return Edit{}, false
	}
	return e, true
}

// ownCleanup removes this sandbox's and dead routes from an own
// VirtualService of a Service the sandbox no longer maps.
func (p *planner) ownCleanup(v *VirtualService) (Edit, bool) {
	existing := v.Spec.GetHttp()
	svc := v.Annotations["sbx.dev/baseline-service"]
	if hosts := v.Spec.GetHosts(); svc == "" && len(hosts) == 1 && !strings.ContainsAny(hosts[0], ".*") {
		svc = hosts[0] // its own host names the Service
	}
	if svc == "" {
		p.warnf("VirtualService %s is labelled as sbx's own but names no Service (annotation sbx.dev/baseline-service, or one short host): sbx leaves it alone; delete it if no sandbox uses it", v.Key())
		return Edit{}, false
	}
	http := p.ownRoutes(v, existing, nil, svc)
	if routesEqual(existing, http) {
		return Edit{}, false
	}
	e := Edit{Namespace: v.Namespace, Name: v.Name, VS: v, Own: true, Service: svc, HTTP: http}
	if !slices.ContainsFunc(http, func(r *networking.HTTPRoute) bool { return IsSandboxRoute(r.GetName()) || isForeign(r) }) {
		e.Delete, e.HTTP = true, nil
	}
	return e, true
}

// isForeign reports whether a route in sbx's own VirtualService is
// someone else's (neither a sandbox's nor a fallback).
func isForeign(r *networking.HTTPRoute) bool {
	return !IsSandboxRoute(r.GetName()) && !IsFallbackRoute(r.GetName())
}

// ownRoutes is the http list of an own VirtualService: routes someone
// else added first, where they were, each with its keyed twins before it
// as in any VirtualService (kept, with a warning); then the sandboxes'
// keyed routes, other live sandboxes' where they are, ours where ours
// were (else after theirs); then one fallback per port those use, which
// sends requests without a key where Istio's default route would.
func (p *planner) ownRoutes(own *VirtualService, existing, want []*networking.HTTPRoute, svc string) []*networking.HTTPRoute {
	ns := ""
	if own != nil {
		ns = own.Namespace
	}
	var body []*networking.HTTPRoute
	lastForeign := -1
	for _, r := range existing {
		if IsFallbackRoute(r.GetName()) {
			continue
		}
		if isForeign(r) {
			lastForeign = len(body)
		}
		body = append(body, r)
	}
	var out []*networking.HTTPRoute
	tail := body
	if own != nil && lastForeign >= 0 {
		head := *own
		head.Spec = proto.Clone(own.Spec).(*networking.VirtualService)
		head.Spec.Http = body[:lastForeign+1]
		out, _, _ = p.rewrite(&head)
		tail = body[lastForeign+1:]
		p.warnf("sbx's own VirtualService %s holds route(s) sbx did not write; it keeps them, with keyed twins, ahead of the sandboxes' keyed routes", own.Key())
	}
	var keyed []*networking.HTTPRoute
	at := -1
	for _, r := range tail {
		switch {
		case RouteKey(r.GetName()) == p.sb.Key:
			if at < 0 {
				at = len(keyed)
			}
		case IsSandboxRoute(r.GetName()) && !p.dead(r, ns):
			keyed = append(keyed, r)
		}
	}
	if at < 0 {
		at = len(keyed)
	}
	keyed = slices.Insert(keyed, at, want...)
	out = append(out, keyed...)
	ports := map[uint32]bool{}
	for _, r := range keyed {
		for _, m := range r.Match {
			ports[m.GetPort()] = true
		}
	}
	for port := range ports {
		if foreignCovers(existing, port) {
			delete(ports, port)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		out = append(out, &networking.HTTPRoute{
			Name:  FallbackRoutePrefix + strconv.Itoa(int(port)),
			Match: []*networking.HTTPMatchRequest{{Port: port}},
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: svc, Port: &networking.PortSelector{Number: port}}}},
		})
	}
	return out
}

// foreignCovers reports whether a route someone else added to an own
// VirtualService answers every request on port, so that nothing after it
// is ever used there.
func foreignCovers(http []*networking.HTTPRoute, port uint32) bool {
	for _, r := range http {
		if !isForeign(r) {
			continue
		}
		if len(r.Match) == 0 {
			return true
		}
		for _, m := range r.Match {
			if CatchAll(m) && Unconditional(m, port, "") {
				return true
			}
		}
	}
	return false
}

// ownShapeOK reports whether an own VirtualService still has the hosts
// and visibility sbx gives it.
func ownShapeOK(v *VirtualService, svc string) bool {
	return slices.Equal(v.Spec.GetHosts(), []string{svc}) && slices.Equal(v.Spec.GetExportTo(), []string{"*"}) &&
		len(v.Spec.GetGateways()) == 0
}

// newerThanOwn names a public exact-host VirtualService of the Service
// that Istio orders after sbx's own, which would then shadow it.
func (p *planner) newerThanOwn(st *svcState) string {
	for _, v := range p.m.VirtualServices {
		if !p.m.Public(v) || !BoundToMesh(v.Spec) {
			continue
		}
		exact := false
		for _, h := range p.m.Merge(v).Hosts {
			if h == st.fqdn {
				exact = true
			}
		}
		if exact && Older(st.own, v) < 0 {
			return v.Key()
		}
	}
	return ""
}

// OwnVirtualService is the spec of sbx's own VirtualService for a Service.
func OwnVirtualService(svc string, http []*networking.HTTPRoute) *networking.VirtualService {
	return &networking.VirtualService{Hosts: []string{svc}, ExportTo: []string{"*"}, Http: http}
}
