package istiovs

import (
	"strings"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

const (
	key1  = "k1k1k1k1k1k1k"
	key2  = "k2k2k2k2k2k2k"
	regex = "^(?:sbx-routing-key=k1k1k1k1k1k1k)$"
)

func routeSB(key string) Sandbox {
	return Sandbox{
		Key: key, Regex: strings.ReplaceAll(regex, key1, key), Home: "hotrod",
		Retries: &networking.HTTPRetry{Attempts: 2, RetryOn: "connect-failure,refused-stream"},
		Services: []Service{{Namespace: "hotrod", Name: "route", Ports: []int32{8083, 9001},
			Mapped: map[int32]Mapping{8083: {Workload: "route", SandboxService: "route-sbx-" + key}}}},
	}
}

func testOpts() Options {
	return Options{
		OwnName: func(s string) string { return s + "-sbx" },
		IsOwn:   func(v *VirtualService) bool { return v.Labels["own"] == "true" },
		Ignored: func(v *VirtualService) bool { return v.Annotations["ignore"] == "true" },
	}
}

func plan(t *testing.T, m *Mesh, sb Sandbox) *Plan {
	t.Helper()
	p, err := MakePlan(m, sb, testOpts())
	require.NoError(t, err)
	return p
}

func edit(p *Plan, key string) *Edit {
	for i := range p.Edits {
		if p.Edits[i].Namespace+"/"+p.Edits[i].Name == key {
			return &p.Edits[i]
		}
	}
	return nil
}

func names(http []*networking.HTTPRoute) []string {
	var out []string
	for _, r := range http {
		out = append(out, r.GetName())
	}
	return out
}

// apply writes a plan's edits into the mesh, as the cluster would.
func apply(m *Mesh, p *Plan, now time.Time) {
	for _, e := range p.Edits {
		idx := -1
		for i, v := range m.VirtualServices {
			if v.Namespace == e.Namespace && v.Name == e.Name {
				idx = i
			}
		}
		switch {
		case e.Delete:
			m.VirtualServices = append(m.VirtualServices[:idx], m.VirtualServices[idx+1:]...)
		case e.Create || e.Recreate:
			v := &VirtualService{Namespace: e.Namespace, Name: e.Name, Created: now, Labels: map[string]string{"own": "true"},
				Annotations: map[string]string{"sbx.dev/baseline-service": e.Service}, Spec: OwnVirtualService(e.Service, e.HTTP)}
			if idx >= 0 {
				m.VirtualServices[idx] = v
			} else {
				m.VirtualServices = append(m.VirtualServices, v)
			}
		default:
			c := *m.VirtualServices[idx]
			c.Spec = proto.Clone(c.Spec).(*networking.VirtualService)
			c.Spec.Http = e.HTTP
			m.VirtualServices[idx] = &c
		}
	}
	m.merged = nil
}

// The CD VirtualService with a catch-all: one twin right before it, with
// its settings; no own VirtualService; a second plan changes nothing.
func TestPlanTwinBeforeCatchAll(t *testing.T) {
	cd := vs(t, "hotrod", "route", 0, `
hosts: [route]
http:
- name: api
  match: [{uri: {prefix: /api}, headers: {x-v: {exact: "2"}}}]
  route: [{destination: {host: route-v2}}]
- name: default
  timeout: 5s
  fault: {delay: {fixedDelay: 1s, percentage: {value: 10}}}
  rewrite: {uri: /v1}
  headers: {request: {set: {x-env: staging}}}
  route: [{destination: {host: route, subset: v1}, weight: 90, headers: {request: {set: {x-dst: a}}}}, {destination: {host: route}, weight: 10}]
`)
	m := &Mesh{VirtualServices: []*VirtualService{cd}}
	p := plan(t, m, routeSB(key1))
	require.Len(t, p.Edits, 1)
	e := edit(p, "hotrod/route")
	require.Equal(t, []string{"api", "sbx-" + key1 + "-route-8083", "default"}, names(e.HTTP))
	twin, orig := e.HTTP[1], e.HTTP[2]
	require.Equal(t, regex, twin.Match[0].Headers["baggage"].GetRegex())
	require.EqualValues(t, 8083, twin.Match[0].Port, "the destination port follows the listener: the twin is held to its port")
	require.Equal(t, "route-sbx-"+key1, twin.Route[0].Destination.Host)
	require.Equal(t, "x-dst", strings.Join(keysOf(twin.Route[0].Headers.GetRequest().GetSet()), ""), "the heaviest destination's headers")
	for _, f := range []func(*networking.HTTPRoute) proto.Message{
		func(r *networking.HTTPRoute) proto.Message { return r.Timeout },
		func(r *networking.HTTPRoute) proto.Message { return r.Fault },
		func(r *networking.HTTPRoute) proto.Message { return r.Rewrite },
		func(r *networking.HTTPRoute) proto.Message { return r.Headers },
	} {
		require.True(t, proto.Equal(f(orig), f(twin)))
	}
	require.NotNil(t, twin.Retries, "sbx's policy where CD sets none")
	require.True(t, proto.Equal(cd.Spec.Http[1], orig), "CD's route untouched")

	apply(m, p, t0.Add(time.Minute))
	require.Empty(t, plan(t, m, routeSB(key1)).Edits, "idempotent")
	require.Equal(t, meshreport.KeyedSandbox, plan(t, m, routeSB(key1)).Report[0].Views[0].Keyed)
}

// Case 2: CD routes only port 9001, or only frontend's requests. Before
// sbx, Istio uses its default route for the others; sbx must not make
// that VirtualService yield a route there (which would 404 everything
// else), so its own VirtualService, last in every chain, carries the keyed
// route and a fallback that is the default route.
func TestPlanUncoveredPortAndSourceUseOwn(t *testing.T) {
	for name, spec := range map[string]string{
		"port":   "{hosts: [route], http: [{match: [{port: 9001}], route: [{destination: {host: route}}]}]}",
		"source": "{hosts: [route], http: [{match: [{sourceLabels: {app: frontend}}], route: [{destination: {host: route}}]}]}",
	} {
		t.Run(name, func(t *testing.T) {
			cd := vs(t, "hotrod", "route", 0, spec)
			m := &Mesh{VirtualServices: []*VirtualService{cd}}
			p := plan(t, m, routeSB(key1))
			own := edit(p, "hotrod/route-sbx")
			require.NotNil(t, own)
			require.True(t, own.Create)
			require.Equal(t, []string{"sbx-" + key1 + "-route-8083", "sbx-baseline-8083"}, names(own.HTTP))
			fb := own.HTTP[1]
			require.EqualValues(t, 8083, fb.Match[0].Port)
			require.Equal(t, "route", fb.Route[0].Destination.Host)
			require.EqualValues(t, 8083, fb.Route[0].Destination.Port.Number)
			cdEdit := edit(p, "hotrod/route")
			if name == "port" {
				require.Nil(t, cdEdit, "nothing of CD's routes goes to 8083")
			} else {
				// frontend's route gets its twin; it stays source-bound.
				require.Equal(t, map[string]string{"app": "frontend"}, cdEdit.HTTP[0].Match[0].SourceLabels)
			}
			apply(m, p, t0.Add(time.Minute))
			c := m.Chain(fqdn, "")
			require.Equal(t, []string{"hotrod/route", "hotrod/route-sbx"}, keys(c), "the own one comes last")
			l, _ := Effective(c, 8083, Client{Namespace: "hotrod", Labels: map[string]string{"app": "other"}})
			require.Equal(t, "hotrod/route-sbx", l.VS.Key(), "where CD yields nothing")
			l, _ = Effective(c, 8083, Client{Namespace: "hotrod", Labels: map[string]string{"app": "frontend"}})
			want := "hotrod/route"
			if name == "port" {
				want = "hotrod/route-sbx"
			}
			require.Equal(t, want, l.VS.Key())
		})
	}
}

// Case 3 and 4: a private VirtualService, an exported one, one in another
// namespace: every one Istio may use gets twins.
func TestPlanEveryVisibleVirtualService(t *testing.T) {
	private := vs(t, "hotrod", "private", time.Hour, "{hosts: [route], exportTo: [.], http: [{route: [{destination: {host: route}}]}]}")
	elsewhere := vs(t, "platform", "route-timeouts", 0, "{hosts: [route.hotrod.svc.cluster.local], http: [{timeout: 3s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	m := &Mesh{VirtualServices: []*VirtualService{private, elsewhere}}
	p := plan(t, m, routeSB(key1))
	require.NotNil(t, edit(p, "hotrod/private"))
	pe := edit(p, "platform/route-timeouts")
	require.NotNil(t, pe)
	require.Equal(t, "route-sbx-"+key1+".hotrod.svc.cluster.local", pe.HTTP[0].Route[0].Destination.Host, "another namespace: the FQDN")
	require.Nil(t, edit(p, "hotrod/route-sbx"), "the public one covers every other namespace")
	// In hotrod the private one applies; elsewhere the public one.
	for _, v := range p.Report[0].Views {
		want := "platform/route-timeouts"
		if v.Clients == "hotrod" {
			want = "hotrod/private"
		}
		require.Equal(t, want, v.Applies, v.Clients)
		require.Equal(t, meshreport.KeyedSandbox, v.Keyed)
	}
}

// Case 4: a wildcard VirtualService routes the Service. Its routes to the
// Service get twins; an own VirtualService (exact host) would take the
// Service away from it for all traffic, so none is made, with a warning
// for what cannot be routed.
func TestPlanWildcardNeverShadowed(t *testing.T) {
	wild := vs(t, "mesh", "wild", 0, `
hosts: ['*.hotrod.svc.cluster.local']
http:
- match: [{authority: {prefix: route}, port: 8083, sourceLabels: {app: frontend}}]
  timeout: 2s
  route: [{destination: {host: route.hotrod.svc.cluster.local}}]
`)
	m := &Mesh{VirtualServices: []*VirtualService{wild}}
	p := plan(t, m, routeSB(key1))
	we := edit(p, "mesh/wild")
	require.NotNil(t, we)
	require.Equal(t, "route", we.HTTP[0].Match[0].Authority.GetPrefix())
	require.Nil(t, edit(p, "hotrod/route-sbx"))
	require.Contains(t, strings.Join(p.Warnings, "\n"), "would take route away from it")
	require.Equal(t, meshreport.KeyedPartial, p.Report[0].Views[0].Keyed)

	// An own VirtualService left from before the wildcard appeared goes.
	own := &VirtualService{Namespace: "hotrod", Name: "route-sbx", Labels: map[string]string{"own": "true"},
		Spec: OwnVirtualService("route", []*networking.HTTPRoute{{Name: "sbx-" + key2 + "-route-8083",
			Match: []*networking.HTTPMatchRequest{{Port: 8083}}, Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "x"}}}}})}
	m.VirtualServices = append(m.VirtualServices, own)
	require.True(t, edit(plan(t, m, routeSB(key1)), "hotrod/route-sbx").Delete)
}

