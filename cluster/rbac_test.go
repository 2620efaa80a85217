package cluster

import (
	"os"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
)

func loadRole(t *testing.T) *rbacv1.Role {
	t.Helper()
	b, err := os.ReadFile("../deploy/rbac.yaml")
	require.NoError(t, err)
	var role rbacv1.Role
	require.NoError(t, yaml.UnmarshalStrict(b, &role))
	require.Equal(t, "Role", role.Kind)
	return &role
}

func allowed(role *rbacv1.Role, verb, group, resource string) bool {
	for _, r := range role.Rules {
		if has(r.Verbs, verb) && has(r.APIGroups, group) && has(r.Resources, resource) {
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
// checks each recorded API call against deploy/rbac.yaml.
func TestRBACRoleCoversEveryCall(t *testing.T) {
	role := loadRole(t)
	rollout := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "route-rollout", "namespace": "hotrod"},
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"labels": map[string]any{"app": "route"}}}},
	}}
	f := hotrodFake(t, relayPod("p1", time.Now(), ready))
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), rollout)
	f.Dynamic = dyn
	ctx := t.Context()
	ns := []string{"hotrod"}

	sb := threeSandbox()
	_, err := Apply(ctx, f.Clients, sb, testOptions(testKey), nil)
	require.NoError(t, err)
	_, err = Apply(ctx, f.Clients, sb, testOptions(testKey), nil)
	require.NoError(t, err)
	// A Rollout-based sandbox and a spec change.
	rb := routeSandbox("alice")
	rb.Spec.Local[0].From = spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "route-rollout"}
	_, err = Apply(ctx, f.Clients, rb, testOptions(testKey2), nil)
	require.NoError(t, err)
	_, err = WaitRelay(ctx, f.Clients, WaitOptions{Namespace: "hotrod", Sandbox: "alice", Interval: time.Millisecond}, nil)
	require.NoError(t, err)
	require.NoError(t, RenewLease(ctx, f.Clients, Ref{Name: "alice", Namespaces: ns}, time.Now()))
	_, err = List(ctx, f.Clients, ns, time.Now())
	require.NoError(t, err)
	_, err = GC(ctx, f.Clients, GCOptions{Namespaces: ns, Now: time.Now().Add(time.Hour)}, nil)
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
		require.NotEmpty(t, a.GetNamespace(), "%s is cluster-wide; a namespaced Role cannot allow it", id)
		require.True(t, allowed(role, a.GetVerb(), a.GetResource().Group, res), "deploy/rbac.yaml does not allow %s", id)
		seen[id] = true
	}
	// The scenario exercised the interesting calls.
	for _, want := range []string{"create coordination.k8s.io/leases", "update networking.istio.io/virtualservices",
		"delete networking.istio.io/virtualservices", "get argoproj.io/rollouts", "list /pods", "delete apps/deployments"} {
		require.True(t, seen[want], want)
	}
}

func TestNewClients(t *testing.T) {
	c, err := NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	require.NoError(t, err)
	require.NotNil(t, c.Kube)
	require.NotNil(t, c.Istio)
	require.NotNil(t, c.Dynamic)
}
