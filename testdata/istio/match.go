package istio

import (
	"bytes"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoymatcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// This file is the Envoy side of the judge: virtual host selection and route
// matching as Envoy's router does it (source/common/router/config_impl.cc,
// source/common/http/header_utility.cc), for the features Istio emits. Any
// populated field outside the implemented set fails the test.

// matcher carries the test for strict failures and a regex cache.
type matcher struct {
	t       *testing.T
	regexes map[string]*regexp.Regexp
}

// request is the request as Envoy's router sees it.
type request struct {
	path    string            // :path, query included, fragment stripped
	headers map[string]string // lower-case name -> values joined with ","
}

// headersEnvoyTouches are set or rewritten by Envoy's HTTP connection manager
// before routing; the judge does not model that, so matching on them fails.
var headersEnvoyTouches = []string{
	"host", // Envoy only knows :authority
	"x-request-id", "x-forwarded-proto", "x-forwarded-for", "x-forwarded-client-cert",
}

func (m *matcher) request(r Request) request {
	path := r.Path
	// Istio's sidecars strip the fragment (http_reject_path_with_fragment=false).
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	if !strings.HasPrefix(path, "/") {
		m.t.Fatalf("istio judge: path %q must start with /", r.Path)
	}
	all := map[string][]string{}
	for _, k := range slices.Sorted(maps.Keys(r.Headers)) {
		lk := strings.ToLower(k)
		if lk == "host" || strings.HasPrefix(lk, ":") {
			m.t.Fatalf("istio judge: set Request.Host/Method/Path instead of header %q", k)
		}
		all[lk] = append(all[lk], r.Headers[k]...)
	}
	all[":authority"] = []string{r.Host}
	all[":method"] = []string{r.Method}
	all[":path"] = []string{path}
	all[":scheme"] = []string{"http"}
	req := request{path: path, headers: map[string]string{}}
	for k, vs := range all {
		// Envoy's getAllOfHeaderAsString joins repeated headers with ",".
		req.headers[k] = strings.Join(vs, ",")
	}
	return req
}

// only fails the test if msg has a populated field outside allowed.
func (m *matcher) only(what string, msg proto.Message, allowed ...string) {
	m.t.Helper()
	msg.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			m.t.Fatalf("istio judge: %s sets %s, which the judge does not implement: %v", what, fd.Name(), msg)
		}
		return true
	})
}

// portStart is Envoy's HeaderUtility::getPortStart: the last ':' unless it is
// inside an IPv6 literal.
func portStart(h string) int {
	i := strings.LastIndexByte(h, ':')
	if i < 0 {
		return -1
	}
	if v6 := strings.LastIndexByte(h, ']'); v6 >= 0 && v6 > i {
		return -1
	}
	return i
}

// virtualHost selects the virtual host as Envoy does: exact domain, then
// suffix wildcards ("*.foo", "*-foo") longest first, then prefix wildcards
// ("foo.*") longest first, then "*". A wildcard must match at least one
// character. Domains are case-insensitive.
func (m *matcher) virtualHost(rc *route.RouteConfiguration, authority string) *route.VirtualHost {
	m.t.Helper()
	if rc.GetVhds() != nil || rc.GetIgnorePathParametersInPathMatching() {
		m.t.Fatalf("istio judge: route config %s uses vhds/ignore_path_parameters_in_path_matching", rc.Name)
	}
	h := authority
	if rc.GetIgnorePortInHostMatching() {
		if i := portStart(h); i >= 0 {
			h = h[:i]
		}
	}
	h = strings.ToLower(h)

	exact := map[string]*route.VirtualHost{}
	suffix := map[string]*route.VirtualHost{}
	prefix := map[string]*route.VirtualHost{}
	var def *route.VirtualHost
	seen := map[string]bool{}
	for _, vh := range rc.VirtualHosts {
		if vh.GetMatcher() != nil || vh.GetRequireTls() != route.VirtualHost_NONE {
			m.t.Fatalf("istio judge: virtual host %s uses matcher/require_tls", vh.Name)
		}
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			if seen[d] {
				// Envoy rejects the whole route configuration.
				m.t.Fatalf("istio judge: domain %q appears twice in route config %s: Envoy would reject it", d, rc.Name)
			}
			seen[d] = true
			switch {
			case d == "*":
				def = vh
			case strings.HasPrefix(d, "*"):
				suffix[d[1:]] = vh
			case strings.HasSuffix(d, "*"):
				prefix[d[:len(d)-1]] = vh
			default:
				exact[d] = vh
			}
		}
	}
	if vh, ok := exact[h]; ok {
		return vh
	}
	if vh := longest(suffix, func(k string) bool { return len(h) > len(k) && strings.HasSuffix(h, k) }); vh != nil {
		return vh
	}
	if vh := longest(prefix, func(k string) bool { return len(h) > len(k) && strings.HasPrefix(h, k) }); vh != nil {
		return vh
	}
	return def
}

