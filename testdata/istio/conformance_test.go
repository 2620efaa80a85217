package istio

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// The conformance table: for each setup, sbx's real planner (cluster.Plan,
// what `sbx render` prints and `sbx connect` applies) changes the world,
// Istio's control plane generates the sidecars' routes before and after,
// and every request from every client is checked:
//
//   - without the key it is treated exactly as before (cluster and
//     behaviour), whatever the client, port or path;
//   - with the key, where it went to the sandboxed Service before, it now
//     goes to the sandbox with the same behaviour (rewrites, headers,
//     timeouts, faults, mirrors, CORS; retries where the route set them),
//     unless the scenario says sbx cannot and sbx warned why; anything else
//     is treated as before;
//   - the simulated mesh (package sim, through package istiovs) picks the
//     same VirtualService and route as Envoy's generated routes;
//   - every VirtualService sbx writes passes Istio's own validation.

const sbxDeployments = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: route, namespace: hotrod}
spec:
  selector: {matchLabels: {app: route}}
  template:
    metadata: {labels: {app: route}}
    spec: {containers: [{name: route, image: route}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: driver, namespace: hotrod}
spec:
  selector: {matchLabels: {app: driver}}
  template:
    metadata: {labels: {app: driver}}
    spec: {containers: [{name: driver, image: driver}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: dev}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: api}]}
`

const (
	key1 = "k1k1k1k1k1k1k"
	key2 = "k2k2k2k2k2k2k"
)

type scenario struct {
	name  string
	world string // VirtualServices (and extra Services) besides baseWorld
	// earlier is what sbx left in the cluster before (another sandbox's
	// routes): part of the world sbx plans against, not of the baseline
	// requests without the key are compared with.
	earlier string
	// then is a CD sync after sbx planned: these VirtualServices replace
	// (or join) the world's, sbx's routes in them gone; sbx plans again,
	// as the connected daemon does, and requests are judged against the
	// baseline as CD left it.
	then string
	// exportTo is the mesh's defaultVirtualServiceExportTo (nil: "*").
	exportTo []string
	// ports of route the sandbox maps (default 8083).
	ports []int32
	// keys: one sandbox per key (default key1).
	keys  []string
	paths []string // default "/", "/api/x"
	// headers are sent with every request (besides baggage).
	headers http.Header
	// clients besides the defaults (hotrod, other, third, and frontend in
	// hotrod and in other).
	clients []Client
	// wantWarn are substrings of sbx's warnings.
	wantWarn []string
	// refuse is a substring of the error sbx must refuse with.
	refuse string
	// keyedStays says where a keyed request may stay on the baseline
	// (sbx warned why).
	keyedStays func(c Client, port int, path string) bool
	// check looks at the objects sbx wrote.
	check func(t *testing.T, written []*istionet.VirtualService)
	// gatewayHost, when set, also sends every request through the ingress
	// gateway (a Gateway selecting istio: ingressgateway, port 80) for
	// this Host.
	gatewayHost string
	// home, when set, is the sandbox's home namespace: its first local
	// workload is Deployment api there (Service api, in the world the
	// scenario gives), so the relay and the sandbox Service of route live
	// there and sbx's routes in hotrod name them by FQDN.
	home string
}

// ingress is the gateway pod of the gateway scenarios.
var gatewayPod = GatewayClient{Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}}

const ingressGatewayDoc = `
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
`

func TestConformance(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc) })
	}
}

// devWorld is the sandbox home namespace of the multi-namespace
// scenarios: namespace dev with Service api (the sandbox's first local
// workload, Deployment api, lives there).
const devWorld = `
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: dev}
spec:
  clusterIP: 10.96.0.21
  selector: {app: api}
  ports:
  - {name: http, port: 8080}
