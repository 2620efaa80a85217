package istiovs

import (
	"maps"
	"slices"

	networking "istio.io/api/networking/v1alpha3"
)

// RouteRef is one route Envoy gets from a VirtualService for one port and
// client: the merged route and the match it was built from (-1: the route
// has no match list and matches everything).
type RouteRef struct {
	Index int // into Merged.HTTP
	Match int
}

// Routes returns the routes a sidecar client gets from mv on port
// (route.BuildHTTPRoutesForVirtualService with TranslateRoute's filters):
// one per applicable match, in order, stopping after the first catch-all.
// Empty means the VirtualService yields nothing there, and Istio moves on
// to the next VirtualService of the chain, or the default route.
func (mv *Merged) Routes(port uint32, c Client) []RouteRef {
	var out []RouteRef
	for i, r := range mv.HTTP {
		if len(r.Match) == 0 {
			return append(out, RouteRef{Index: i, Match: -1})
		}
		for j, m := range r.Match {
			if !MatchApplies(m, port, c) {
				continue
			}
			out = append(out, RouteRef{Index: i, Match: j})
			if CatchAll(m) {
				return out
			}
		}
	}
	return out
}

// MatchApplies reports whether Istio builds an Envoy route from a match
// for a sidecar client on port: the port must agree, and the source
// (gateways containing "mesh", else sourceLabels ⊆ the client's labels and
// sourceNamespace) must hold (TranslateRoute, sourceMatchHTTP).
func MatchApplies(m *networking.HTTPMatchRequest, port uint32, c Client) bool {
	if m == nil {
		return true
	}
	if m.Port != 0 && port != 0 && m.Port != port {
		return false
	}
	if len(m.Gateways) > 0 {
		return slices.Contains(m.Gateways, MeshGateway)
	}
	for k, v := range m.SourceLabels {
		if lv, ok := c.Labels[k]; !ok || lv != v {
			return false
		}
	}
	return m.SourceNamespace == "" || m.SourceNamespace == c.Namespace
}

// Unconditional reports whether a match applies to every sidecar of
// namespace ns on port, whatever its labels ("" is a namespace no
// sourceNamespace names).
func Unconditional(m *networking.HTTPMatchRequest, port uint32, ns string) bool {
	if m == nil {
		return true
	}
	if m.Port != 0 && m.Port != port {
		return false
	}
	if len(m.Gateways) > 0 {
		return slices.Contains(m.Gateways, MeshGateway)
	}
	return len(m.SourceLabels) == 0 && (m.SourceNamespace == "" || ns != "" && m.SourceNamespace == ns)
}

// YieldsForAll reports whether mv yields at least one route on port to
// every sidecar of namespace ns, so that nothing after it in a chain is
// ever used there.
func (mv *Merged) YieldsForAll(port uint32, ns string) bool {
	for _, r := range mv.HTTP {
		if len(r.Match) == 0 {
			return true
		}
		for _, m := range r.Match {
			if Unconditional(m, port, ns) {
				return true
			}
		}
	}
	return false
}

// YieldsForSome reports whether mv yields a route on port to at least one
// possible sidecar of namespace ns.
func (mv *Merged) YieldsForSome(port uint32, ns string) bool {
	for _, r := range mv.HTTP {
		if len(r.Match) == 0 {
			return true
		}
		for _, m := range r.Match {
			if m.Port != 0 && m.Port != port {
				continue
			}
			if len(m.Gateways) > 0 && !slices.Contains(m.Gateways, MeshGateway) {
				continue
			}
			if len(m.Gateways) == 0 && m.SourceNamespace != "" && m.SourceNamespace != ns {
				continue
			}
			return true
		}
	}
	return false
}

// CatchAll reports whether the Envoy route built from a match matches
// every request, which ends Istio's route list (route.IsCatchAllRoute):
// no uri or prefix "/" or regex ".*", and no header, method, authority,
// scheme or query parameter condition. port, sources and gateways are not
// part of the Envoy match.
func CatchAll(m *networking.HTTPMatchRequest) bool {
	if m == nil {
		return true
	}
	if len(m.Headers) > 0 || len(m.WithoutHeaders) > 0 || len(m.QueryParams) > 0 ||
		m.Method != nil || m.Authority != nil || m.Scheme != nil {
		return false
	}
	switch u := m.GetUri().GetMatchType().(type) {
	case nil:
		return true
	case *networking.StringMatch_Prefix:
		return u.Prefix == "/"
	case *networking.StringMatch_Regex:
		return u.Regex == ".*"
	}
	return false
}

// Effective returns the VirtualService of chain that applies on port to
// client c and the routes it yields; nil when the default route applies.
func Effective(chain []Link, port uint32, c Client) (*Link, []RouteRef) {
	for i := range chain {
		if refs := chain[i].Routes(port, c); len(refs) > 0 {
			return &chain[i], refs
		}
	}
	return nil, nil
}

// labelsKey renders labels for messages, sorted.
func labelsKey(l map[string]string) string {
	keys := slices.Sorted(maps.Keys(l))
	s := "{"
	for i, k := range keys {
		if i > 0 {
			s += ","
		}
		s += k + "=" + l[k]
	}
	return s + "}"
}