// Case 1: a dotted short host names no Service; the Service needs sbx's
// own VirtualService.
func TestPlanDottedHostIsNotTheService(t *testing.T) {
	for _, h := range []string{"route.hotrod", "route.hotrod.svc", "route.hotrod.svc.cluster.local."} {
		cd := vs(t, "hotrod", "route", 0, "{hosts: ['"+h+"'], http: [{route: [{destination: {host: route}}]}]}")
		p := plan(t, &Mesh{VirtualServices: []*VirtualService{cd}}, routeSB(key1))
		require.NotNil(t, edit(p, "hotrod/route-sbx"), h)
		require.Equal(t, "hotrod/route-sbx", p.Report[0].Views[0].Applies, h)
		require.Equal(t, []string{"hotrod/route-sbx (public, sbx)"}, p.Report[0].Views[0].Chain, h)
	}
}

// The own VirtualService must be the newest public one of its host; when
// CD creates one after it, it is recreated.
func TestPlanRecreatesOwnWhenNotNewest(t *testing.T) {
	cd := vs(t, "hotrod", "route", 0, "{hosts: [route], http: [{match: [{port: 9001}], route: [{destination: {host: route}}]}]}")
	m := &Mesh{VirtualServices: []*VirtualService{cd}}
	apply(m, plan(t, m, routeSB(key1)), t0.Add(time.Minute))
	require.Empty(t, plan(t, m, routeSB(key1)).Edits)
	later := vs(t, "hotrod", "route-2", 2*time.Minute, "{hosts: [route], http: [{match: [{port: 9001}], route: [{destination: {host: route}}]}]}")
	m.VirtualServices = append(m.VirtualServices, later)
	m.merged = nil
	p := plan(t, m, routeSB(key1))
	require.True(t, edit(p, "hotrod/route-sbx").Recreate)
}

