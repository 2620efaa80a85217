package cluster

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
)

const extraManifests = `
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: route-canary, namespace: hotrod}
    spec:
      selector: {app: route}
      ports: [{name: http, port: 8083}, {name: tcp-debug, port: 4000}]
  - apiVersion: networking.istio.io/v1beta1
    kind: VirtualService
    metadata: {name: combined, namespace: hotrod}
    spec:
      hosts: [route-canary, driver.hotrod.svc.cluster.local]
      http:
        - route: [{destination: {host: route-canary}}]
  - apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    metadata: {name: route-ro, namespace: hotrod}
    spec:
      workloadRef: {apiVersion: apps/v1, kind: Deployment, name: route}
`

func hotrodPlus(t *testing.T) *ManifestBaseline {
	t.Helper()
	m := hotrodManifests(t)
	extra, err := ParseManifests(strings.NewReader(extraManifests), "default")
	require.NoError(t, err)
	for ns, svcs := range extra.services {
		m.services[ns] = append(m.services[ns], svcs...)
	}
	for ns, vss := range extra.vss {
		m.vss[ns] = append(m.vss[ns], vss...)
	}
	for k, v := range extra.rollouts {
		m.rollouts[k] = v
	}
	return m
}

// A workload selected by two Services gets twins in both hosts'
// VirtualServices. A VirtualService serving several hosts needs no
// authority match on its twins: a twin copies only routes that send to
// the mapped Service, so every request it takes would have landed on the
// sandboxed workload anyway, whichever host it named.
func TestPlanSeveralServicesAndHosts(t *testing.T) {
	objs, err := Plan(t.Context(), hotrodPlus(t), routeSandbox("alice"), testOptions(testKey))
	require.NoError(t, err)
	byName := map[string]RouteTarget{}
	for _, r := range objs.Routes {
		byName[r.Name] = r
	}
	require.Contains(t, byName, "route")
	comb, ok := byName["combined"]
	require.True(t, ok, "route-canary's VirtualService")
	require.Len(t, comb.Routes, 1)
	require.Nil(t, comb.Routes[0].Match[0].Authority)
	require.Equal(t, "route-sbx-"+testKey, comb.Routes[0].Route[0].Destination.Host)
	require.Equal(t, []string{"sbx-" + testKey + "-route-8083", ""}, routeNames(comb.Object))
	require.NotContains(t, byName, "route-canary-sbx", "combined routes every request for route-canary")
}

func TestPlanOpaqueTCPPortWarns(t *testing.T) {
	sb := routeSandbox("alice")
	sb.Spec.Local[0].Mappings = append(sb.Spec.Local[0].Mappings, spec.Mapping{Port: 4000, ToLocal: "localhost:4000"})
	objs, err := Plan(t.Context(), hotrodPlus(t), sb, testOptions(testKey))
	require.NoError(t, err)
	require.Contains(t, strings.Join(objs.Warnings, "\n"), "port 4000 of Deployment hotrod/route is opaque TCP")
	require.Contains(t, RelayArgs("alice", testVerifier(testKey), objs.Workloads, 0, nil), "20002=route/4000/tcp")
	for _, r := range objs.Routes {
		for _, hr := range r.Routes {
			require.NotContains(t, hr.Name, "4000")
		}
	}
}

func TestPlanRefusesTwoWorkloadsBehindOneServicePort(t *testing.T) {
	sb := routeSandbox("alice")
	sb.Spec.Local = append(sb.Spec.Local, spec.Local{
		Name: "route2", From: spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "route-ro"},
		Mappings: []spec.Mapping{{Port: 8083, ToLocal: "localhost:18083"}},
	})
	_, err := Plan(t.Context(), hotrodPlus(t), sb, testOptions(testKey))
	require.ErrorContains(t, err, `selects the pods of both local workloads "route" and "route2"`)
}

func TestRolloutWorkloadRef(t *testing.T) {
	l, err := hotrodPlus(t).PodLabels(t.Context(), spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "route-ro"})
	require.NoError(t, err)
	require.Equal(t, "route", l["app"])
}
