package cluster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
)

// loadRBAC reads deploy/rbac.yaml: the namespaced Role and the
// cluster-wide read-only ClusterRole.
func loadRBAC(t *testing.T) (*rbacv1.Role, *rbacv1.ClusterRole) {
	t.Helper()
	b, err := os.ReadFile("../deploy/rbac.yaml")
	require.NoError(t, err)
	docs := strings.Split(string(b), "\n---\n")
	require.Len(t, docs, 2)
	var role rbacv1.Role
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs[0]), &role))
	require.Equal(t, "Role", role.Kind)
	var cr rbacv1.ClusterRole
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs[1]), &cr))
	require.Equal(t, "ClusterRole", cr.Kind)
	for _, r := range cr.Rules {
		for _, v := range r.Verbs {
			require.Contains(t, []string{"get", "list", "watch"}, v, "sbx-route-reader must stay read-only")
		}
	}
	return &role, &cr
}

func loadRole(t *testing.T) *rbacv1.Role {
	r, _ := loadRBAC(t)
	return r
}

func allowed(role *rbacv1.Role, verb, group, resource string) bool {
	return allowedBy(role.Rules, verb, group, resource, "")
}

// allowedBy reports whether rules allow a request; name is the object's
// name where a rule lists resourceNames.
func allowedBy(rules []rbacv1.PolicyRule, verb, group, resource, name string) bool {
	for _, r := range rules {
		if has(r.Verbs, verb) && has(r.APIGroups, group) && has(r.Resources, resource) &&
			(len(r.ResourceNames) == 0 || has(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == v || x == "*" {
			return true
		}
	}
	return false
}

// TestRBACRoleCoversEveryCall runs every operation of the package against
// fake clientsets, with namespaces given as a namespaced user must, and
// checks each recorded API call against deploy/rbac.yaml: namespaced calls
// against the Role, cluster-wide reads against the ClusterRole.
func TestRBACRoleCoversEveryCall(t *testing.T) {
	role, clusterRole := loadRBAC(t)
	rollout := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "route-rollout", "namespace": "hotrod"},
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"labels": map[string]any{"app": "route"}}}},
	}}
	f := hotrodFake(t, relayPod("p1", time.Now(), ready))
	dyn := newDynamicFake(rollout)
	f.Dynamic = dyn
	ctx := t.Context()
	ns := []string{"hotrod"}

	sb := threeSandbox()
	_, err := Apply(ctx, f.Clients, sb, testOptions(testKey), nil)
	require.NoError(t, err)
	// A daemon's own re-apply checks the relay's verifier first.
	reapply := testOptions(testKey)
	reapply.RefuseOtherVerifier = true
	_, err = Apply(ctx, f.Clients, sb, reapply, nil)
	require.NoError(t, err)
	// A Rollout-based sandbox and a spec change.
	rb := routeSandbox("alice")
	rb.Spec.Local[0].From = spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "route-rollout"}
	_, err = Apply(ctx, f.Clients, rb, testOptions(testKey2), nil)
	require.NoError(t, err)
	_, err = WaitRelay(ctx, f.Clients, WaitOptions{Ref: Ref{Namespace: "hotrod", Name: "alice"}, Interval: time.Millisecond}, nil)
	require.NoError(t, err)
	// Waiting for a rotated token's relay (the pod runs another).
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = WaitRelay(wctx, f.Clients, WaitOptions{Ref: Ref{Namespace: "hotrod", Name: "alice", TokenVerifier: testVerifier(testKey2)}, Interval: time.Millisecond}, nil)
	cancel()
	require.Error(t, err)
	require.NoError(t, RenewLease(ctx, f.Clients, Ref{Name: "alice", Namespaces: ns}, time.Now()))
	_, err = List(ctx, f.Clients, ns, time.Now())
	require.NoError(t, err)
	_, err = GC(ctx, f.Clients, GCOptions{Namespaces: ns, Now: time.Now().Add(time.Hour)}, nil)
	require.NoError(t, err)
	_, err = Leftovers(ctx, f.Clients, ns, "")
	require.NoError(t, err)
	_, err = SweepRoutes(ctx, f.Clients, ns, "", nil)
	require.NoError(t, err)

	_, err = Apply(ctx, f.Clients, sb, testOptions(testKey), nil)
	require.NoError(t, err)
	require.NoError(t, Delete(ctx, f.Clients, Ref{Name: "alice", Namespaces: ns}, nil))

	seen := map[string]bool{}
	var actions []k8stesting.Action
	actions = append(actions, f.kube.Actions()...)
	actions = append(actions, f.istio.Actions()...)
	actions = append(actions, dyn.Actions()...)
	for _, a := range actions {
		res := a.GetResource().Resource
		if sub := a.GetSubresource(); sub != "" {
			res += "/" + sub
		}
		id := a.GetVerb() + " " + a.GetResource().Group + "/" + res
		if strings.HasSuffix(res, "/status") {
			continue // the tests' own status updates
		}
		if a.GetResource().Resource == "group" || a.GetResource().Resource == "resource" {
			continue // discovery (/api, /apis): open to every authenticated user
		}
		name := ""
		if g, ok := a.(k8stesting.GetAction); ok {
			name = g.GetName()
		}
		if a.GetNamespace() == "" {
			require.True(t, allowedBy(clusterRole.Rules, a.GetVerb(), a.GetResource().Group, res, name),
				"%s is cluster-wide and the ClusterRole sbx-route-reader does not allow it", id)
		} else {
			require.True(t, allowed(role, a.GetVerb(), a.GetResource().Group, res) ||
				allowedBy(clusterRole.Rules, a.GetVerb(), a.GetResource().Group, res, name), "deploy/rbac.yaml does not allow %s in a namespace", id)
		}
		seen[id] = true
	}
	// The scenario exercised the interesting calls.
	for _, want := range []string{"create coordination.k8s.io/leases", "update networking.istio.io/virtualservices",
		"delete networking.istio.io/virtualservices", "get argoproj.io/rollouts", "list /pods", "delete apps/deployments",
		"list networking.istio.io/virtualservices", "list gateway.networking.k8s.io/httproutes", "get /configmaps",
		"get apps/deployments"} {
		require.True(t, seen[want], want)
	}
}