// Two sandboxes on one VirtualService: each keeps the other's twins, in
// whatever order, so neither rewrites the object on its next apply; dead
// keys are removed by either.
func TestPlanTwoSandboxesAndDeadRoutes(t *testing.T) {
	cd := vs(t, "hotrod", "route", 0, "{hosts: [route], http: [{name: default, route: [{destination: {host: route}}]}]}")
	m := &Mesh{VirtualServices: []*VirtualService{cd}}
	apply(m, plan(t, m, routeSB(key1)), t0)
	apply(m, plan(t, m, routeSB(key2)), t0)
	require.Equal(t, []string{"sbx-" + key1 + "-route-8083", "sbx-" + key2 + "-route-8083", "default"}, names(m.VirtualServices[0].Spec.Http))
	require.Empty(t, plan(t, m, routeSB(key1)).Edits)
	require.Empty(t, plan(t, m, routeSB(key2)).Edits)

	o := testOpts()
	o.Live = func(key, home string) bool {
		require.Equal(t, "hotrod", home)
		return key != key2
	}
	p, err := MakePlan(m, routeSB(key1), o)
	require.NoError(t, err)
	require.Equal(t, []string{"sbx-" + key1 + "-route-8083", "default"}, names(edit(p, "hotrod/route").HTTP))

	// A sweep (no sandbox of its own) removes only dead routes.
	p, err = MakePlan(m, Sandbox{}, o)
	require.NoError(t, err)
	require.Equal(t, []string{"sbx-" + key1 + "-route-8083", "default"}, names(edit(p, "hotrod/route").HTTP))
}

