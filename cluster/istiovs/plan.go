package istiovs

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sbx-dev/sbx/cluster/meshreport"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// BaggageHeader is the header keyed routes match.
const BaggageHeader = "baggage"

// FallbackRoutePrefix names the routes of sbx's own VirtualService that
// send requests without a key where Istio's default route would have:
// "sbx-baseline-<port>".
const FallbackRoutePrefix = "sbx-baseline-"

// sandboxRouteRE matches the names of routes any sandbox owns:
// "sbx-<13-character key>-…".
var sandboxRouteRE = regexp.MustCompile(`^sbx-([0-9a-z]{13})-`)

// RouteKey returns the routing key of a sandbox route's name, or "".
func RouteKey(name string) string {
	if m := sandboxRouteRE.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

// IsSandboxRoute reports whether a route belongs to some sandbox.
func IsSandboxRoute(name string) bool { return RouteKey(name) != "" }

// IsFallbackRoute reports whether a route is one of sbx's own fallbacks.
func IsFallbackRoute(name string) bool { return strings.HasPrefix(name, FallbackRoutePrefix) }

// Sandbox is what the planner needs to know of one sandbox.
type Sandbox struct {
	// Key is the routing key; every route of the sandbox is named
	// "sbx-<Key>-…".
	Key string
	// Regex is the anchored regex a keyed request's baggage header matches.
	Regex string
	// Home is the namespace of the sandbox Services.
	Home string
	// Retries is the retry policy of keyed routes whose original route
	// sets none (Istio's default retries what the relay answers while the
	// laptop is offline).
	Retries *networking.HTTPRetry
	// Services are the baseline Services whose keyed requests go to the
	// sandbox.
	Services []Service
	// StaleKeys are earlier keys of this sandbox whose routes must go.
	StaleKeys []string
}

// Service is one baseline Service of a sandbox.
type Service struct {
	Namespace string
	Name      string
	// Ports are all ports of the Service (a destination without a port
	// means the only one, or the port the request came in on).
	Ports []int32
	// Mapped are the ports whose requests the sandbox takes, each with
	// its workload (for route names) and the sandbox Service (in Home)
	// that serves it on the same port number.
	Mapped map[int32]Mapping
	// Ignore names a VirtualService marked sbx.dev/ignore that routes the
	// Service, if any: the planner refuses to change it.
}

// Mapping is where a mapped port's keyed requests go.
type Mapping struct {
	Workload       string
	SandboxService string
}

// Options tune a plan.
type Options struct {
	// Live reports whether a routing key still belongs to a sandbox (its
	// Lease exists in home); routes of dead keys are removed. nil: every
	// key is alive.
	Live func(key, home string) bool
	// OwnName names sbx's own VirtualService for a Service.
	OwnName func(service string) string
	// IsOwn reports whether a VirtualService is sbx's own (by labels).
	IsOwn func(v *VirtualService) bool
	// Ignored reports whether sbx must not touch a VirtualService.
	Ignored func(v *VirtualService) bool
	// ExportToUnknown says why the mesh's defaultVirtualServiceExportTo
	// is not known ("" when it is): plans then assume Istio's default, "*",
	// and must be safe if it is ".".
	ExportToUnknown string
}

// Edit is one change to a VirtualService.
type Edit struct {
	Namespace string
	Name      string
	// VS is the live object (nil when it is created).
	VS *VirtualService
	// Own marks sbx's own VirtualService for Service.
	Own     bool
	Service string
	// Create, Delete and Recreate (delete, then create, so that it is the
	// newest) are for sbx's own VirtualService; otherwise HTTP replaces
	// the object's http routes.
	Create, Delete, Recreate bool
	HTTP                     []*networking.HTTPRoute
	// Ours are this sandbox's routes in HTTP.
	Ours int
}

// Leftovers are the edits of a plan made for no sandbox: what removing
// dead routes changes.
func (p *Plan) Leftovers() []meshreport.Leftover {
	var out []meshreport.Leftover
	for _, e := range p.Edits {
		what := "dead routes"
		if e.Own && e.Delete {
			what = "ownerless VirtualService"
		}
		out = append(out, meshreport.Leftover{Namespace: e.Namespace, Name: e.Name, What: what})
	}
	slices.SortFunc(out, func(a, b meshreport.Leftover) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// Plan is what changes for one sandbox.
type Plan struct {
	Edits    []Edit
	Warnings []string
	Report   []meshreport.PortReport
	// Unchanged lists VirtualServices that carry this sandbox's routes
	// already as they should be.
	Unchanged []string
}

type planner struct {
	m    *Mesh
	alt  *Mesh // the mesh with the other default exportTo, when unknown
	own  []*VirtualService
	sb   Sandbox
	o    Options
	warn []string
	seen map[string]bool
}

func (p *planner) warnf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if !p.seen[s] {
		p.seen[s] = true
		p.warn = append(p.warn, s)
	}
}

// svcState is the analysis of one Service.
type svcState struct {
	svc      Service
	fqdn     string
	own      *VirtualService
	ownPorts map[int32]bool // ports whose keyed requests need sbx's own VirtualService
	ownOK    bool
	ownWhy   string // why the own VirtualService cannot be used
	reports  []meshreport.PortReport
}

// MakePlan works out every VirtualService change that sends the sandbox's
// keyed requests to it while every request without the key goes exactly
// where, and as, it went before, for every client:
//
//   - Every VirtualService route that sends requests to a mapped Service,
//     in a VirtualService Istio may use for it (its chain in any client
//     namespace, gateways, other hosts), gets a keyed twin right before
//     it: the same matches plus the baggage header, the same settings, the
//     sandbox as destination. Twins never match a request without the key
//     and are never catch-all routes, so which VirtualService and which
//     route a request without the key gets does not change.
//   - Where no VirtualService yields a route for a mapped port to every
//     client (none exists, it is not exported there, it only routes other
//     ports or other sources), sbx's own VirtualService, public and newer
//     than every other for the host, carries a keyed route and a fallback
//     that does what Istio's default route does. Istio only reaches it
//     where nothing else yields a route.
func MakePlan(m *Mesh, sb Sandbox, o Options) (*Plan, error) {
	p := &planner{m: m, sb: sb, o: o, seen: map[string]bool{}}
	if o.OwnName == nil || o.IsOwn == nil {
		return nil, fmt.Errorf("istiovs: Options.OwnName and IsOwn are required")
	}
	if o.Ignored == nil {
		p.o.Ignored = func(*VirtualService) bool { return false }
	}
	// sbx's own VirtualServices are analysed apart: the chains are what
	// CD's objects make.
	cd := &Mesh{Domain: m.Domain, DefaultExportTo: m.DefaultExportTo}
	for _, v := range m.VirtualServices {
		if o.IsOwn(v) {
			p.own = append(p.own, v)
		} else {
			cd.VirtualServices = append(cd.VirtualServices, v)
		}
	}
	p.m = cd
	if o.ExportToUnknown != "" {
		alt := *cd
		alt.merged = nil
		if len(cd.DefaultExportTo) == 0 || slices.Contains(cd.DefaultExportTo, "*") {
			alt.DefaultExportTo = []string{"."}
		} else {
			alt.DefaultExportTo = nil
		}
		p.alt = &alt
	}

	patch := map[string]*VirtualService{}
	var states []*svcState
	for _, s := range sb.Services {
		st, err := p.analyse(s, patch)
		if err != nil {
			return nil, err
		}
		states = append(states, st)
	}
	p.addOtherRoutes(patch)
	p.addDelegates(patch)

	plan := &Plan{}
	// Edits of CD's (and others') VirtualServices, in a stable order.
	keys := slices.Sorted(maps.Keys(patch))
	all := m.VirtualServices
	for _, v := range all {
		if o.IsOwn(v) {
			continue
		}
		if patch[v.Key()] == nil && !p.hasRoutesToRemove(v) {
			continue
		}
		if patch[v.Key()] == nil {
			keys = append(keys, v.Key())
			patch[v.Key()] = v
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	for _, k := range keys {
		v := patch[k]
		if p.o.Ignored(v) {
			p.warnf("VirtualService %s is marked sbx.dev/ignore: keyed requests it routes reach the baseline", v.Key())
			continue
		}
		http, ours, changed := p.rewrite(v)
		if !changed {
			if ours > 0 {
				plan.Unchanged = append(plan.Unchanged, k)
			}
			continue
		}
		plan.Edits = append(plan.Edits, Edit{Namespace: v.Namespace, Name: v.Name, VS: v, HTTP: http, Ours: ours})
	}
	for _, st := range states {
		if e, ok := p.ownEdit(st); ok {
			plan.Edits = append(plan.Edits, e)
		} else if st.own != nil && p.countOurs(st.own.Spec.GetHttp()) > 0 {
			plan.Unchanged = append(plan.Unchanged, st.own.Key())
		}
		plan.Report = append(plan.Report, st.reports...)
	}
	// Own VirtualServices of Services this sandbox no longer maps may
	// still carry its routes (a dropped workload) or dead ones.
	for _, v := range all {
		if !o.IsOwn(v) || slices.ContainsFunc(states, func(st *svcState) bool { return st.own == v }) {
			continue
		}
		if e, ok := p.ownCleanup(v); ok {
			plan.Edits = append(plan.Edits, e)
		}
	}
	plan.Warnings = p.warn
	return plan, nil
}

// meshes returns the models a decision must hold in.
func (p *planner) meshes() []*Mesh {
	if p.alt != nil {
		return []*Mesh{p.m, p.alt}
	}
	return []*Mesh{p.m}
}

// analyse finds, for every client namespace and mapped port of a Service,
// the VirtualServices that may apply, marks them for keyed twins, and
// decides whether sbx's own VirtualService is needed and allowed.
func (p *planner) analyse(s Service, patch map[string]*VirtualService) (*svcState, error) {
	st := &svcState{svc: s, fqdn: p.m.FQDN(s.Name, s.Namespace), ownPorts: map[int32]bool{}, ownOK: true}
	ownName := p.o.OwnName(s.Name)
	for _, v := range p.m.VirtualServices {
		if v.Namespace == s.Namespace && v.Name == ownName {
			return nil, fmt.Errorf("VirtualService %s/%s exists and is not sbx's; sbx needs that name for its own routes of Service %s/%s: rename or delete it",
				v.Namespace, v.Name, s.Namespace, s.Name)
		}
	}
	for _, v := range p.own {
		if v.Namespace == s.Namespace && v.Name == ownName {
			st.own = v
		}
	}
	ports := slices.Sorted(maps.Keys(s.Mapped))
	// First every model and view: where the own VirtualService is needed,
	// and whether it may exist at all. When the mesh's default exportTo is
	// unknown, the plan assumes Istio's default ("*") for what it adds and
	// checks the other reading (".") only for what could harm: a wildcard
	// VirtualService the own one would shadow.
	altNeeds := map[int32][]string{}
	for mi, m := range p.meshes() {
		for _, ns := range m.Views(st.fqdn, s.Namespace, p.sb.Home) {
			chain := m.Chain(st.fqdn, ns)
			for _, l := range chain {
				if l.Wildcard != "" && st.ownOK {
					st.ownOK = false
					st.ownWhy = fmt.Sprintf("VirtualService %s (host %s) routes %s for clients in %s, and a VirtualService for the exact host would take %s away from it for all traffic",
						l.VS.Key(), l.Wildcard, s.Name, clientsName(ns), s.Name)
				}
			}
			for _, port := range ports {
				live, all := liveLinks(chain, port, ns)
				for _, l := range live {
					if !l.YieldsForSome(uint32(port), ns) {
						continue
					}
					if p.o.Ignored(l.VS) {
						return nil, fmt.Errorf("VirtualService %s routes Service %s/%s and is marked sbx.dev/ignore: \"true\", so sbx must not add routes to it; remove the mark (kubectl annotate virtualservice -n %s %s sbx.dev/ignore-) or leave %s out of the sandbox",
							l.VS.Key(), s.Namespace, s.Name, l.VS.Namespace, l.VS.Name, s.Name)
					}
					patch[l.VS.Key()] = l.VS
				}
				switch {
				case all:
				case mi == 0:
					st.ownPorts[port] = true
				default:
					altNeeds[port] = append(altNeeds[port], clientsName(ns))
				}
			}
		}
	}
	for _, port := range slices.Sorted(maps.Keys(altNeeds)) {
		if st.ownPorts[port] {
			continue
		}
		p.warnf("%s: if its defaultVirtualServiceExportTo is \".\", the VirtualServices of %s/%s without exportTo are private to their namespace and keyed requests on port %d from %s reach the baseline (set exportTo on those VirtualServices to be sure)",
			p.o.ExportToUnknown, s.Namespace, s.Name, port, strings.Join(slices.Compact(altNeeds[port]), ", "))
	}
	if !st.ownOK && len(st.ownPorts) > 0 {
		p.warnf("keyed requests on port(s) %s of Service %s/%s from clients no VirtualService gives a route there reach the baseline: %s; give that VirtualService a route for those ports and clients (e.g. a catch-all to %s), then connect again",
			portList(st.ownPorts), s.Namespace, s.Name, st.ownWhy, s.Name)
	}
	for _, port := range ports {
		r := meshreport.PortReport{Namespace: s.Namespace, Service: s.Name, Port: port, Workload: s.Mapped[port].Workload}
		for _, ns := range p.m.Views(st.fqdn, s.Namespace, p.sb.Home) {
			r.Views = append(r.Views, p.viewReport(st, p.m.Chain(st.fqdn, ns), ns, port))
		}
		st.reports = append(st.reports, r)
	}
	return st, nil
}

// liveLinks returns the links of a chain Istio may use on port for some
// client of ns: up to and including the first that yields a route to
// every client; all tells whether there is one.
func liveLinks(chain []Link, port int32, ns string) (live []Link, all bool) {
	for i, l := range chain {
		if l.YieldsForAll(uint32(port), ns) {
			return chain[:i+1], true
		}
	}
	return chain, false
}

func clientsName(ns string) string {
	if ns == "" {
		return "other namespaces"
	}
	return "namespace " + ns
}

func portList(ports map[int32]bool) string {
	var s []string
	for _, p := range slices.Sorted(maps.Keys(ports)) {
		s = append(s, strconv.Itoa(int(p)))
	}
	return strings.Join(s, ", ")
}

// viewReport describes what clients of ns get on port.
func (p *planner) viewReport(st *svcState, chain []Link, ns string, port int32) meshreport.ViewReport {
	vr := meshreport.ViewReport{Clients: ns, Applies: "default route"}
	for _, l := range chain {
		d := l.VS.Key() + " (" + l.Bucket
		if l.Wildcard != "" {
			d += ", wildcard " + l.Wildcard
		}
		vr.Chain = append(vr.Chain, d+")")
	}
	live, all := liveLinks(chain, port, ns)
	toSvc := false
	for _, l := range live {
		for _, r := range l.HTTP {
			if p.destinationOf(r, st.fqdn) != nil {
				toSvc = true
			}
		}
	}
	if all {
		last := live[len(live)-1]
		vr.Applies = last.VS.Key()
		vr.Keyed = meshreport.KeyedSandbox
		if !toSvc {
			vr.Keyed = meshreport.KeyedBaseline
			vr.Reason = fmt.Sprintf("%s sends these requests to other Services, not to %s", last.VS.Key(), st.svc.Name)
		}
		return vr
	}
	if st.ownOK {
		own := st.svc.Namespace + "/" + p.o.OwnName(st.svc.Name)
		vr.Chain = append(vr.Chain, own+" (public, sbx)")
		if len(live) == 0 {
			vr.Applies = own
		}
		vr.Keyed = meshreport.KeyedSandbox
		return vr
	}
	vr.Keyed = meshreport.KeyedBaseline
	if toSvc {
		vr.Keyed = meshreport.KeyedPartial
		vr.Reason = fmt.Sprintf("clients %s gives no route on port %d reach the baseline: ", live[0].VS.Key(), port)
	}
	vr.Reason += st.ownWhy
	return vr
}

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
