package istiovs

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// vs builds a VirtualService from YAML of its spec, created at t0+age.
func vs(t *testing.T, ns, name string, age time.Duration, spec string) *VirtualService {
	t.Helper()
	var s networking.VirtualService
	require.NoError(t, yaml.Unmarshal([]byte(spec), &s))
	return &VirtualService{Namespace: ns, Name: name, Created: t0.Add(age), Spec: &s}
}

func keys(chain []Link) []string {
	var out []string
	for _, l := range chain {
		out = append(out, l.VS.Key())
	}
	return out
}

const fqdn = "route.hotrod.svc.cluster.local"

func TestResolveHost(t *testing.T) {
	m := &Mesh{}
	for in, want := range map[string]string{
		"route":                           fqdn,
		"Route":                           "Route.hotrod.svc.cluster.local", // case kept: Istio finds Services case-insensitively, but not destinations
		"route.hotrod":                    "route.hotrod",                   // dotted: literal, not the Service
		"route.hotrod.svc":                "route.hotrod.svc",
		"route.hotrod.svc.cluster.local.": "route.hotrod.svc.cluster.local.",
		"*":                               "*",
		"*.hotrod.svc.cluster.local":      "*.hotrod.svc.cluster.local",
		"10.0.0.1":                        "10.0.0.1",
	} {
		require.Equal(t, want, m.ResolveHost(in, "hotrod"), in)
	}
	require.Equal(t, "route.hotrod.svc.corp.example", (&Mesh{Domain: "corp.example"}).ResolveHost("route", "hotrod"))
}