// A route that already matches the baggage header cannot carry the key
// condition too: it gets no twin, with a warning.
func TestPlanBaggageConflictWarns(t *testing.T) {
	cd := vs(t, "hotrod", "route", 0, `
hosts: [route]
http:
- match: [{headers: {baggage: {regex: '.*canary.*'}}}]
  route: [{destination: {host: route}}]
- route: [{destination: {host: route}}]
`)
	p := plan(t, &Mesh{VirtualServices: []*VirtualService{cd}}, routeSB(key1))
	require.Equal(t, []string{"", "sbx-" + key1 + "-route-8083", ""}, names(edit(p, "hotrod/route").HTTP))
	require.Contains(t, strings.Join(p.Warnings, "\n"), "already matches the baggage header")
}

// A delegate's routes get their twins in the delegate, right before each,
// so they keep their place among its routes when Istio merges them under
// the root; the root's own routes get theirs in the root.
func TestPlanDelegateTwins(t *testing.T) {
	root := vs(t, "hotrod", "root", 0, "{hosts: [route], http: [{match: [{uri: {prefix: /api}}], retries: {attempts: 5}, delegate: {name: d, namespace: team}}, {route: [{destination: {host: route}}]}]}")
	d := vs(t, "team", "d", 0, "{http: [{match: [{uri: {prefix: /api/v0}}], route: [{destination: {host: driver.hotrod.svc.cluster.local}}]}, {match: [{uri: {prefix: /api/v1}}], timeout: 9s, mirror: {host: shadow}, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}")
	p := plan(t, &Mesh{VirtualServices: []*VirtualService{root, d}}, routeSB(key1))
	require.Equal(t, []string{"", "sbx-" + key1 + "-route-8083", ""}, names(edit(p, "hotrod/root").HTTP))
	de := edit(p, "team/d")
	require.NotNil(t, de)
	require.Equal(t, []string{"", "sbx-" + key1 + "-route-8083", ""}, names(de.HTTP), "after the route to driver, before the one it mirrors")
	twin := de.HTTP[1]
	require.Equal(t, "/api/v1", twin.Match[0].Uri.GetPrefix())
	require.Equal(t, 9*time.Second, twin.Timeout.AsDuration())
	require.Equal(t, "shadow", twin.Mirror.Host, "as written: it stays in the delegate's namespace")
	require.Equal(t, "route-sbx-"+key1+".hotrod.svc.cluster.local", twin.Route[0].Destination.Host)
	require.Nil(t, twin.Retries, "the root's retries fill it in, as they do the original's")
	require.Nil(t, twin.Delegate)
}

func TestPlanIgnoredRefused(t *testing.T) {
	cd := vs(t, "hotrod", "route", 0, "{hosts: [route], http: [{route: [{destination: {host: route}}]}]}")
	cd.Annotations = map[string]string{"ignore": "true"}
	_, err := MakePlan(&Mesh{VirtualServices: []*VirtualService{cd}}, routeSB(key1), testOpts())
	require.ErrorContains(t, err, "marked sbx.dev/ignore")
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
