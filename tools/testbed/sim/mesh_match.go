package sim

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/sbx-dev/sbx/cluster/istiovs"
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

// istioMesh is the sidecars' view of the VirtualServices, as Istio's
// control plane builds it (package istiovs, proven against Istio's own
// code in testdata/istio).
func (m *Mesh) istioMesh() *istiovs.Mesh {
	out := &istiovs.Mesh{Domain: m.net.Domain(), DefaultExportTo: m.defaultExportTo}
	for _, v := range m.virtualServices() {
		out.VirtualServices = append(out.VirtualServices, &istiovs.VirtualService{
			Namespace: v.Namespace, Name: v.Name, Created: v.Created, Spec: v.Spec})
	}
	if m.httpRoutes != nil {
		var items []*unstructured.Unstructured
		for _, inf := range []cache.SharedIndexInformer{m.httpRoutes, m.grpcRoutes} {
			for _, o := range inf.GetStore().List() {
				if u, ok := o.(*unstructured.Unstructured); ok {
					items = append(items, u)
				}
			}
		}
		out.VirtualServices = append(out.VirtualServices, gammaVirtualServices(items, m.net.Domain())...)
	}
	return out
}

// routeFor picks what a sidecar of client does with a request for fqdn on
// port: the first VirtualService of the client's chain that yields a route
// there (none: Istio's default route, link nil), then the first of its
// routes whose match holds. found is false when the VirtualService
// applies but no route matches (Envoy answers 404).
func (c *regexCache) routeFor(mesh *istiovs.Mesh, fqdn string, port int32, client istiovs.Client, ri requestInfo) (link *istiovs.Link, route *networking.HTTPRoute, match *networking.HTTPMatchRequest, found bool) {
	link, refs := istiovs.Effective(mesh.Chain(fqdn, client.Namespace), uint32(port), client)
	if link == nil {
		return nil, nil, nil, false
	}
	for _, ref := range refs {
		r := link.HTTP[ref.Index]
		var m *networking.HTTPMatchRequest
		if ref.Match >= 0 {
			m = r.Match[ref.Match]
		}
		if c.matches(m, ri) {
			return link, r, m, true
		}
	}
	return link, nil, nil, false
}

// Decision is what the simulated mesh does with one request: which
// VirtualService and route apply (as the conformance tests in
// testdata/istio compare with Envoy's routes that Istio generates).
type Decision struct {
	// VirtualService is "namespace/name", "" for Istio's default route.
	VirtualService string
	// Route is the chosen route's name ("" also for the default route).
	Route string
	// Matched is false when the VirtualService applies and no route of it
	// matches: the sidecar answers 404.
	Matched bool
	// Destination is where the chosen route sends every request: its one
	// destination, or the one with all the weight of a split (nil for a
	// split that sends to several, the default route, a redirect or a
	// direct response).
	Destination *networking.Destination
}

// Decide is the mesh's decision for a request from client to fqdn on port,
// with the same code serveHTTP uses.
func Decide(mesh *istiovs.Mesh, fqdn string, port int32, client istiovs.Client, r *http.Request) Decision {
	var c regexCache
	ri := requestInfo{req: r, port: port, source: &Source{Namespace: client.Namespace, Labels: client.Labels}}
	link, route, _, found := c.routeFor(mesh, fqdn, port, client, ri)
	if link == nil {
		return Decision{Matched: true}
	}
	d := Decision{VirtualService: link.VS.Key(), Matched: found}
	if found {
		d.Route = route.GetName()
		d.Destination = soleDestination(route.Route)
	}
	return d
}

// soleDestination is the destination that gets every request of ds, as
// pickDestination chooses: the only one, or the only one with weight.
func soleDestination(ds []*networking.HTTPRouteDestination) *networking.Destination {
	if len(ds) == 1 {
		return ds[0].GetDestination()
	}
	var sole *networking.HTTPRouteDestination
	for _, d := range ds {
		if d.Weight > 0 {
			if sole != nil {
				return nil
			}
			sole = d
		}
	}
	return sole.GetDestination()
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
	if len(m.Gateways) > 0 {
		// Listing gateways (with "mesh") makes Istio ignore the sources
		// (sourceMatchHTTP).
		return true
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

// validateVirtualService rejects what Istio's validating webhook rejects
// and the simulated mesh relies on: invalid regexes, routes without an
// action, destinations without a host, negative weights.
func validateVirtualService(vs *networking.VirtualService) error {
	if len(vs.Hosts) == 0 {
		// A delegate, which a root VirtualService's delegate route names
		// (Istio's ValidateVirtualService, pkg/config/validation).
		switch {
		case len(vs.Gateways) != 0:
			return fmt.Errorf("delegate virtual service must have no gateways specified")
		case len(vs.Tls) != 0:
			return fmt.Errorf("delegate virtual service must have no tls route specified")
		case len(vs.Tcp) != 0:
			return fmt.Errorf("delegate virtual service must have no tcp route specified")
		}
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
