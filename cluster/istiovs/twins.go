// Keyed twins: the copy of each route that sends to a sandboxed Service,
// with the baggage match added and the sandbox as destination, placed
// right before the route it mirrors in every VirtualService Istio may use.

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

// rewrite returns v's http routes with this sandbox's twins in place
// (each right before the route it mirrors, among other sandboxes'), dead
// routes gone, and whether that differs from what v has. Other sandboxes'
// twins may sit before or after ours in a block: their order does not
// matter (none matches another's key), so a block that already holds
// exactly our twins is left alone and sandboxes do not keep swapping.
func (p *planner) rewrite(v *VirtualService) ([]*networking.HTTPRoute, int, bool) {
	twins := p.twins(v)
	raw := v.Spec.GetHttp()
	var out []*networking.HTTPRoute
	changed := false
	ours := 0
	var block []*networking.HTTPRoute
	flush := func(want []*networking.HTTPRoute) {
		var have []*networking.HTTPRoute
		for _, r := range block {
			switch {
			case RouteKey(r.GetName()) == p.sb.Key:
				have = append(have, r)
			case p.dead(r, v.Namespace):
				changed = true
			default:
				out = append(out, r)
			}
		}
		if !routesEqual(have, want) {
			changed = true
		}
		out = append(out, want...)
		ours += len(want)
		block = block[:0]
	}
	for i, r := range raw {
		if r == nil {
			continue
		}
		if IsSandboxRoute(r.GetName()) {
			block = append(block, r)
			continue
		}
		flush(twins[i])
		out = append(out, r)
	}
	flush(nil)
	return out, ours, changed
}

func routesEqual(a, b []*networking.HTTPRoute) bool {
	return slices.EqualFunc(a, b, func(x, y *networking.HTTPRoute) bool { return proto.Equal(x, y) })
}

// twins returns this sandbox's keyed twins of v's routes, by the index of
// the raw route they go before.
func (p *planner) twins(v *VirtualService) map[int][]*networking.HTTPRoute {
	mv := p.m.Merge(v)
	raw := v.Spec.GetHttp()
	out := map[int][]*networking.HTTPRoute{}
	used := map[string]int{}
	for i, r := range mv.HTTP {
		o := mv.Origin[i]
		if o.Delegate != nil {
			continue // its twins go into the delegate (addDelegates)
		}
		if IsSandboxRoute(raw[o.Root].GetName()) || IsFallbackRoute(raw[o.Root].GetName()) {
			continue
		}
		src := raw[o.Root] // the same VirtualService: relative hosts stay right
		for _, s := range p.sb.Services {
			fqdn := p.m.FQDN(s.Name, s.Namespace)
			d := p.destinationOf(r, fqdn)
			if d == nil {
				continue
			}
			for _, t := range p.twinsOf(v, src, r, d, s) {
				base := t.Name
				used[base]++
				if n := used[base]; n > 1 {
					t.Name = base + "-" + strconv.Itoa(n)
				}
				out[o.Root] = append(out[o.Root], t)
			}
		}
	}
	return out
}

