package sim

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	networking "istio.io/api/networking/v1alpha3"
)

// virtualService is a VirtualService of any served API version (v1,
// v1beta1, v1alpha3 share one spec), as the mesh evaluates it.
type virtualService struct {
	Namespace string
	Name      string
	Created   time.Time
	Spec      *networking.VirtualService
}

func (vs *virtualService) key() string { return vs.Namespace + "/" + vs.Name }

// resolveHost expands a host written in an Istio resource of namespace ns to
// the name Istio compares: a short name (no dot) becomes
// name.ns.svc.<domain>; anything with a dot, "*" and IP literals stay as
// they are (istio's ResolveShortnameToFQDN).
func resolveHost(h, ns, domain string) string {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" || h == "*" || strings.Contains(h, ".") {
		return h
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h
	}
	return h + "." + ns + ".svc." + domain
}

// hostMatch scores how specifically pattern (a resolved VirtualService host)
// matches the service name fqdn: 0 no match, larger is more specific; an
// exact match beats every wildcard, a longer wildcard beats a shorter one.
func hostMatch(pattern, fqdn string) int {
	switch {
	case pattern == fqdn:
		return 1 << 20
	case pattern == "*":
		return 1
	case strings.HasPrefix(pattern, "*."):
		if strings.HasSuffix(fqdn, pattern[1:]) {
			return 1 + len(pattern)
		}
	}
	return 0
}

// appliesToMesh reports whether a VirtualService binds to sidecars: no
// gateways (the default "mesh") or an explicit "mesh".
func appliesToMesh(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, "mesh")
}

// visibleTo reports whether a VirtualService of namespace vsNS with the
// given exportTo is visible to clients in namespace clientNS.
func visibleTo(exportTo []string, vsNS, clientNS string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch {
		case e == "*", e == clientNS, e == "." && vsNS == clientNS:
			return true
		}
	}
	return false
}

// selectVirtualService picks the VirtualService a sidecar in clientNS
// applies to requests for fqdn: bound to the mesh, visible, with the most
// specific host; among equals the oldest, then by namespace/name. Sidecars
// do not merge VirtualServices for one host; only the chosen one applies.
func selectVirtualService(all []*virtualService, fqdn, clientNS, domain string) *virtualService {
	var best *virtualService
	bestScore := 0
	for _, vs := range all {
		if vs.Spec == nil || !appliesToMesh(vs.Spec.Gateways) || !visibleTo(vs.Spec.ExportTo, vs.Namespace, clientNS) {
			continue
		}
		score := 0
		for _, h := range vs.Spec.Hosts {
			score = max(score, hostMatch(resolveHost(h, vs.Namespace, domain), fqdn))
		}
		if score == 0 {
			continue
		}
		if best == nil || score > bestScore ||
			score == bestScore && (vs.Created.Before(best.Created) ||
				vs.Created.Equal(best.Created) && vs.key() < best.key()) {
			best, bestScore = vs, score
		}
	}
	return best
}

// requestInfo is what route matching looks at.
type requestInfo struct {
	req    *http.Request
	port   int32
	source *Source // nil when the client is not a simulated pod
}

// regexCache compiles StringMatch regexes once, anchored for full-match
// semantics as Envoy's safe_regex (RE2) applies them.
type regexCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp
	e  map[string]error
}

func (c *regexCache) get(expr string) (*regexp.Regexp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if re, ok := c.m[expr]; ok {
		return re, nil
	}
	if err, ok := c.e[expr]; ok {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		if c.e == nil {
			c.e = map[string]error{}
		}
		c.e[expr] = err
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*regexp.Regexp{}
	}
	c.m[expr] = re
	return re, nil
}

// stringMatch applies an Istio StringMatch to v. A StringMatch without a
// match type matches any value (presence is checked by the caller).
func (c *regexCache) stringMatch(sm *networking.StringMatch, v string, ignoreCase bool) bool {
	if sm == nil {
		return true
	}
	switch m := sm.MatchType.(type) {
	case *networking.StringMatch_Exact:
		if ignoreCase {
			return strings.EqualFold(v, m.Exact)
		}
		return v == m.Exact
	case *networking.StringMatch_Prefix:
		if ignoreCase {
			return len(v) >= len(m.Prefix) && strings.EqualFold(v[:len(m.Prefix)], m.Prefix)
		}
		return strings.HasPrefix(v, m.Prefix)
	case *networking.StringMatch_Regex:
		re, err := c.get(m.Regex)
		return err == nil && re.MatchString(v)
	}
	return true
}

// headerValue returns the header as Envoy matches it: all values of the
// name joined by ",", and whether it is present at all.
func headerValue(r *http.Request, name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":authority", "host":
		return r.Host, r.Host != ""
	case ":method":
		return r.Method, true
	case ":path":
		return r.URL.RequestURI(), true
	}
	vals := r.Header.Values(name)
	if len(vals) == 0 {
		return "", false
	}
	return strings.Join(vals, ","), true
}

