package cluster

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/stretchr/testify/require"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

// gatewayRoute is an HTTPRoute or GRPCRoute in ns whose parent is Service
// parent (in parentNS when set).
func gatewayRoute(kind, ns, name, parentNS, parent string) *unstructured.Unstructured {
	ref := map[string]any{"group": "", "kind": "Service", "name": parent}
	if parentNS != "" {
		ref["namespace"] = parentNS
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"parentRefs": []any{ref}},
	}}
}

// TestGatewayAPIRoutedServiceRefused: with mesh: istio, a Service that an
// HTTPRoute or a GRPCRoute (GAMMA) routes, in its namespace or from
// another, is refused with the route's name: Istio lets those routes take the Service's
// traffic, so VirtualService routes for it would silently not apply. A
// route whose parent is another Service, or a Gateway, changes nothing.
func TestGatewayAPIRoutedServiceRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		route *unstructured.Unstructured
		want  string
	}{
		{"HTTPRoute", gatewayRoute("HTTPRoute", "hotrod", "route-http", "", "route"), "routed by HTTPRoute hotrod/route-http"},
		{"GRPCRoute", gatewayRoute("GRPCRoute", "hotrod", "route-grpc", "", "route"), "routed by GRPCRoute hotrod/route-grpc"},
		{"from another namespace", gatewayRoute("HTTPRoute", "web", "cross", "hotrod", "route"), "routed by HTTPRoute web/cross"},
		{"other Service", gatewayRoute("HTTPRoute", "hotrod", "driver-http", "", "driver"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := hotrodFake(t)
			f.Dynamic = newDynamicFake(tc.route)
			o := testOptions(testKey)
			o.Mesh = MeshIstio // auto routes such a Service with Gateway API instead
			_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "Service hotrod/route is "+tc.want)
			require.Contains(t, err.Error(), "leave route out of the sandbox")
			require.Equal(t, []string{"default"}, routeNames(getVS(t, f, "hotrod", "route")), "no route was written")
		})
	}
}

// TestGatewayAPIListForbiddenWarns: when the caller may not list
// HTTPRoutes or GRPCRoutes cluster-wide, sbx cannot know whether one
// takes the Service's traffic: it says so, naming the permission and the
// ClusterRole, instead of skipping them silently.
func TestGatewayAPIListForbiddenWarns(t *testing.T) {
	f := hotrodFake(t)
	dyn := newDynamicFake()
	dyn.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: a.GetResource().Group, Resource: a.GetResource().Resource}, "", fmt.Errorf("RBAC: denied"))
	})
	f.Dynamic = dyn
	var log eventLog
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), log.add)
	require.NoError(t, err)
	var warns []string
	for _, e := range log.events {
		if e.Action == ActionWarning {
			warns = append(warns, e.Message)
		}
	}
	all := strings.Join(warns, "\n")
	require.Contains(t, all, "may not list HTTPRoutes in all namespaces (list httproutes.gateway.networking.k8s.io at cluster scope)")
	require.Contains(t, all, "may not list GRPCRoutes in all namespaces")
	require.Contains(t, all, "ClusterRole sbx-route-reader")
}

// TestGitOpsWarning: the marks Argo CD and Flux leave on what they sync
// are recognised, and the warning names the tool and its own way out.
func TestGitOpsWarning(t *testing.T) {
	vs := func(labels, annotations map[string]string) *istionet.VirtualService {
		return &istionet.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "route", Labels: labels, Annotations: annotations}}
	}
	for _, tc := range []struct {
		name string
		v    *istionet.VirtualService
		want []string
	}{
		{"Argo CD instance label", vs(map[string]string{"argocd.argoproj.io/instance": "hotrod"}, nil), []string{"synced by Argo CD", "ignoreDifferences on /spec/http"}},
		{"Argo CD tracking annotation", vs(nil, map[string]string{"argocd.argoproj.io/tracking-id": "hotrod:networking.istio.io/VirtualService:hotrod/route"}), []string{"synced by Argo CD"}},
		{"managed-by argocd", vs(map[string]string{"app.kubernetes.io/managed-by": "ArgoCD"}, nil), []string{"synced by Argo CD"}},
		{"Flux kustomization", vs(map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}, nil), []string{"synced by Flux", "ssa: IfNotPresent"}},
		{"Flux helm release", vs(map[string]string{"helm.toolkit.fluxcd.io/name": "hotrod"}, nil), []string{"synced by Flux"}},
		{"Helm alone", vs(map[string]string{"app.kubernetes.io/managed-by": "Helm"}, nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := gitOpsWarning(tc.v)
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Contains(t, got, "VirtualService hotrod/route is ")
			for _, w := range tc.want {
				require.Contains(t, got, w)
			}
		})
	}
}

