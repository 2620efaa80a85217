// Which VirtualServices and routes a sandbox's plan touches: those that
// send to a mapped Service (directly or through delegates), those that
// share its hosts, and the routes of dead sandboxes to remove.

package istiovs

import (
	"maps"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// destinationOf returns the destination of a resolved route that sends to
// fqdn: the heaviest one (the first among equals), or nil. Hosts compare
// exactly, as Envoy's cluster names do; of several destinations, one of
// weight 0 takes nothing (applyHTTPRouteDestination skips it).
func (p *planner) destinationOf(r *networking.HTTPRoute, fqdn string) *networking.HTTPRouteDestination {
	var best *networking.HTTPRouteDestination
	for _, d := range r.Route {
		if len(r.Route) > 1 && d.Weight == 0 {
			continue
		}
		if d.GetDestination().GetHost() == fqdn && (best == nil || d.Weight > best.Weight) {
			best = d
		}
	}
	return best
}

// addOtherRoutes marks, besides the chains, every VirtualService that
// sends requests to a mapped Service: gateways (requests entering the
// mesh there never pass the Service's own VirtualService) and the
// VirtualServices of other hosts.
func (p *planner) addOtherRoutes(patch map[string]*VirtualService) {
	for _, v := range p.m.VirtualServices {
		if patch[v.Key()] != nil || v.Spec == nil || len(v.Spec.GetHosts()) == 0 {
			continue
		}
		if slices.Contains(p.m.exportTo(v), "~") {
			continue
		}
		if !BoundToGateway(v.Spec) && !p.registryHosts(v) {
			continue
		}
		mv := p.m.Merge(v)
		for _, r := range mv.HTTP {
			if p.routesToMapped(r) {
				patch[v.Key()] = v
				break
			}
		}
	}
}

// addDelegates adds the delegates of every VirtualService to change: a
// delegate's routes get their twins in the delegate itself, right before
// each, so that they keep their place among its routes when Istio merges
// them under the root (MergeHTTPRoutes merges the twin's baggage match
// with the root's match like any other).
func (p *planner) addDelegates(patch map[string]*VirtualService) {
	for _, v := range slices.Collect(maps.Values(patch)) {
		for _, o := range p.m.Merge(v).Origin {
			if d := o.Delegate; d != nil && patch[d.Key()] == nil && p.delegatesToMapped(d) {
				patch[d.Key()] = d
			}
		}
	}
}

func (p *planner) delegatesToMapped(d *VirtualService) bool {
	return slices.ContainsFunc(p.m.Merge(d).HTTP, p.routesToMapped)
}

// roots returns the VirtualServices whose routes delegate to d.
func (p *planner) roots(d *VirtualService) []*VirtualService {
	var out []*VirtualService
	for _, v := range p.m.VirtualServices {
		if len(v.Spec.GetHosts()) == 0 {
			continue
		}
		for _, o := range p.m.Merge(v).Origin {
			if o.Delegate == d && !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// registryHosts reports whether a mesh VirtualService names hosts that can
// be Services of the registry (FQDNs under the cluster domain, or
// wildcards). A dotted short name such as "route.hotrod" names none.
func (p *planner) registryHosts(v *VirtualService) bool {
	for _, h := range p.m.Merge(v).Hosts {
		if strings.HasPrefix(h, "*") || strings.HasSuffix(h, ".svc."+p.m.domain()) {
			return true
		}
	}
	return false
}

func (p *planner) routesToMapped(r *networking.HTTPRoute) bool {
	for _, s := range p.sb.Services {
		if p.destinationOf(r, p.m.FQDN(s.Name, s.Namespace)) != nil {
			return true
		}
	}
	return false
}

// dead reports whether a sandbox route must go: an earlier key of this
// sandbox, or a key whose sandbox is gone.
func (p *planner) dead(r *networking.HTTPRoute, vsNS string) bool {
	key := RouteKey(r.GetName())
	if key == "" || key == p.sb.Key {
		return false
	}
	if slices.Contains(p.sb.StaleKeys, key) {
		return true
	}
	if p.o.Live == nil {
		return false
	}
	return !p.o.Live(key, routeHome(r, vsNS))
}

// routeHome is the namespace of the sandbox Service a sandbox route sends
// to: "<workload>-sbx-<key>[.<ns>[.svc…]]".
func routeHome(r *networking.HTTPRoute, vsNS string) string {
	for _, d := range r.Route {
		parts := strings.Split(d.GetDestination().GetHost(), ".")
		if len(parts) >= 2 {
			return parts[1]
		}
		return vsNS
	}
	return vsNS
}

func (p *planner) hasRoutesToRemove(v *VirtualService) bool {
	for _, r := range v.Spec.GetHttp() {
		if RouteKey(r.GetName()) == p.sb.Key || p.dead(r, v.Namespace) {
			return true
		}
	}
	return false
}

func (p *planner) countOurs(http []*networking.HTTPRoute) int {
	n := 0
	for _, r := range http {
		if RouteKey(r.GetName()) == p.sb.Key {
			n++
		}
	}
	return n
}