func longest(wild map[string]*route.VirtualHost, ok func(string) bool) *route.VirtualHost {
	best := ""
	var out *route.VirtualHost
	for k, vh := range wild {
		if ok(k) && (out == nil || len(k) > len(best)) {
			best, out = k, vh
		}
	}
	return out
}

// route reports whether the RouteMatch matches (Envoy's
// RouteEntryImplBase::matchRoute plus the path specifier).
func (m *matcher) route(rm *route.RouteMatch, req request) bool {
	m.t.Helper()
	if rm == nil {
		m.t.Fatalf("istio judge: route without match")
	}
	m.only("route match", rm, "prefix", "path", "safe_regex", "path_separated_prefix",
		"case_sensitive", "headers", "query_parameters")
	caseSensitive := rm.GetCaseSensitive() == nil || rm.GetCaseSensitive().GetValue()
	// Path matchers see the path without query and fragment.
	p, _, _ := strings.Cut(req.path, "?")
	switch ps := rm.GetPathSpecifier().(type) {
	case *route.RouteMatch_Prefix:
		if !hasPrefix(p, ps.Prefix, caseSensitive) {
			return false
		}
	case *route.RouteMatch_Path:
		if !(p == ps.Path || !caseSensitive && asciiLower(p) == asciiLower(ps.Path)) {
			return false
		}
	case *route.RouteMatch_SafeRegex:
		// case_sensitive has no effect on regex matching.
		if !m.regex(ps.SafeRegex).MatchString(p) {
			return false
		}
	case *route.RouteMatch_PathSeparatedPrefix:
		pre := ps.PathSeparatedPrefix
		if len(p) < len(pre) || !hasPrefix(p, pre, caseSensitive) || len(p) > len(pre) && p[len(pre)] != '/' {
			return false
		}
	default:
		m.t.Fatalf("istio judge: unsupported path specifier %T", ps)
	}
	for _, h := range rm.Headers {
		if !m.header(h, req) {
			return false
		}
	}
	if len(rm.QueryParameters) > 0 {
		q := parseQuery(req.path)
		for _, qp := range rm.QueryParameters {
			if !m.query(qp, q) {
				return false
			}
		}
	}
	return true
}

// header is Envoy's HeaderUtility::HeaderData::matchesHeaders.
func (m *matcher) header(h *route.HeaderMatcher, req request) bool {
	m.t.Helper()
	m.only("header matcher", h, "name", "exact_match", "safe_regex_match", "present_match",
		"prefix_match", "suffix_match", "contains_match", "string_match", "invert_match",
		"treat_missing_header_as_empty")
	name := strings.ToLower(h.Name)
	if slices.Contains(headersEnvoyTouches, name) || strings.HasPrefix(name, "x-envoy-") {
		m.t.Fatalf("istio judge: route matches on %q, which Envoy sets before routing; not modelled", h.Name)
	}
	value, present := req.headers[name]
	pm, isPresent := h.GetHeaderMatchSpecifier().(*route.HeaderMatcher_PresentMatch)
	if !present && !h.GetTreatMissingHeaderAsEmpty() {
		if h.GetInvertMatch() {
			return isPresent && pm.PresentMatch
		}
		return isPresent && !pm.PresentMatch
	}
	var ok bool
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_PresentMatch:
		ok = s.PresentMatch
	case *route.HeaderMatcher_ExactMatch:
		ok = value == s.ExactMatch
	case *route.HeaderMatcher_SafeRegexMatch:
		ok = m.regex(s.SafeRegexMatch).MatchString(value)
	case *route.HeaderMatcher_PrefixMatch:
		ok = strings.HasPrefix(value, s.PrefixMatch)
	case *route.HeaderMatcher_SuffixMatch:
		ok = strings.HasSuffix(value, s.SuffixMatch)
	case *route.HeaderMatcher_ContainsMatch:
		ok = strings.Contains(value, s.ContainsMatch)
	case *route.HeaderMatcher_StringMatch:
		ok = m.str(s.StringMatch, value)
	default:
		m.t.Fatalf("istio judge: header matcher %q without a match specifier", h.Name)
	}
	return ok != h.GetInvertMatch()
}

// query is Envoy's ConfigUtility::QueryParameterMatcher::matches: the first
// value of the parameter, present_match meaning "present" whatever its value.
func (m *matcher) query(qp *route.QueryParameterMatcher, q map[string][]string) bool {
	m.t.Helper()
	m.only("query parameter matcher", qp, "name", "string_match", "present_match")
	vs, ok := q[qp.Name]
	if !ok {
		return false
	}
	switch s := qp.GetQueryParameterMatchSpecifier().(type) {
	case *route.QueryParameterMatcher_PresentMatch:
		return true
	case *route.QueryParameterMatcher_StringMatch:
		return m.str(s.StringMatch, vs[0])
	default:
		m.t.Fatalf("istio judge: query parameter matcher %q without a match specifier", qp.Name)
		return false
	}
}

// parseQuery is Envoy's QueryParamsMulti::parseQueryString: no decoding,
// "a" alone is a parameter with value "".
func parseQuery(path string) map[string][]string {
	out := map[string][]string{}
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return out
	}
	for _, kv := range strings.Split(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		out[k] = append(out[k], v)
	}
	return out
}

