package istiovs

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// DefaultDomain is the cluster DNS domain Istio appends to short hosts when
// nothing else is configured.
const DefaultDomain = "cluster.local"

// MeshGateway is the gateway name that binds a VirtualService to sidecars.
const MeshGateway = "mesh"

// VirtualService is one VirtualService as stored in the cluster (its spec
// unresolved: short hosts are relative to its namespace).
type VirtualService struct {
	Namespace       string
	Name            string
	Created         time.Time
	ResourceVersion string
	Labels          map[string]string
	Annotations     map[string]string
	Spec            *networking.VirtualService
	// Gateway marks a VirtualService Istio derived from Gateway API routes
	// (HTTPRoutes with a Service as parent, merged per namespace and
	// port): within each visibility bucket, those of the client's own
	// namespace come first (pilot SelectVirtualServices, "gwExact").
	Gateway bool
}

// Key is "namespace/name".
func (v *VirtualService) Key() string { return v.Namespace + "/" + v.Name }

// Mesh is what Istio's control plane knows that decides which routes a
// sidecar gets: every VirtualService the caller could read, the cluster
// domain and the mesh-wide default exportTo.
type Mesh struct {
	// Domain is the cluster DNS domain (DefaultDomain when empty).
	Domain string
	// DefaultExportTo is meshConfig.defaultVirtualServiceExportTo; nil
	// means Istio's default, ["*"].
	DefaultExportTo []string
	// VirtualServices are all VirtualServices, any namespace.
	VirtualServices []*VirtualService

	merged map[string]*Merged
}

// Client is a sidecar proxy: its namespace and pod labels. A Client with an
// empty Namespace stands for any namespace no VirtualService names.
type Client struct {
	Namespace string
	Labels    map[string]string
}

func (m *Mesh) domain() string {
	if m.Domain == "" {
		return DefaultDomain
	}
	return m.Domain
}

// FQDN is the host name Istio's registry gives a Kubernetes Service.
func (m *Mesh) FQDN(service, namespace string) string {
	return service + "." + namespace + ".svc." + m.domain()
}

// ResolveHost expands a host written in a VirtualService of namespace ns as
// Istio does (model.ResolveShortnameToFQDN): only a name without any dot
// is relative (name.ns.svc.domain); "*", IP addresses and every dotted
// name stay literal, so "route.hotrod" is not the Service route of
// namespace hotrod. The case is kept: Istio lowercases a VirtualService's
// hosts to find Services by them, but not when it looks for an exact host
// that takes a Service from a wildcard, nor in destinations (a cluster
// named with upper case exists for no Service).
func (m *Mesh) ResolveHost(h, ns string) string {
	if h == "" || h == "*" || strings.Contains(h, ".") {
		return h
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h
	}
	return h + "." + ns + ".svc." + m.domain()
}

// visibility of a VirtualService for one client namespace: the bucket
// Istio's index puts it in (virtualServiceIndex), lower first.
const (
	bucketPrivate = iota // exported to its own namespace, client in it
	bucketExported
	bucketPublic
	bucketHidden
)

// exportTo returns the VirtualService's effective exportTo: its own, or
// the mesh default; "." is its namespace.
func (m *Mesh) exportTo(v *VirtualService) []string {
	e := v.Spec.GetExportTo()
	if len(e) == 0 {
		e = m.DefaultExportTo
	}
	if len(e) == 0 {
		return []string{"*"}
	}
	out := make([]string, 0, len(e))
	for _, x := range e {
		if x == "." {
			x = v.Namespace
		}
		out = append(out, x)
	}
	return out
}

// bucket tells where clients of namespace clientNS find the VirtualService
// (push_context.go initVirtualServices, SelectVirtualServices): public
// ("*") wins over everything else it lists, "~" hides it, its own
// namespace makes it private there, another namespace exports it there.
// clientNS "" is a namespace the VirtualService does not name.
func (m *Mesh) bucket(v *VirtualService, clientNS string) int {
	e := m.exportTo(v)
	if slices.Contains(e, "*") {
		return bucketPublic
	}
	if slices.Contains(e, "~") || clientNS == "" {
		return bucketHidden
	}
	if slices.Contains(e, clientNS) {
		if clientNS == v.Namespace {
			return bucketPrivate
		}
		return bucketExported
	}
	return bucketHidden
}

// Public reports whether every namespace sees the VirtualService.
func (m *Mesh) Public(v *VirtualService) bool { return m.bucket(v, "") == bucketPublic }