func TestChainBucketsAndAge(t *testing.T) {
	public := vs(t, "hotrod", "public", 0, "{hosts: [route], http: [{route: [{destination: {host: route}}]}]}")
	newer := vs(t, "hotrod", "newer", time.Hour, "{hosts: [route], http: [{route: [{destination: {host: route}}]}]}")
	private := vs(t, "hotrod", "private", 2*time.Hour, "{hosts: [route], exportTo: [.], http: [{route: [{destination: {host: route}}]}]}")
	exported := vs(t, "other", "exported", 3*time.Hour, "{hosts: [route.hotrod.svc.cluster.local], exportTo: [client], http: [{route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	gw := vs(t, "hotrod", "gw", -time.Hour, "{hosts: [route], gateways: [istio-system/gw], http: [{route: [{destination: {host: route}}]}]}")
	dotted := vs(t, "hotrod", "dotted", -time.Hour, "{hosts: [route.hotrod], http: [{route: [{destination: {host: route}}]}]}")
	hidden := vs(t, "hotrod", "hidden", -time.Hour, "{hosts: [route], exportTo: ['~'], http: [{route: [{destination: {host: route}}]}]}")
	m := &Mesh{VirtualServices: []*VirtualService{newer, private, exported, public, gw, dotted, hidden}}

	require.Equal(t, []string{"hotrod/private", "hotrod/public", "hotrod/newer"}, keys(m.Chain(fqdn, "hotrod")),
		"private first, then public by age; gateway-only, dotted and hidden ones never")
	require.Equal(t, []string{"other/exported", "hotrod/public", "hotrod/newer"}, keys(m.Chain(fqdn, "client")))
	require.Equal(t, []string{"hotrod/public", "hotrod/newer"}, keys(m.Chain(fqdn, "")))
	require.Equal(t, []string{"", "client", "hotrod"}, m.Views(fqdn, "hotrod"))

	// Same creation second: by name, then namespace.
	a := vs(t, "zz", "a", 0, "{hosts: [route.hotrod.svc.cluster.local], http: [{route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	m2 := &Mesh{VirtualServices: []*VirtualService{public, a}}
	require.Equal(t, []string{"zz/a", "hotrod/public"}, keys(m2.Chain(fqdn, "")))

	// A mesh whose default exportTo is ".": VirtualServices without one
	// are private.
	m3 := &Mesh{DefaultExportTo: []string{"."}, VirtualServices: []*VirtualService{public, newer}}
	require.Empty(t, m3.Chain(fqdn, ""))
	require.Equal(t, []string{"hotrod/public", "hotrod/newer"}, keys(m3.Chain(fqdn, "hotrod")))
}

func TestChainExactBeatsWildcard(t *testing.T) {
	wild := vs(t, "mesh", "wild", 0, "{hosts: ['*.hotrod.svc.cluster.local'], http: [{route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	wider := vs(t, "mesh", "wider", -time.Hour, "{hosts: ['*.svc.cluster.local'], http: [{route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	m := &Mesh{VirtualServices: []*VirtualService{wider, wild}}
	c := m.Chain(fqdn, "")
	require.Equal(t, []string{"mesh/wild"}, keys(c), "the most specific wildcard only")
	require.Equal(t, "*.hotrod.svc.cluster.local", c[0].Wildcard)

	// An exact host, even one without a route for the port, takes the host
	// from every wildcard.
	exact := vs(t, "hotrod", "admin-only", time.Hour, "{hosts: [route], http: [{match: [{port: 9001}], route: [{destination: {host: route}}]}]}")
	m.VirtualServices = append(m.VirtualServices, exact)
	c = m.Chain(fqdn, "")
	require.Equal(t, []string{"hotrod/admin-only"}, keys(c))
	l, refs := Effective(c, 8083, Client{Namespace: "x"})
	require.Nil(t, l, "no route on 8083: the default route, not the wildcard")
	require.Nil(t, refs)
}

// Istio finds a Service by a VirtualService host in any case, but only a
// host written exactly as the registry has it takes the Service from
// wildcards: an upper-case exact host and the wildcard both stay in the
// chain, in Istio's order.
func TestChainUpperCaseExactHost(t *testing.T) {
	upper := vs(t, "hotrod", "upper", 0, "{hosts: [ROUTE.hotrod.svc.cluster.local], http: [{match: [{port: 9001}], route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	wild := vs(t, "platform", "wild", time.Hour, "{hosts: ['*.hotrod.svc.cluster.local'], http: [{route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	m := &Mesh{VirtualServices: []*VirtualService{wild, upper}}
	c := m.Chain(fqdn, "")
	require.Equal(t, []string{"hotrod/upper", "platform/wild"}, keys(c))
	l, _ := Effective(c, 8083, Client{Namespace: "x"})
	require.Equal(t, "platform/wild", l.VS.Key(), "upper yields nothing on 8083: the wildcard")
	l, _ = Effective(c, 9001, Client{Namespace: "x"})
	require.Equal(t, "hotrod/upper", l.VS.Key())
}

func TestRoutesPortsSourcesCatchAll(t *testing.T) {
	v := vs(t, "hotrod", "route", 0, `
hosts: [route]
http:
- name: admin
  match: [{port: 9001}]
  route: [{destination: {host: route}}]
- name: fe
  match: [{sourceLabels: {app: frontend}, uri: {prefix: /api}}, {sourceLabels: {app: frontend}}]
  route: [{destination: {host: route}}]
- name: mesh-gw
  match: [{gateways: [mesh], sourceLabels: {app: nobody}}]
  route: [{destination: {host: route}}]
- name: never
  route: [{destination: {host: route}}]
`)
	m := &Mesh{VirtualServices: []*VirtualService{v}}
	mv := m.Merge(v)
	fe := Client{Namespace: "hotrod", Labels: map[string]string{"app": "frontend"}}
	other := Client{Namespace: "hotrod", Labels: map[string]string{"app": "x"}}
	// For frontend on 8083: both fe matches; the second is a catch-all and
	// ends the list.
	require.Equal(t, []RouteRef{{1, 0}, {1, 1}}, mv.Routes(8083, fe))
	// Others: gateways [mesh] ignores sourceLabels, and the match is a
	// catch-all: "never" is never reached.
	require.Equal(t, []RouteRef{{2, 0}}, mv.Routes(8083, other))
	require.Equal(t, []RouteRef{{0, 0}}, mv.Routes(9001, other)[:1])
	require.True(t, mv.YieldsForAll(8083, "hotrod"))

	onlyFE := vs(t, "hotrod", "fe-only", 0, "{hosts: [route], http: [{match: [{sourceLabels: {app: frontend}}], route: [{destination: {host: route}}]}]}")
	mv2 := (&Mesh{VirtualServices: []*VirtualService{onlyFE}}).Merge(onlyFE)
	require.False(t, mv2.YieldsForAll(8083, "hotrod"))
	require.True(t, mv2.YieldsForSome(8083, "hotrod"))
	require.Empty(t, mv2.Routes(8083, other), "no route for other clients: Istio moves on")

	for _, tc := range []struct {
		m    string
		want bool
	}{
		{"{}", true}, {"{port: 8083}", true}, {"{uri: {prefix: /}}", true}, {"{uri: {regex: '.*'}}", true},
		{"{sourceLabels: {a: b}}", true}, {"{uri: {exact: /}}", false}, {"{uri: {prefix: /a}}", false},
		{"{headers: {x: {exact: 'v'}}}", false}, {"{method: {exact: GET}}", false}, {"{authority: {exact: a}}", false},
		{"{queryParams: {a: {exact: b}}}", false}, {"{withoutHeaders: {x: {}}}", false},
	} {
		var hm networking.HTTPMatchRequest
		require.NoError(t, yaml.Unmarshal([]byte(tc.m), &hm))
		require.Equal(t, tc.want, CatchAll(&hm), tc.m)
	}
}

func TestMergeDelegate(t *testing.T) {
	root := vs(t, "hotrod", "root", 0, `
hosts: [route]
http:
- name: r
  match: [{uri: {prefix: /api}}]
  timeout: 7s
  delegate: {name: d, namespace: team}
- route: [{destination: {host: route}}]
`)
	d := vs(t, "team", "d", 0, `
http:
- name: v2
  match: [{uri: {prefix: /api/v2}}]
  route: [{destination: {host: route-v2}}]
- name: conflict
  match: [{uri: {prefix: /other}}]
  route: [{destination: {host: route}}]
- name: rest
  route: [{destination: {host: route}}]
`)
	m := &Mesh{VirtualServices: []*VirtualService{root, d}}
	mv := m.Merge(root)
	require.Len(t, mv.HTTP, 3, "the conflicting delegate route is dropped")
	require.Equal(t, "r-v2", mv.HTTP[0].Name)
	require.Equal(t, "route-v2.team.svc.cluster.local", mv.HTTP[0].Route[0].Destination.Host, "a delegate's hosts are relative to its namespace")
	require.Equal(t, "/api", mv.HTTP[1].Match[0].Uri.GetPrefix(), "the root's match where the delegate has none")
	require.Equal(t, 7*time.Second, mv.HTTP[1].Timeout.AsDuration(), "root settings fill in")
	require.Equal(t, Origin{Root: 0, Delegate: d, DelegateRoute: 2}, mv.Origin[1])
	require.Equal(t, Origin{Root: 1, DelegateRoute: -1}, mv.Origin[2])

	// A delegate not exported to the root's namespace is ignored.
	d.Spec.ExportTo = []string{"."}
	m2 := &Mesh{VirtualServices: []*VirtualService{root, d}}
	require.Len(t, m2.Merge(root).HTTP, 1)
}