// TestRoutesOfUnknownLivenessKeptWithWarning: when another sandbox's
// Leases cannot be listed, its routes are kept (it may be alive), and the
// user is told why and who can clean up, not left to guess.
func TestRoutesOfUnknownLivenessKeptWithWarning(t *testing.T) {
	f := hotrodFake(t)
	ctx := t.Context()
	_, err := Apply(ctx, f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	f.kube.PrependReactor("list", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if l, ok := a.(k8stesting.ListAction); ok && strings.Contains(l.GetListRestrictions().Labels.String(), testKey) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", fmt.Errorf("RBAC: denied"))
		}
		return false, nil, nil
	})
	res, err := Apply(ctx, f.Clients, routeSandbox("bob"), testOptions(testKey2), nil)
	require.NoError(t, err)
	require.Contains(t, strings.Join(res.Routes.Warnings, "\n"), "could not tell whether the sandbox with routing key "+testKey+" (Leases in namespace hotrod) still exists")
	require.Contains(t, routeNames(getVS(t, f, "hotrod", "route")), "sbx-"+testKey+"-route-8083", "alice's route is kept")
}

// TestApplyWithGatewayAPI: where CD routes a Service with an HTTPRoute,
// auto routes it with sbx's own HTTPRoute next to CD's (CD's untouched),
// owned by the sandbox's Lease and labelled like every sbx object; a
// second apply changes nothing; disconnect removes it. Services CD routes
// with VirtualServices keep the Istio backend, and the result says which
// backend each Service got and why.
func TestApplyWithGatewayAPI(t *testing.T) {
	cd := gatewayRoute("HTTPRoute", "hotrod", "route-http", "", "route")
	cd.Object["spec"].(map[string]any)["rules"] = []any{map[string]any{
		"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/api"}}},
		"backendRefs": []any{map[string]any{"name": "route", "port": int64(8083)}},
	}}
	f := hotrodFake(t)
	f.Dynamic = newDynamicFake(cd)
	ctx := t.Context()
	var log eventLog
	res, err := Apply(ctx, f.Clients, threeSandbox(), testOptions(testKey), log.add)
	require.NoError(t, err)

	byService := map[string]BackendChoice{}
	for _, b := range res.Routes.Backends {
		byService[b.Service] = b
	}
	require.Equal(t, MeshGatewayAPI, byService["route"].Backend)
	require.Equal(t, "CD routes it with HTTPRoute hotrod/route-http", byService["route"].Why)
	require.Equal(t, MeshIstio, byService["frontend"].Backend, "CD routes frontend with a VirtualService: %+v", byService["frontend"])

	name := "sbx-" + testKey + "-route-8083"
	u, err := f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, ManagedByValue, u.GetLabels()[LabelManagedBy])
	require.Equal(t, "alice", u.GetLabels()[LabelSandbox])
	require.Len(t, u.GetOwnerReferences(), 1)
	require.Equal(t, "Lease", u.GetOwnerReferences()[0].Kind)
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	require.Len(t, rules, 2, "the keyed copy of /api and the keyed catch-all")
	require.Equal(t, []string{"default"}, routeNames(getVS(t, f, "hotrod", "route")), "CD's VirtualService of route is not touched")
	cdAfter, err := f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(ctx, "route-http", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, cd.Object["spec"], cdAfter.Object["spec"], "CD's HTTPRoute is not touched")
	report := false
	for _, p := range res.Routes.Report {
		if p.Service == "route" {
			report = true
			require.Equal(t, meshreport.KeyedSandbox, p.Views[0].Keyed)
			require.Contains(t, p.Views[0].Chain, "HTTPRoute hotrod/"+name+" (sbx)")
		}
	}
	require.True(t, report, "the report covers the Gateway API route")

	res, err = Apply(ctx, f.Clients, threeSandbox(), testOptions(testKey), nil)
	require.NoError(t, err)
	require.NotContains(t, res.Routes.Changed, "hotrod/"+name, "a second apply changes nothing")

	require.NoError(t, Delete(ctx, f.Clients, Ref{Name: "alice", Namespaces: []string{"hotrod"}}, nil))
	_, err = f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(ctx, name, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "disconnect removes sbx's HTTPRoute: %v", err)
	_, err = f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(ctx, "route-http", metav1.GetOptions{})
	require.NoError(t, err, "and keeps CD's")
}