// twinsOf builds the keyed twins of one route (src as written, r
// resolved) whose destination d is Service s: one per sandbox port it
// can reach.
func (p *planner) twinsOf(v *VirtualService, src, r *networking.HTTPRoute, d *networking.HTTPRouteDestination, s Service) []*networking.HTTPRoute {
	matches := r.Match
	if len(matches) == 0 {
		matches = []*networking.HTTPMatchRequest{nil}
	}
	where := fmt.Sprintf("route %q of VirtualService %s", r.GetName(), v.Key())
	if r.GetName() == "" {
		where = "a route of VirtualService " + v.Key()
	}
	// Without a port, a sidecar sends to the port the request came in on
	// (its per-port view of a Service holds only that port); a gateway
	// sends to a one-port Service's only port (GetDestinationCluster).
	fixed := int32(d.GetDestination().GetPort().GetNumber())
	if fixed == 0 && len(s.Ports) == 1 && !p.reachesSidecars(v) {
		fixed = s.Ports[0]
	}
	var out []*networking.HTTPRoute
	build := func(port int32, ms []*networking.HTTPMatchRequest, setPort bool) {
		mp, ok := s.Mapped[port]
		if !ok {
			return
		}
		var keyed []*networking.HTTPMatchRequest
		for _, m := range ms {
			km, why := p.keyedMatch(m, port, setPort)
			if why == "" && CatchAll(m) && p.sharesGatewayHost(v) {
				var gwWhy string
				km, gwWhy = p.meshOnly(km, v)
				if km != nil {
					p.warnf("keyed requests that %s takes at a gateway reach the baseline (from sidecars they reach the sandbox): %s", where, gwWhy)
				} else {
					why = gwWhy
				}
			}
			if why != "" {
				p.warnf("keyed requests that %s sends to %s/%s reach the baseline: %s", where, s.Namespace, s.Name, why)
				continue
			}
			keyed = append(keyed, km)
		}
		if len(keyed) == 0 {
			return
		}
		t := proto.Clone(src).(*networking.HTTPRoute)
		t.Name = fmt.Sprintf("sbx-%s-%s-%d", p.sb.Key, mp.Workload, port)
		t.Match = keyed
		t.Route = []*networking.HTTPRouteDestination{{
			Destination: &networking.Destination{Host: p.sandboxHost(mp.SandboxService, v.Namespace), Port: &networking.PortSelector{Number: uint32(port)}},
			Headers:     proto.Clone(d).(*networking.HTTPRouteDestination).GetHeaders(),
		}}
		t.Delegate, t.Redirect, t.DirectResponse = nil, nil, nil
		if t.Retries == nil && !p.rootsSetRetries(v) {
			t.Retries = proto.Clone(p.sb.Retries).(*networking.HTTPRetry)
		}
		out = append(out, t)
	}
	if fixed != 0 {
		if _, ok := s.Mapped[fixed]; !ok {
			p.warnf("keyed requests that %s sends to port %d of %s/%s reach the baseline: the sandbox does not map that port", where, fixed, s.Namespace, s.Name)
			return nil
		}
		build(fixed, matches, false)
		return out
	}
	// The destination port is the port the request came in on: one twin
	// per mapped port, each limited to it.
	for _, port := range slices.Sorted(maps.Keys(s.Mapped)) {
		var ms []*networking.HTTPMatchRequest
		for _, m := range matches {
			if m == nil || m.Port == 0 || m.Port == uint32(port) {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			build(port, ms, true)
		}
	}
	return out
}

// sharesGatewayHost reports whether another VirtualService may be merged
// with v's routes at a gateway: bound to a gateway (any: one gateway pod
// serves every Gateway that selects it, merged per port) with a host that
// can be one of v's. A gateway merges such VirtualServices into one route
// list and moves every catch-all route behind the others
// (route.SortVHostRoutes): the twin of a catch-all, no catch-all itself,
// would stay ahead of the other VirtualServices' routes and take keyed
// requests they should get. For a delegate, its roots' gateways and
// hosts count.
func (p *planner) sharesGatewayHost(v *VirtualService) bool {
	owners := []*VirtualService{v}
	if len(v.Spec.GetHosts()) == 0 {
		owners = p.roots(v)
	}
	for _, own := range owners {
		if !BoundToGateway(own.Spec) {
			continue
		}
		for _, o := range p.m.VirtualServices {
			if o == own || o.Spec == nil || !BoundToGateway(o.Spec) {
				continue
			}
			for _, a := range p.m.Merge(own).Hosts {
				for _, b := range p.m.Merge(o).Hosts {
					if hostsIntersect(strings.ToLower(a), strings.ToLower(b)) {
						return true
					}
				}
			}
		}
	}
	return false
}

// reachesSidecars reports whether v's routes apply to sidecars: it is
// bound to the mesh, or it is a delegate of a root that is.
func (p *planner) reachesSidecars(v *VirtualService) bool {
	if len(v.Spec.GetHosts()) > 0 {
		return BoundToMesh(v.Spec)
	}
	return slices.ContainsFunc(p.roots(v), func(r *VirtualService) bool { return BoundToMesh(r.Spec) })
}

// rootsSetRetries reports whether a delegate's routes inherit retries
// from a root route that delegates to it (Istio fills a delegate route's
// unset settings from the root's).
func (p *planner) rootsSetRetries(v *VirtualService) bool {
	if len(v.Spec.GetHosts()) > 0 {
		return false
	}
	for _, r := range p.roots(v) {
		for _, h := range r.Spec.GetHttp() {
			d := h.GetDelegate()
			if d != nil && d.Name == v.Name && cmpOr(d.Namespace, r.Namespace) == v.Namespace && h.Retries != nil {
				return true
			}
		}
	}
	return false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// hostsIntersect reports whether two gateway hosts can name the same
// request host.
func hostsIntersect(a, b string) bool {
	switch {
	case a == b || a == "*" || b == "*":
		return true
	case strings.HasPrefix(a, "*"):
		return strings.HasSuffix(b, a[1:])
	case strings.HasPrefix(b, "*"):
		return strings.HasSuffix(a, b[1:])
	}
	return false
}

// meshOnly keeps a catch-all's twin off gateways that share the host with
// other VirtualServices (see sharesGatewayHost): it applies to sidecars
// only, or not at all when v reaches no sidecar. Match-level gateways make
// Istio ignore sourceLabels and sourceNamespace, so a twin of a
// source-bound route cannot be limited this way.
func (p *planner) meshOnly(km *networking.HTTPMatchRequest, v *VirtualService) (*networking.HTTPMatchRequest, string) {
	why := "a gateway it is bound to merges it with other VirtualServices of the host and moves catch-all routes last, so a keyed twin would take requests the other VirtualServices' routes should get"
	applies := km.Gateways
	if len(applies) == 0 && p.reachesSidecars(v) {
		applies = []string{MeshGateway}
	}
	if !slices.Contains(applies, MeshGateway) || len(km.SourceLabels) > 0 || km.SourceNamespace != "" {
		return nil, why
	}
	km.Gateways = []string{MeshGateway}
	return km, why
}

// keyedMatch is m with the baggage condition (and the port, when the
// twin's destination port depends on it), or why it cannot be.
func (p *planner) keyedMatch(m *networking.HTTPMatchRequest, port int32, setPort bool) (*networking.HTTPMatchRequest, string) {
	var km *networking.HTTPMatchRequest
	if m == nil {
		km = &networking.HTTPMatchRequest{}
	} else {
		km = proto.Clone(m).(*networking.HTTPMatchRequest)
	}
	for h := range km.Headers {
		if strings.EqualFold(h, BaggageHeader) {
			return nil, "it already matches the baggage header, and a route can match a header only once"
		}
	}
	// A withoutHeaders condition on baggage stays: the twin then takes
	// keyed requests that lack the other member, as the original does.
	if km.Headers == nil {
		km.Headers = map[string]*networking.StringMatch{}
	}
	km.Headers[BaggageHeader] = &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: p.sb.Regex}}
	if setPort {
		km.Port = uint32(port)
	}
	return km, ""
}

// sandboxHost names a sandbox Service from a VirtualService in ns: the
// short name in its own namespace (right on any cluster domain), the FQDN
// elsewhere.
func (p *planner) sandboxHost(svc, ns string) string {
	if ns == p.sb.Home {
		return svc
	}
	return p.m.FQDN(svc, p.sb.Home)
}