`

var scenarios = []scenario{
	{
		// Several namespaces: the sandbox's home (its relay and its
		// Services) is dev; CD's route VirtualService in hotrod gets
		// twins that name route's sandbox Service in dev by FQDN.
		name:  "a sandbox at home in another namespace, CD VirtualService in hotrod",
		home:  "dev",
		world: devWorld + vs("route", "hotrod", t0, `{hosts: [route], http: [{name: default, timeout: 5s, route: [{destination: {host: route, port: {number: 8083}}}]}]}`),
	},
	{
		name:  "a sandbox at home in another namespace, no VirtualService",
		home:  "dev",
		world: devWorld,
	},
	{
		name:  "two sandboxes at home in another namespace, CD routes port 9001 only",
		home:  "dev",
		keys:  []string{key1, key2},
		world: devWorld + vs("route", "hotrod", t0, `{hosts: [route], http: [{name: admin, match: [{port: 9001}], timeout: 1s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "CD VirtualService with a catch-all",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: default, timeout: 5s, retries: {attempts: 3, perTryTimeout: 2s}, route: [{destination: {host: route, port: {number: 8083}}}]}]}`),
	},
	{
		name: "no VirtualService at all",
	},
	{
		name:  "case 1: dotted short host route.hotrod names no Service",
		world: vs("route", "hotrod", t0, catchAll("[route.hotrod]", "cd")),
	},
	{
		name:  "case 1: dotted short host route.hotrod.svc names no Service",
		world: vs("route", "hotrod", t0, catchAll("[route.hotrod.svc]", "cd")),
	},
	{
		name:  "case 1: trailing dot and upper case",
		world: vs("route", "hotrod", t0, catchAll("[ROUTE.hotrod.svc.cluster.local.]", "cd")),
	},
	{
		name:  "case 2: CD routes only port 9001 of a two-port Service",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: admin, match: [{port: 9001}], timeout: 1s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "case 2: CD routes only frontend's requests",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: fe, match: [{sourceLabels: {app: frontend}}], timeout: 2s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "case 2: frontend's routes without a catch-all keep their 404s",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: fe-api, match: [{sourceLabels: {app: frontend}, uri: {prefix: /api}}], route: [{destination: {host: route}}]}]}`),
		paths: []string{"/", "/api/x", "/other"},
	},
	{
		name:  "case 3: CD VirtualService private to its namespace",
		world: vs("route", "hotrod", t0, `{hosts: [route], exportTo: [.], http: [{name: cd, timeout: 4s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name: "case 3: a public VirtualService and an older private one",
		world: vs("public", "hotrod", t1, `{hosts: [route], http: [{name: public, timeout: 4s, route: [{destination: {host: route}}]}]}`) +
			vs("private", "other", t0, `{hosts: [route.hotrod.svc.cluster.local], exportTo: [.], http: [{name: private, timeout: 7s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`),
	},
	{
		name:     "case 3: the mesh's default exportTo is \".\"",
		exportTo: []string{"."},
		world:    vs("route", "hotrod", t0, catchAll("[route]", "cd")),
	},
	{
		name: "case 3: exported to a namespace by name",
		world: vs("exported", "other", t1, `{hosts: [route.hotrod.svc.cluster.local], exportTo: [third], http: [{name: exported, timeout: 9s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`) +
			vs("public", "hotrod", t0, catchAll("[route]", "public")),
	},
	{
		name:  "case 4: an older public VirtualService in another namespace",
		world: vs("route-timeouts", "platform", t0, `{hosts: [route.hotrod.svc.cluster.local], http: [{name: platform, timeout: 3s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`),
	},
	{
		name:  "case 4: a wildcard VirtualService with a catch-all",
		world: vs("wild", "platform", t0, `{hosts: ['*.hotrod.svc.cluster.local'], http: [{name: wild, timeout: 3s, retries: {attempts: 1}, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`),
		check: func(t *testing.T, written []*istionet.VirtualService) {
			for _, v := range written {
				if v.Name == "route-sbx" {
					t.Fatalf("sbx created an exact-host VirtualService next to the wildcard: it would take route away from it")
				}
			}
		},
	},
	{
		name:     "case 4: a wildcard VirtualService that routes only frontend",
		world:    vs("wild", "platform", t0, `{hosts: ['*.hotrod.svc.cluster.local'], http: [{name: wild-fe, match: [{sourceLabels: {app: frontend}}], timeout: 3s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`),
		wantWarn: []string{"would take route away from it"},
		keyedStays: func(c Client, port int, path string) bool {
			return c.Labels["app"] != "frontend" // no route of the wildcard for them
		},
	},
	{
		name: "case 4: CD creates its VirtualService after sbx's own",
		earlier: strings.Replace(vs("route-sbx", "hotrod", t0, `{hosts: [route], exportTo: ['*'], http: [{name: sbx-k2k2k2k2k2k2k-route-8083, match: [{port: 8083, headers: {baggage: {regex: '^(?:.*k2k2k2k2k2k2k.*)$'}}}], route: [{destination: {host: route-sbx-k2k2k2k2k2k2k, port: {number: 8083}}}]}, {name: sbx-baseline-8083, match: [{port: 8083}], route: [{destination: {host: route, port: {number: 8083}}}]}]}`),
			"namespace: hotrod,", "namespace: hotrod, labels: {app.kubernetes.io/managed-by: sbx, sbx.dev/component: routes}, annotations: {sbx.dev/baseline-service: route},", 1),
		world:    vs("route", "hotrod", t1, `{hosts: [route], http: [{name: admin, match: [{port: 9001}], route: [{destination: {host: route}}]}, {name: fe, match: [{sourceLabels: {app: frontend}}], timeout: 2s, route: [{destination: {host: route}}]}]}`),
		wantWarn: []string{"sbx recreates its own"},
	},
	{
		name: "case 5: keyed twins keep CD's route settings",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [
			{name: api, match: [{uri: {prefix: /api}}], rewrite: {uri: /v1/api}, timeout: 2s, retries: {attempts: 4, retryOn: 5xx},
			 headers: {request: {set: {x-env: staging}}, response: {remove: [x-debug]}},
			 fault: {abort: {httpStatus: 418, percentage: {value: 1}}},
			 mirror: {host: shadow.hotrod.svc.cluster.local}, mirrorPercentage: {value: 5},
			 corsPolicy: {allowOrigins: [{exact: 'https://example.com'}], allowMethods: [GET]},
			 route: [{destination: {host: route}, headers: {request: {add: {x-dst: a}}}}]},
			{name: default, timeout: 5s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "case 5: a weighted split between route and another Service",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: split, route: [{destination: {host: route}, weight: 80}, {destination: {host: driver, port: {number: 8082}}, weight: 20}]}]}`),
	},
	{
		name: "routes to other Services and redirects stay as they are for keyed requests",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [
			{name: moved, match: [{uri: {prefix: /old}}], redirect: {uri: /new}},
			{name: teapot, match: [{uri: {prefix: /tea}}], directResponse: {status: 418}},
			{name: elsewhere, match: [{uri: {prefix: /driver}}], route: [{destination: {host: driver, port: {number: 8082}}}]},
			{name: default, route: [{destination: {host: route}}]}]}`),
		paths: []string{"/", "/old/x", "/tea", "/driver"},
	},
	{
		name: "a route that already matches the baggage header",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [
			{name: canary, match: [{headers: {baggage: {regex: '.*canary=1.*'}}}], timeout: 1s, route: [{destination: {host: route}}]},
			{name: default, route: [{destination: {host: route}}]}]}`),
		headers:  http.Header{"X-Unused": {"1"}},
		wantWarn: []string{"already matches the baggage header"},
	},
	{
		name: "delegation: the delegate's routes flattened into twins",
		world: vs("root", "hotrod", t0, `{hosts: [route], http: [{name: root, match: [{uri: {prefix: /api}}], delegate: {name: api, namespace: team}}, {name: rest, route: [{destination: {host: route}}]}]}`) +
			vs("api", "team", t0, `{http: [{name: v1, match: [{uri: {prefix: /api/v1}}], timeout: 3s, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}, {name: other, route: [{destination: {host: driver.hotrod.svc.cluster.local, port: {number: 8082}}}]}]}`),
		paths: []string{"/", "/api/v1/x", "/api/v2"},
	},
	{
		name:  "one VirtualService for two hosts",
		world: vs("combined", "hotrod", t0, `{hosts: [route, driver], http: [{name: to-route, match: [{port: 8083}], route: [{destination: {host: route, port: {number: 8083}}}]}, {name: to-driver, route: [{destination: {host: driver, port: {number: 8082}}}]}]}`),
	},
	{
		name:  "both ports mapped",
		ports: []int32{8083, 9001},
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: admin, match: [{port: 9001}], timeout: 1s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "two sandboxes on one Service",
		keys:  []string{key1, key2},
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: fe, match: [{sourceLabels: {app: frontend}}], route: [{destination: {host: route}}]}, {name: default, timeout: 5s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "two sandboxes where CD routes only one port",
		keys:  []string{key1, key2},
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: admin, match: [{port: 9001}], route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "a CD sync replaces the routes while connected",
		keys:  []string{key1, key2},
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: default, route: [{destination: {host: route}}]}]}`),
		then:  vs("route", "hotrod", t0, `{hosts: [route], http: [{name: api, match: [{uri: {prefix: /api}}], timeout: 2s, route: [{destination: {host: route}}]}, {name: default, timeout: 5s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:  "a CD sync makes the VirtualService private",
		world: vs("route", "hotrod", t0, catchAll("[route]", "cd")),
		then:  vs("route", "hotrod", t0, `{hosts: [route], exportTo: [.], http: [{name: cd, route: [{destination: {host: route.hotrod.svc.cluster.local}}]}]}`),
	},
	{
		name:  "CD adds a newer public VirtualService for the host",
		world: vs("route", "hotrod", t0, `{hosts: [route], http: [{name: admin, match: [{port: 9001}], route: [{destination: {host: route}}]}]}`),
		then:  vs("route-v2", "hotrod", "2026-06-01T00:00:00Z", `{hosts: [route], http: [{name: v2, timeout: 6s, route: [{destination: {host: route}}]}]}`),
	},
	{
		name:        "a gateway VirtualService sends to the Service",
		gatewayHost: "hotrod.example.com",
		world: ingressGatewayDoc + vs("ingress-route", "hotrod", t0, `{hosts: [hotrod.example.com], gateways: [istio-system/ingress], http: [
			{name: api, match: [{uri: {prefix: /api}}], timeout: 3s, route: [{destination: {host: route, port: {number: 8083}}}]},
			{name: rest, route: [{destination: {host: driver, port: {number: 8082}}}]}]}`),
	},
	{
		name:        "two gateway VirtualServices share a host: catch-alls move last",
		gatewayHost: "hotrod.example.com",
		paths:       []string{"/", "/admin/x"},
		world: ingressGatewayDoc +
			vs("older", "hotrod", t0, `{hosts: [hotrod.example.com], gateways: [istio-system/ingress, mesh], http: [{name: all, route: [{destination: {host: route, port: {number: 8083}}}]}]}`) +
			vs("newer", "hotrod", t1, `{hosts: [hotrod.example.com], gateways: [istio-system/ingress], http: [{name: admin, match: [{uri: {prefix: /admin}}], route: [{destination: {host: route, port: {number: 9001}}}]}, {name: all, route: [{destination: {host: driver, port: {number: 8082}}}]}]}`),
		wantWarn: []string{"moves catch-all routes last"},
		keyedStays: func(c Client, port int, path string) bool {
			return c.Namespace == "istio-system" // the gateway: no twin of the catch-all there
		},
	},
	{
		name:   "a VirtualService marked sbx.dev/ignore",
		world:  "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: route, namespace: hotrod, annotations: {sbx.dev/ignore: 'true'}}\nspec: {hosts: [route], http: [{route: [{destination: {host: route}}]}]}\n",
		refuse: "marked sbx.dev/ignore",
	},
}

var (
	frontendHotrod = Client{Namespace: "hotrod", Labels: map[string]string{"app": "frontend"}}
	frontendOther  = Client{Namespace: "other", Labels: map[string]string{"app": "frontend"}}
	driverHotrod   = Client{Namespace: "hotrod", Labels: map[string]string{"app": "driver"}}
)

// validateWritten runs Istio's own VirtualService validation on every
// VirtualService a plan writes (created, updated or recreated).
func validateWritten(t *testing.T, objs *cluster.Objects) {
	t.Helper()
	for _, rt := range objs.Routes {
		if rt.Object == nil {
			continue
		}
		if w, err := ValidateVirtualService(rt.Object); err != nil || len(w) > 0 {
			t.Fatalf("Istio's validation of %s/%s as sbx writes it: %v %v", rt.Namespace, rt.Name, err, w)
		}
	}
}

func runScenario(t *testing.T, sc scenario) {
	failures := 0
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		if failures++; failures >= 6 {
			t.Fatalf("stopping after %d differences", failures)
		}
	}
	docs := baseWorld + sc.world
	before, err := ParseWorld(docs)
	if err != nil {
		t.Fatal(err)
	}
	before.DefaultVirtualServiceExportTo = sc.exportTo
	keys := sc.keys
	if len(keys) == 0 {
		keys = []string{key1}
	}
	after := copyWorld(before)
	if sc.earlier != "" {
		e, err := ParseWorld(sc.earlier)
		if err != nil {
			t.Fatal(err)
		}
		after.VirtualServices = append(after.VirtualServices, e.VirtualServices...)
	}
	var warnings []string
	var written []*istionet.VirtualService
	for i, key := range keys {
		base, err := cluster.ParseManifests(strings.NewReader(manifests(t, after)), "default")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := cluster.Plan(context.Background(), base, sandboxSpecIn(fmt.Sprintf("dev%d", i), sc.ports, sc.home),
			cluster.Options{RoutingKey: key, TokenVerifier: testVerifier, RelayImage: "ghcr.io/sbx-dev/sbx:test"})
		if sc.refuse != "" {
			if err == nil || !strings.Contains(err.Error(), sc.refuse) {
				t.Fatalf("want a refusal with %q, got %v", sc.refuse, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		warnings = append(warnings, objs.Warnings...)
		validateWritten(t, objs)
		for _, rt := range objs.Routes {
			if rt.Object != nil {
				written = append(written, rt.Object)
			}
			applyTarget(&after, rt)
		}
		for j, s := range objs.Services {
			s = s.DeepCopy()
			s.Spec.ClusterIP = fmt.Sprintf("10.96.%d.%d", 10+i, 10+j)
			after.Services = append(after.Services, s)
		}
	}
	if sc.then != "" {
		th, err := ParseWorld(sc.then)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range th.VirtualServices {
			replaceVS(&before, v)
			replaceVS(&after, v)
		}
		for i, key := range keys {
			base, err := cluster.ParseManifests(strings.NewReader(manifests(t, after)), "default")
			if err != nil {
				t.Fatal(err)
			}
			objs, err := cluster.Plan(context.Background(), base, sandboxSpecIn(fmt.Sprintf("dev%d", i), sc.ports, sc.home),
				cluster.Options{RoutingKey: key, TokenVerifier: testVerifier, RelayImage: "ghcr.io/sbx-dev/sbx:test"})
			if err != nil {
				t.Fatal(err)
			}
			if len(objs.Routes) == 0 {
				t.Errorf("after the CD sync, sbx's plan for %s changes nothing", key)
			}
			validateWritten(t, objs)
			for _, rt := range objs.Routes {
				applyTarget(&after, rt)
			}
		}
	}
	for _, w := range sc.wantWarn {
		if !slices.ContainsFunc(warnings, func(s string) bool { return strings.Contains(s, w) }) {
			errorf("no warning contains %q; warnings: %q", w, warnings)
		}
	}
	if sc.check != nil {
		sc.check(t, written)
	}
	t.Logf("warnings: %q", warnings)

	jb, ja := NewJudge(t, before), NewJudge(t, after)
	mesh := &istiovs.Mesh{DefaultExportTo: sc.exportTo}
	for _, v := range after.VirtualServices {
		mesh.VirtualServices = append(mesh.VirtualServices, &istiovs.VirtualService{
			Namespace: v.Namespace, Name: v.Name, Created: v.CreationTimestamp.Time, Spec: &v.Spec})
	}
	clients := append([]Client{inHotrod, inOther, inThird, frontendHotrod, frontendOther, driverHotrod}, sc.clients...)
	paths := sc.paths
	if len(paths) == 0 {
		paths = []string{"/", "/api/x"}
	}
	mapped := sc.ports
	if len(mapped) == 0 {
		mapped = []int32{8083}
	}
	if sc.gatewayHost != "" {
		for _, path := range paths {
			req := Request{Host: sc.gatewayHost, Port: 80, Path: path, Headers: sc.headers.Clone()}
			checkCalls(t, errorf, keys, mapped, sc, Client{Namespace: "istio-system"}, 80, path, "gateway, path "+path,
				func(r Request) Outcome { return jb.CallGateway(gatewayPod, r) },
				func(r Request) Outcome { return ja.CallGateway(gatewayPod, r) }, req, nil)
		}
	}
	for _, c := range clients {
		for _, port := range []int{8083, 9001} {
			for _, path := range paths {
				req := Request{Host: fmt.Sprintf("%s:%d", routeFQDN, port), Port: port, Path: path, Headers: sc.headers.Clone()}
				where := fmt.Sprintf("client %s%v, port %d, path %s", c.Namespace, c.Labels, port, path)
				checkCalls(t, errorf, keys, mapped, sc, c, port, path, where,
					func(r Request) Outcome { return jb.Call(c, r) }, func(r Request) Outcome { return ja.Call(c, r) }, req,
					func(r Request, o Outcome, where string) { agree(errorf, mesh, c, r, o, where) })
			}
		}
	}
}

// checkCalls sends one request without and with each key before and
// after sbx's changes and checks what the issue requires (see the top of
// this file); agreeWith, when set, also checks the simulated mesh.
func checkCalls(t *testing.T, errorf func(string, ...any), keys []string, mapped []int32, sc scenario, c Client, port int, path, where string,
	before, after func(Request) Outcome, req Request, agreeWith func(Request, Outcome, string)) {
	t.Helper()
	// Without the key: exactly as before.
	ob, oa := before(req), after(req)
	if ob.Matched != oa.Matched || ob.Cluster != oa.Cluster || ob.Behaviour != oa.Behaviour {
		errorf("%s, no key: changed by sbx\n  before: %s\n  after:  %s", where, ob, oa)
	}
	if agreeWith != nil {
		agreeWith(req, oa, where+", no key")
	}
	for _, key := range keys {
		kreq := req
		kreq.Headers = req.Headers.Clone()
		if kreq.Headers == nil {
			kreq.Headers = http.Header{}
		}
		kreq.Headers.Set("baggage", "other=1, sbx-routing-key="+key)
		kb, ka := before(kreq), after(kreq)
		kwhere := where + ", key " + key
		if agreeWith != nil {
			agreeWith(kreq, ka, kwhere)
		}
		target := toService(kb.Cluster)
		stays := sc.keyedStays != nil && sc.keyedStays(c, port, path)
		switch {
		case target == 0 || !slices.Contains(mapped, int32(target)) || stays:
			// Not to a mapped port of the Service (another Service, a
			// redirect, a 404), or where sbx said it cannot: as before.
			if kb.Matched != ka.Matched || kb.Cluster != ka.Cluster || kb.Behaviour != ka.Behaviour {
				errorf("%s: changed by sbx\n  before: %s\n  after:  %s", kwhere, kb, ka)
			}
		default:
			want := fmt.Sprintf("outbound|%d||route-sbx-%s.%s.svc.cluster.local", target, key, cmp.Or(sc.home, "hotrod"))
			if ka.Cluster != want {
				errorf("%s: want the sandbox (%s)\n  before: %s\n  after:  %s", kwhere, want, kb, ka)
				continue
			}
			if strings.Contains(kb.Cluster, ",") {
				continue // a weighted split: the sandbox takes all of it
			}
			if d := behaviourDiff(kb.Behaviour, ka.Behaviour); d != "" {
				errorf("%s: the sandbox gets other settings than the baseline did: %s\n  before: %s\n  after:  %s", kwhere, d, kb, ka)
			}
		}
	}
}

// toService returns the port of the route Service a cluster name (or a
// weighted split) sends to, or 0.
func toService(cluster string) int {
	for _, part := range strings.Split(cluster, ",") {
		name, _, _ := strings.Cut(part, ":")
		var port int
		if n, _ := fmt.Sscanf(name, "outbound|%d||"+routeFQDN, &port); n == 1 && strings.HasSuffix(name, "||"+routeFQDN) {
			return port
		}
	}
	return 0
}

// behaviourDiff compares a baseline route's behaviour with its keyed
// twin's. The retry policy is sbx's own where the route set none (Istio's
// default retries what the relay answers while the laptop is offline);
// where the route set one, it must be the same.
func behaviourDiff(before, after string) string {
	var b, a map[string]any
	if json.Unmarshal([]byte(before), &b) != nil || json.Unmarshal([]byte(after), &a) != nil {
		return "behaviour is not JSON"
	}
	rb, ra := retryOf(b), retryOf(a)
	if !equalJSON(rb, defaultRetry) && !equalJSON(rb, ra) {
		return fmt.Sprintf("retry policy %v became %v", rb, ra)
	}
	if equalJSON(rb, defaultRetry) {
		if s, _ := ra["retry_on"].(string); s != "connect-failure,refused-stream" {
			return fmt.Sprintf("the twin of a route without retries retries %v, not sbx's policy", ra)
		}
	}
	if !equalJSON(b, a) {
		return "other settings differ"
	}
	return ""
}

// retryOf removes and returns the route's retry policy.
func retryOf(m map[string]any) map[string]any {
	r, _ := m["route"].(map[string]any)
	ra, _ := r["route"].(map[string]any)
	p, _ := ra["retry_policy"].(map[string]any)
	delete(ra, "retry_policy")
	return p
}

// defaultRetry is the retry policy Istio gives a route that sets none
// (claim j in harness_test.go: the same as its default route's).
var defaultRetry = func() map[string]any {
	var m map[string]any
	if err := json.Unmarshal([]byte(`{"host_selection_retry_max_attempts":"5","num_retries":2,"retry_host_predicate":[{"name":"envoy.retry_host_predicates.previous_hosts","typed_config":{"@type":"type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],"retry_on":"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"}`), &m); err != nil {
		panic(err)
	}
	return m
}()

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// agree checks that the simulated mesh decides as Envoy's routes do.
func agree(errorf func(string, ...any), mesh *istiovs.Mesh, c Client, r Request, o Outcome, where string) {
	hr, err := http.NewRequest(http.MethodGet, "http://"+r.Host+r.Path, nil)
	if err != nil {
		errorf("%v", err)
		return
	}
	for k, v := range r.Headers {
		hr.Header[k] = v
	}
	d := sim.Decide(mesh, routeFQDN, int32(r.Port), istiovs.Client{Namespace: c.Namespace, Labels: c.Labels}, hr)
	if !o.Matched {
		// Envoy's 404 names no VirtualService.
		if d.Matched {
			errorf("%s: the simulated mesh routes (%q route %q), Envoy's routes answer 404", where, d.VirtualService, d.Route)
		}
		return
	}
	if d.VirtualService != o.VirtualService || d.Matched != o.Matched {
		errorf("%s: the simulated mesh picks %q (matched %v), Envoy's routes %q (matched %v): %s", where, d.VirtualService, d.Matched, o.VirtualService, o.Matched, o)
		return
	}
	if o.Matched && o.VirtualService != "" && d.Route != o.Route && !strings.HasPrefix(o.Route, d.Route+".") {
		errorf("%s: the simulated mesh picks route %q, Envoy's routes %q", where, d.Route, o.Route)
		return
	}
	// The destination too, where Envoy sends to one cluster: the host the
	// simulated mesh resolved and the port (the request's when the route
	// names none) make Istio's outbound cluster name.
	if dst := d.Destination; dst != nil && strings.HasPrefix(o.Cluster, "outbound|") && !strings.Contains(o.Cluster, ",") {
		port := r.Port
		if dst.GetPort().GetNumber() != 0 {
			port = int(dst.GetPort().GetNumber())
		}
		host := dst.GetHost()
		if !strings.Contains(host, ".") {
			host += ".hotrod.svc.cluster.local"
		}
		got, _, _ := strings.Cut(o.Cluster, ":") // one weighted cluster: "name:100"
		if want := fmt.Sprintf("outbound|%d|%s|%s", port, dst.GetSubset(), host); want != got {
			errorf("%s: the simulated mesh sends to %s, Envoy's routes to %s", where, want, o.Cluster)
		}
	}
}

func sandboxSpec(name string, ports []int32) *spec.Sandbox { return sandboxSpecIn(name, ports, "") }

// sandboxSpecIn is sandboxSpec with home namespace home ("" or hotrod: route's).
func sandboxSpecIn(name string, ports []int32, home string) *spec.Sandbox {
	sb := sandboxSpecRoute(name, ports)
	if home != "" && home != "hotrod" {
		sb.Spec.Local = append([]spec.Local{{Name: "api", From: spec.Workload{Kind: spec.KindDeployment, Namespace: home, Name: "api"},
			Mappings: []spec.Mapping{{Port: 8080, ToLocal: "localhost:8080"}}}}, sb.Spec.Local...)
	}
	return sb
}

func sandboxSpecRoute(name string, ports []int32) *spec.Sandbox {
	if len(ports) == 0 {
		ports = []int32{8083}
	}
	var ms []spec.Mapping
	for _, p := range ports {
		ms = append(ms, spec.Mapping{Port: p, ToLocal: fmt.Sprintf("localhost:%d", p)})
	}
	return &spec.Sandbox{Name: name, Spec: spec.Spec{Local: []spec.Local{{
		Name: "route", From: spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route"}, Mappings: ms,
	}}}}
}

// manifests renders a world as the baseline manifests sbx reads.
func manifests(t *testing.T, w World) string {
	var b strings.Builder
	b.WriteString(sbxDeployments)
	for _, s := range w.Services {
		writeDoc(t, &b, s)
	}
	for _, v := range w.VirtualServices {
		writeDoc(t, &b, v)
	}
	if w.DefaultVirtualServiceExportTo != nil {
		mc, _ := yaml.Marshal(map[string]any{"defaultVirtualServiceExportTo": w.DefaultVirtualServiceExportTo})
		writeDoc(t, &b, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}, Data: map[string]string{"mesh": string(mc)}})
	} else {
		writeDoc(t, &b, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}, Data: map[string]string{"mesh": "{}"}})
	}
	return b.String()
}

func writeDoc(t *testing.T, b *strings.Builder, obj any) {
	switch o := obj.(type) {
	case *corev1.Service:
		o = o.DeepCopy()
		o.APIVersion, o.Kind = "v1", "Service"
		obj = o
	case *istionet.VirtualService:
		o = o.DeepCopy()
		o.APIVersion, o.Kind = "networking.istio.io/v1", "VirtualService"
		obj = o
	}
	js, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n---\n")
	b.Write(y)
}

// replaceVS puts v into the world, replacing the object of its name.
func replaceVS(w *World, v *istionet.VirtualService) {
	v = v.DeepCopy()
	for i, x := range w.VirtualServices {
		if x.Namespace == v.Namespace && x.Name == v.Name {
			w.VirtualServices[i] = v
			return
		}
	}
	w.VirtualServices = append(w.VirtualServices, v)
}

func copyWorld(w World) World {
	out := w
	out.Services = slices.Clone(w.Services)
	out.VirtualServices = nil
	for _, v := range w.VirtualServices {
		out.VirtualServices = append(out.VirtualServices, v.DeepCopy())
	}
	return out
}

// applyTarget writes one planned change into the world as the API server
// would: new objects are the newest.
func applyTarget(w *World, rt cluster.RouteTarget) {
	idx := slices.IndexFunc(w.VirtualServices, func(v *istionet.VirtualService) bool {
		return v.Namespace == rt.Namespace && v.Name == rt.Name
	})
	switch {
	case rt.Delete:
		w.VirtualServices = slices.Delete(w.VirtualServices, idx, idx+1)
	case rt.Create || rt.Recreate:
		latest := time.Time{}
		for _, v := range w.VirtualServices {
			if v.CreationTimestamp.After(latest) {
				latest = v.CreationTimestamp.Time
			}
		}
		obj := rt.Object.DeepCopy()
		obj.CreationTimestamp = metav1.NewTime(latest.Add(time.Minute))
		if idx >= 0 {
			w.VirtualServices[idx] = obj
		} else {
			w.VirtualServices = append(w.VirtualServices, obj)
		}
	default:
		// An update keeps what the server set: the creation time.
		obj := rt.Object.DeepCopy()
		obj.CreationTimestamp = w.VirtualServices[idx].CreationTimestamp
		w.VirtualServices[idx] = obj
	}
}