// ExportNamespaces returns the namespaces a non-public VirtualService is
// visible in.
func (m *Mesh) ExportNamespaces(v *VirtualService) []string {
	if m.Public(v) {
		return nil
	}
	var out []string
	for _, e := range m.exportTo(v) {
		if e != "~" && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	slices.Sort(out)
	return out
}

// BoundToMesh reports whether a VirtualService applies to sidecars: no
// gateways (the default is "mesh") or "mesh" among them.
func BoundToMesh(spec *networking.VirtualService) bool {
	gws := spec.GetGateways()
	return len(gws) == 0 || slices.Contains(gws, MeshGateway)
}

// BoundToGateway reports whether a VirtualService applies to some gateway
// other than the mesh.
func BoundToGateway(spec *networking.VirtualService) bool {
	for _, g := range spec.GetGateways() {
		if g != MeshGateway {
			return true
		}
	}
	return false
}

// Older orders VirtualServices as Istio does (configCompareByCreationTime):
// creation time, then name, then namespace.
func Older(a, b *VirtualService) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.Namespace, b.Namespace)
}

// Merged is a VirtualService as Istio's sidecar code sees it (its
// MergedVirtualServices): hosts and destinations resolved, delegates'
// routes merged in place of the routes that delegate.
type Merged struct {
	VS *VirtualService
	// Hosts are the resolved hosts.
	Hosts []string
	// HTTP are the routes after merging delegates, hosts resolved.
	HTTP []*networking.HTTPRoute
	// Origin[i] says where HTTP[i] comes from.
	Origin []Origin
}

// Origin locates a merged route in the objects: the index of the root's
// route and, for a route a delegate contributed, the delegate and the
// index of its route there.
type Origin struct {
	Root          int
	Delegate      *VirtualService // nil for the root's own route
	DelegateRoute int
}

// Merge returns the VirtualService as Istio merges it. A delegate VS (no
// hosts) merges into nothing; it is only used through its roots.
func (m *Mesh) Merge(v *VirtualService) *Merged {
	if mv, ok := m.merged[v.Key()]; ok && mv.VS == v {
		return mv
	}
	out := &Merged{VS: v}
	for _, h := range v.Spec.GetHosts() {
		out.Hosts = append(out.Hosts, m.ResolveHost(h, v.Namespace))
	}
	for i, r := range v.Spec.GetHttp() {
		if r == nil {
			continue
		}
		if r.Delegate == nil {
			out.HTTP = append(out.HTTP, m.resolveRoute(r, v.Namespace))
			out.Origin = append(out.Origin, Origin{Root: i, DelegateRoute: -1})
			continue
		}
		d := m.delegate(r.Delegate, v.Namespace)
		if d == nil {
			continue // Istio warns and drops the route
		}
		root := m.resolveRoute(r, v.Namespace)
		for j, dr := range d.Spec.GetHttp() {
			if dr == nil || dr.Delegate != nil {
				continue
			}
			merged := mergeHTTPRoute(root, m.resolveRoute(dr, d.Namespace))
			if merged == nil {
				continue
			}
			out.HTTP = append(out.HTTP, merged)
			out.Origin = append(out.Origin, Origin{Root: i, Delegate: d, DelegateRoute: j})
		}
	}
	if m.merged == nil {
		m.merged = map[string]*Merged{}
	}
	m.merged[v.Key()] = out
	return out
}

// delegate finds the delegate a root route names, as Istio accepts it: a
// VirtualService without hosts, exported to the root's namespace.
func (m *Mesh) delegate(d *networking.Delegate, rootNS string) *VirtualService {
	ns := cmp.Or(d.Namespace, rootNS)
	for _, v := range m.VirtualServices {
		if v.Namespace != ns || v.Name != d.Name {
			continue
		}
		if len(v.Spec.GetHosts()) > 0 {
			return nil
		}
		if b := m.bucket(v, rootNS); b == bucketHidden {
			return nil
		}
		return v
	}
	return nil
}

// resolveRoute copies a route with its destination and mirror hosts
// resolved relative to ns (ResolveVirtualServiceShortnames).
func (m *Mesh) resolveRoute(r *networking.HTTPRoute, ns string) *networking.HTTPRoute {
	c := proto.Clone(r).(*networking.HTTPRoute)
	for _, d := range c.Route {
		if d.GetDestination() != nil {
			d.Destination.Host = m.ResolveHost(d.Destination.Host, ns)
		}
	}
	if c.Mirror != nil {
		c.Mirror.Host = m.ResolveHost(c.Mirror.Host, ns)
	}
	for _, mp := range c.Mirrors {
		if mp.GetDestination() != nil {
			mp.Destination.Host = m.ResolveHost(mp.Destination.Host, ns)
		}
	}
	return c
}