// matches reports whether one HTTPMatchRequest matches the request; all its
// conditions must hold.
func (c *regexCache) matches(m *networking.HTTPMatchRequest, ri requestInfo) bool {
	if m == nil {
		return true
	}
	r := ri.req
	if len(m.Gateways) > 0 && !slices.Contains(m.Gateways, "mesh") {
		return false
	}
	if m.Port != 0 && int32(m.Port) != ri.port {
		return false
	}
	if m.Uri != nil && !c.stringMatch(m.Uri, r.URL.EscapedPath(), m.IgnoreUriCase) {
		return false
	}
	if m.Scheme != nil && !c.stringMatch(m.Scheme, "http", false) {
		return false
	}
	if m.Method != nil && !c.stringMatch(m.Method, r.Method, false) {
		return false
	}
	if m.Authority != nil && !c.stringMatch(m.Authority, r.Host, false) {
		return false
	}
	for name, sm := range m.Headers {
		v, ok := headerValue(r, name)
		if !ok || !c.stringMatch(sm, v, false) {
			return false
		}
	}
	for name, sm := range m.WithoutHeaders {
		v, ok := headerValue(r, name)
		if ok && c.stringMatch(sm, v, false) {
			return false
		}
	}
	if len(m.QueryParams) > 0 {
		q := r.URL.Query()
		for name, sm := range m.QueryParams {
			if !q.Has(name) || !c.stringMatch(sm, q.Get(name), false) {
				return false
			}
		}
	}
	if len(m.SourceLabels) > 0 {
		if ri.source == nil {
			return false
		}
		for k, v := range m.SourceLabels {
			if ri.source.Labels[k] != v {
				return false
			}
		}
	}
	if m.SourceNamespace != "" && (ri.source == nil || ri.source.Namespace != m.SourceNamespace) {
		return false
	}
	return true
}

// selectRoute returns the first HTTP route of vs whose match list matches
// (an empty list matches everything), with the match that did, or -1.
func (c *regexCache) selectRoute(vs *networking.VirtualService, ri requestInfo) (int, *networking.HTTPMatchRequest) {
	for i, route := range vs.Http {
		if route == nil {
			continue
		}
		if len(route.Match) == 0 {
			return i, nil
		}
		for _, m := range route.Match {
			if c.matches(m, ri) {
				return i, m
			}
		}
	}
	return -1, nil
}

// validateVirtualService rejects what Istio's validating webhook rejects
// and the simulated mesh relies on: invalid regexes, routes without an
// action, destinations without a host, negative weights.
func validateVirtualService(vs *networking.VirtualService) error {
	if len(vs.Hosts) == 0 {
		return fmt.Errorf("virtual service must have at least one host")
	}
	checkSM := func(path string, sm *networking.StringMatch) error {
		if sm == nil {
			return nil
		}
		if re, ok := sm.MatchType.(*networking.StringMatch_Regex); ok {
			if _, err := regexp.Compile(re.Regex); err != nil {
				return fmt.Errorf("%s: %q is not a valid RE2 regex: %v", path, re.Regex, err)
			}
		}
		return nil
	}
	for i, r := range vs.Http {
		if r == nil {
			return fmt.Errorf("http[%d]: empty route", i)
		}
		for j, m := range r.Match {
			p := fmt.Sprintf("http[%d].match[%d]", i, j)
			if m == nil {
				continue
			}
			for _, sm := range []*networking.StringMatch{m.Uri, m.Scheme, m.Method, m.Authority} {
				if err := checkSM(p, sm); err != nil {
					return err
				}
			}
			for _, group := range []map[string]*networking.StringMatch{m.Headers, m.WithoutHeaders, m.QueryParams} {
				for name, sm := range group {
					if err := checkSM(p+".headers."+name, sm); err != nil {
						return err
					}
				}
			}
		}
		actions := 0
		if len(r.Route) > 0 {
			actions++
		}
		if r.Redirect != nil {
			actions++
		}
		if r.DirectResponse != nil {
			actions++
		}
		if r.Delegate != nil {
			actions++
		}
		if actions != 1 {
			return fmt.Errorf("http[%d]: exactly one of route, redirect, directResponse or delegate is required", i)
		}
		for j, d := range r.Route {
			if d == nil || d.Destination == nil || d.Destination.Host == "" {
				return fmt.Errorf("http[%d].route[%d]: destination.host is required", i, j)
			}
			if d.Weight < 0 {
				return fmt.Errorf("http[%d].route[%d]: weight must not be negative", i, j)
			}
		}
	}
	return nil
}