// TestMeshModeRefusals: mesh: gateway-api refuses a cluster without
// HTTPRoutes and a Service CD routes with a VirtualService (one host is
// never routed both ways); a bad mode is refused by name; a Service CD
// routes with a GRPCRoute gets sbx's GRPCRoute.
func TestMeshModeRefusals(t *testing.T) {
	f := hotrodFake(t)
	o := testOptions(testKey)
	o.Mesh = MeshGatewayAPI
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.ErrorContains(t, err, "the cluster serves no HTTPRoutes")

	f = hotrodFake(t)
	f.Dynamic = newDynamicFake()
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.ErrorContains(t, err, "Service hotrod/route is routed by VirtualService hotrod/route; with mesh: gateway-api")
	require.ErrorContains(t, ValidateMesh("linkerd"), `mesh "linkerd" is not one of auto, istio, gateway-api`)

	// CD routes driver with a GRPCRoute: sbx writes a GRPCRoute of keyed
	// copies next to it, with the keyed catch-all (the mesh merges both
	// kinds of a parent into one list).
	f = hotrodFake(t)
	grpc := gatewayRoute("GRPCRoute", "hotrod", "driver-grpc", "", "driver")
	grpc.Object["spec"].(map[string]any)["rules"] = []any{map[string]any{
		"matches":     []any{map[string]any{"method": map[string]any{"type": "Exact", "service": "driver.Driver", "method": "Find"}}},
		"backendRefs": []any{map[string]any{"name": "driver", "port": int64(8082)}},
	}}
	f.Dynamic = newDynamicFake(grpc)
	o.Mesh = MeshAuto
	sb := routeSandbox("alice")
	sb.Spec.Local[0].From.Name = "driver"
	sb.Spec.Local[0].Mappings[0].Port = 8082
	res, err := Apply(t.Context(), f.Clients, sb, o, nil)
	require.NoError(t, err)
	require.Equal(t, MeshGatewayAPI, res.Routes.Backends[0].Backend)
	g, err := f.Dynamic.Resource(GRPCRouteGVR).Namespace("hotrod").Get(t.Context(), "sbx-"+testKey+"-driver-8082-grpc", metav1.GetOptions{})
	require.NoError(t, err)
	rules, _, _ := unstructured.NestedSlice(g.Object, "spec", "rules")
	require.Len(t, rules, 2, "the keyed copy of Find and the keyed catch-all (no path, ranked below every copy)")
	require.Equal(t, "sbx-keyed", rules[1].(map[string]any)["name"])
	m := rules[0].(map[string]any)["matches"].([]any)[0].(map[string]any)
	require.Equal(t, "Find", m["method"].(map[string]any)["method"])
	require.Equal(t, "baggage", m["headers"].([]any)[0].(map[string]any)["name"])
	require.Equal(t, "route-sbx-"+testKey, rules[0].(map[string]any)["backendRefs"].([]any)[0].(map[string]any)["name"])
	_, err = f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(t.Context(), "sbx-"+testKey+"-driver-8082", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "CD has no HTTPRoute to mirror, and the catch-all is the GRPCRoute's: %v", err)
	require.NoError(t, Delete(t.Context(), f.Clients, Ref{Name: "alice", Namespaces: []string{"hotrod"}}, nil))
	_, err = f.Dynamic.Resource(GRPCRouteGVR).Namespace("hotrod").Get(t.Context(), "sbx-"+testKey+"-driver-8082-grpc", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "disconnect removes sbx's GRPCRoute: %v", err)
}

