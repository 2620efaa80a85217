package istiovs

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sbx-dev/sbx/cluster/meshreport"
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