// str is Envoy's StringMatcher.
func (m *matcher) str(s *envoymatcher.StringMatcher, value string) bool {
	m.t.Helper()
	m.only("string matcher", s, "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case")
	ic := s.GetIgnoreCase()
	v := value
	if ic {
		v = asciiLower(value)
	}
	fold := func(x string) string {
		if ic {
			return asciiLower(x)
		}
		return x
	}
	switch p := s.GetMatchPattern().(type) {
	case *envoymatcher.StringMatcher_Exact:
		return v == fold(p.Exact)
	case *envoymatcher.StringMatcher_Prefix:
		return strings.HasPrefix(v, fold(p.Prefix))
	case *envoymatcher.StringMatcher_Suffix:
		return strings.HasSuffix(v, fold(p.Suffix))
	case *envoymatcher.StringMatcher_Contains:
		return strings.Contains(v, fold(p.Contains))
	case *envoymatcher.StringMatcher_SafeRegex:
		if ic {
			m.t.Fatalf("istio judge: ignore_case with safe_regex is rejected by Envoy")
		}
		return m.regex(p.SafeRegex).MatchString(value)
	default:
		m.t.Fatalf("istio judge: unsupported string match %T", p)
		return false
	}
}

// regex compiles an Envoy RE2 regex for a full match (Envoy's safe_regex
// matches the whole value). Go's regexp implements RE2 syntax.
func (m *matcher) regex(r *envoymatcher.RegexMatcher) *regexp.Regexp {
	m.t.Helper()
	m.only("regex matcher", r, "regex", "google_re2")
	if re, ok := m.regexes[r.Regex]; ok {
		return re
	}
	re, err := regexp.Compile("^(?:" + r.Regex + ")$")
	if err != nil {
		m.t.Fatalf("istio judge: regex %q: %v", r.Regex, err)
	}
	if m.regexes == nil {
		m.regexes = map[string]*regexp.Regexp{}
	}
	m.regexes[r.Regex] = re
	return re
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return strings.HasPrefix(asciiLower(s), asciiLower(prefix))
}

// asciiLower lower-cases ASCII only, as absl::AsciiStrToLower does.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// describe builds the Outcome of a matched route, including Behaviour.
func describe(t *testing.T, rc *route.RouteConfiguration, vh *route.VirtualHost, rt *route.Route) Outcome {
	t.Helper()
	o := Outcome{Matched: true, VirtualHost: vh.Name, Route: rt.Name, VirtualService: vsName(rt)}
	sections := map[string]any{}

	r := proto.Clone(rt).(*route.Route)
	r.Name, r.Match, r.Metadata, r.Decorator, r.StatPrefix = "", nil, nil, nil, ""
	switch a := r.GetAction().(type) {
	case *route.Route_Route:
		o.Kind = "route"
		o.Cluster = clusterOf(t, a.Route)
		if wc := a.Route.GetWeightedClusters(); wc != nil {
			// Per-destination settings (e.g. header mutations) are behaviour.
			per := map[string]any{}
			for _, c := range wc.Clusters {
				extra := proto.Clone(c).(*route.WeightedCluster_ClusterWeight)
				extra.Name, extra.Weight = "", nil
				if v := canon(t, extra); v != nil {
					per[c.Name] = v
				}
			}
			if len(per) > 0 {
				sections["weighted_cluster_settings"] = per
			}
			rest := proto.Clone(wc).(*route.WeightedCluster)
			rest.Clusters = nil
			if v := canon(t, rest); v != nil {
				sections["weighted_clusters"] = v
			}
		}
		a.Route.ClusterSpecifier = nil
	case *route.Route_Redirect:
		o.Kind = "redirect"
	case *route.Route_DirectResponse:
		o.Kind = "direct_response"
	default:
		t.Fatalf("istio judge: unsupported route action %T", a)
	}
	sections["route"] = canon(t, r)

	v := proto.Clone(vh).(*route.VirtualHost)
	v.Name, v.Domains, v.Routes, v.VirtualClusters, v.Metadata = "", nil, nil, nil, nil
	sections["virtual_host"] = canon(t, v)

	c := proto.Clone(rc).(*route.RouteConfiguration)
	c.Name, c.VirtualHosts, c.ValidateClusters, c.Metadata = "", nil, nil, nil
	c.IgnorePortInHostMatching = false
	sections["route_configuration"] = canon(t, c)

	for k, s := range sections {
		if s == nil {
			delete(sections, k)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(sections); err != nil {
		t.Fatalf("istio judge: %v", err)
	}
	o.Behaviour = strings.TrimSpace(buf.String())
	return o
}

// canon renders msg as plain JSON data (so that encoding/json can print it
// with sorted keys; protojson's own output is deliberately unstable).
// Empty messages give nil.
func canon(t *testing.T, msg proto.Message) any {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil {
		t.Fatalf("istio judge: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("istio judge: %v", err)
	}
	if len(v) == 0 {
		return nil
	}
	return v
}