// HostMatch says how a resolved VirtualService host matches a Service's
// FQDN: 0 not at all, otherwise larger is more specific, an exact host
// (in any case) above every wildcard (host.MoreSpecific).
func HostMatch(pattern, fqdn string) int {
	switch {
	case strings.EqualFold(pattern, fqdn):
		return 1 << 20
	case strings.HasPrefix(pattern, "*") && strings.HasSuffix(fqdn, pattern[1:]):
		return len(pattern)
	}
	return 0
}

// Link is one VirtualService of a chain, with how it covers the host.
type Link struct {
	*Merged
	// Wildcard is the matching wildcard host when the VirtualService is
	// the host's most specific wildcard match; "" for an exact host.
	Wildcard string
	// Bucket is private, exported or public for the chain's clients.
	Bucket string
}

var bucketNames = [...]string{"private", "exported", "public"}

// Chain returns the VirtualServices Istio considers, in order, for
// requests to fqdn from sidecars in clientNS (SelectVirtualServices, then
// BuildSidecarVirtualHostWrapper): those bound to the mesh and visible to
// the namespace, ordered private, exported-to-it, public, each by age:
// those naming the host, and the one most specific wildcard unless one
// names the host exactly (an exact host takes the Service from every
// wildcard, even on ports it has no route for). The first of them that
// yields a route for a port and client applies (see Routes); none, and
// the sidecar uses its default route to the Service.
func (m *Mesh) Chain(fqdn, clientNS string) []Link {
	type cand struct {
		v *VirtualService
		b int
	}
	var vis []cand
	for _, v := range m.VirtualServices {
		if v.Spec == nil || len(v.Spec.GetHosts()) == 0 || !BoundToMesh(v.Spec) {
			continue
		}
		if b := m.bucket(v, clientNS); b != bucketHidden {
			vis = append(vis, cand{v, b})
		}
	}
	gwExact := func(v *VirtualService) bool { return v.Gateway && v.Namespace == clientNS }
	slices.SortFunc(vis, func(a, b cand) int {
		if a.b != b.b {
			return a.b - b.b
		}
		if ga, gb := gwExact(a.v), gwExact(b.v); ga != gb {
			if ga {
				return -1
			}
			return 1
		}
		return Older(a.v, b.v)
	})
	// Every VirtualService naming the host (in any case: Istio lowercases
	// them to find the Service) takes part; the most specific wildcard
	// does too, unless one names the host exactly as the registry does:
	// Istio's index of exact hosts, which takes a Service from every
	// wildcard, compares case-sensitively (computeWildcardHostVirtualServiceIndex).
	// The first VirtualService of a wildcard host keeps it; a more
	// specific wildcard beats a shorter one.
	var wild *VirtualService
	wildHost, wildScore := "", 0
	exactCS := false
	for _, c := range vis {
		for _, h := range m.Merge(c.v).Hosts {
			switch s := HostMatch(h, fqdn); {
			case s == 1<<20:
				exactCS = exactCS || h == fqdn
			case s > wildScore:
				wild, wildHost, wildScore = c.v, h, s
			}
		}
	}
	if exactCS {
		wild = nil
	}
	var links []Link
	for _, c := range vis {
		mv := m.Merge(c.v)
		switch {
		case slices.ContainsFunc(mv.Hosts, func(h string) bool { return HostMatch(h, fqdn) == 1<<20 }):
			links = append(links, Link{Merged: mv, Bucket: bucketNames[c.b]})
		case c.v == wild:
			links = append(links, Link{Merged: mv, Wildcard: wildHost, Bucket: bucketNames[c.b]})
		}
	}
	return links
}

// Views returns the client namespaces that may see different chains for
// fqdn: each namespace a VirtualService for the host lives in or is
// exported to, and "" for every other namespace. home is always included.
func (m *Mesh) Views(fqdn string, home ...string) []string {
	seen := map[string]bool{"": true}
	out := []string{""}
	add := func(ns string) {
		if ns != "" && ns != "*" && ns != "~" && !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	for _, h := range home {
		add(h)
	}
	for _, v := range m.VirtualServices {
		if v.Spec == nil || !BoundToMesh(v.Spec) {
			continue
		}
		match := false
		for _, h := range v.Spec.GetHosts() {
			if HostMatch(m.ResolveHost(h, v.Namespace), fqdn) > 0 {
				match = true
			}
		}
		if !match || m.Public(v) {
			continue
		}
		for _, ns := range m.ExportNamespaces(v) {
			add(ns)
		}
	}
	slices.Sort(out[1:])
	return out
}