// TestRBACGrantsNoSecrets: sbx keeps no credential in the cluster (the
// relay holds only the token's verifier), so neither role may touch
// Secrets: a developer bound to them cannot read a colleague's baseline
// Secrets through sbx's grant, and there is no sandbox token to read.
func TestRBACGrantsNoSecrets(t *testing.T) {
	role, clusterRole := loadRBAC(t)
	for _, verb := range []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"} {
		require.False(t, allowed(role, verb, "", "secrets"), "Role sbx-developer allows %s on secrets", verb)
		require.False(t, allowedBy(clusterRole.Rules, verb, "", "secrets", ""), "ClusterRole sbx-route-reader allows %s on secrets", verb)
	}
	for _, r := range append(role.Rules, clusterRole.Rules...) {
		require.NotContains(t, r.Resources, "*", "a wildcard resource would include secrets")
	}
}

// newDynamicFake is a dynamic fake client that can list Argo Rollouts and
// Gateway API routes.
func newDynamicFake(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		RolloutGVR:   "RolloutList",
		HTTPRouteGVR: "HTTPRouteList",
		GRPCRouteGVR: "GRPCRouteList",
	}, objs...)
}

func TestNewClients(t *testing.T) {
	c, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	require.NoError(t, err)
	require.NotNil(t, c.Kube)
	require.NotNil(t, c.Istio)
	require.NotNil(t, c.Dynamic)
}

// TestRequiredAccessIsTheRBACManifest: RequiredAccess, which sbx doctor
// checks, is exactly what deploy/rbac.yaml grants.
func TestRequiredAccessIsTheRBACManifest(t *testing.T) {
	role, cr := loadRBAC(t)
	var fromYAML []Access
	expand := func(rules []rbacv1.PolicyRule, clusterWide bool) {
		for _, r := range rules {
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						for _, n := range names {
							fromYAML = append(fromYAML, Access{Verb: v, Group: g, Resource: res, Name: n, ClusterWide: clusterWide})
						}
					}
				}
			}
		}
	}
	expand(role.Rules, false)
	expand(cr.Rules, true)
	var required []Access
	for _, a := range RequiredAccess {
		require.NotEmpty(t, a.Why, "%+v says what it is for", a)
		a.Why = ""
		required = append(required, a)
	}
	require.ElementsMatch(t, fromYAML, required)
}