// TestGatewayRouteNotAccepted: a route of sbx's that the mesh does not
// accept (status.parents[].conditions Accepted False) makes the check say
// keyed requests reach the baseline, with the mesh's reason.
func TestGatewayRouteNotAccepted(t *testing.T) {
	f := hotrodFake(t)
	f.Dynamic = newDynamicFake(gatewayRoute("HTTPRoute", "hotrod", "route-http", "", "route"))
	ctx := t.Context()
	_, err := Apply(ctx, f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	ri := f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod")
	u, err := ri.Get(ctx, "sbx-"+testKey+"-route-8083", metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, unstructured.SetNestedSlice(u.Object, []any{map[string]any{
		"parentRef":      map[string]any{"group": "", "kind": "Service", "name": "route"},
		"controllerName": "istio.io/gateway-controller",
		"conditions": []any{
			map[string]any{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "parent not allowed", "lastTransitionTime": "2026-12-07T00:00:00Z"},
			map[string]any{"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "", "lastTransitionTime": "2026-12-07T00:00:00Z"},
		},
	}}, "status", "parents"))
	_, err = ri.Update(ctx, u, metav1.UpdateOptions{})
	require.NoError(t, err)

	st, err := ReconcileRoutes(ctx, f.Clients, routeSandbox("alice"), testKey, RouteOptions{}, nil)
	require.NoError(t, err)
	require.Len(t, st.Report, 1)
	v := st.Report[0].Views[0]
	require.Equal(t, meshreport.KeyedBaseline, v.Keyed)
	require.Equal(t, "the mesh (istio.io/gateway-controller) does not accept HTTPRoute hotrod/sbx-"+testKey+"-route-8083: Accepted NotAllowedByListeners: parent not allowed", v.Reason)
}

// TestSwitchingMesh: changing mesh moves a Service's routes from one kind
// to the other and leaves none of the old kind behind.
func TestSwitchingMesh(t *testing.T) {
	f := hotrodFake(t)
	f.Dynamic = newDynamicFake()
	ctx := t.Context()
	sb := routeSandbox("alice")
	sb.Spec.Local[0].From.Name = "driver"
	sb.Spec.Local[0].Mappings[0].Port = 8082
	o := testOptions(testKey)
	o.Mesh = MeshIstio
	_, err := Apply(ctx, f.Clients, sb, o, nil)
	require.NoError(t, err)
	_, err = f.Istio.NetworkingV1().VirtualServices("hotrod").Get(ctx, "driver-sbx", metav1.GetOptions{})
	require.NoError(t, err, "mesh: istio writes sbx's own VirtualService for driver")

	o.Mesh = MeshGatewayAPI
	res, err := Apply(ctx, f.Clients, sb, o, nil)
	require.NoError(t, err)
	require.Equal(t, MeshGatewayAPI, res.Routes.Backends[0].Backend)
	_, err = f.Istio.NetworkingV1().VirtualServices("hotrod").Get(ctx, "driver-sbx", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "its VirtualService is gone: %v", err)
	_, err = f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(ctx, "sbx-"+testKey+"-driver-8082", metav1.GetOptions{})
	require.NoError(t, err)

	o.Mesh = MeshIstio
	_, err = Apply(ctx, f.Clients, sb, o, nil)
	require.NoError(t, err)
	_, err = f.Dynamic.Resource(HTTPRouteGVR).Namespace("hotrod").Get(ctx, "sbx-"+testKey+"-driver-8082", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "back on istio, the HTTPRoute is gone: %v", err)
}
