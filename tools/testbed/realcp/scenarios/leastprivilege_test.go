package scenarios

import (
	"flag"
	"fmt"
	"sort"
	"strings"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
)

// unusedGrants returns the permissions of deploy/rbac.yaml
// (cluster.RequiredAccess, which a unit test holds equal to it) that no
// request of the developer in the audit log used: after the whole suite,
// every grant must have been needed by some scenario, so the Role is the
// least that works. It returns nil, nil when only some tests ran.
func unusedGrants() ([]string, error) {
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		return nil, nil
	}
	if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" {
		return nil, nil
	}
	events, err := cp.AuditEvents()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, e := range events {
		if e.User.Username != controlplane.DeveloperUser || e.ObjectRef == nil {
			continue
		}
		res := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			res += "/" + e.ObjectRef.Subresource
		}
		// A name-limited grant counts only for that name; a namespaced
		// one for a request in a namespace, a cluster-wide one (the
		// ClusterRole, bound cluster-wide) for any.
		for _, name := range []string{"", e.ObjectRef.Name} {
			used[grantKey(e.Verb, e.ObjectRef.APIGroup, res, name, true)] = true
			if e.ObjectRef.Namespace != "" {
				used[grantKey(e.Verb, e.ObjectRef.APIGroup, res, name, false)] = true
			}
		}
	}
	var unused []string
	for _, a := range cluster.RequiredAccess {
		k := grantKey(a.Verb, a.Group, a.Resource, a.Name, a.ClusterWide)
		if _, ok := notExercisedHere[k]; ok {
			continue
		}
		if !used[k] {
			unused = append(unused, fmt.Sprintf("%s %s/%s %s (cluster-wide %v: %s)", a.Verb, a.Group, a.Resource, a.Name, a.ClusterWide, a.Why))
		}
	}
	sort.Strings(unused)
	return unused, nil
}

// notExercisedHere are grants the scenarios cannot need, each with why it
// is in the Role anyway and where it is exercised instead.
var notExercisedHere = map[string]string{
	grantKey("create", "", "pods/portforward", "", false):                    "SPDY port-forward, the fallback for API servers without WebSocket port-forward (before 1.30); this one speaks WebSocket",
	grantKey("get", "", "pods", "", false):                                   "kubectl describe pod, which sbx's relay errors tell the developer to run; sbx itself lists",
	grantKey("get", "apps", "statefulsets", "", false):                       "a StatefulSet baseline workload (cluster.TestRBACRoleCoversEveryCall); the scenarios' baseline has Deployments",
	grantKey("get", "argoproj.io", "rollouts", "", false):                    "an Argo Rollout baseline workload (cluster.TestRBACRoleCoversEveryCall); no Argo Rollouts CRD here",
	grantKey("update", "", "services", "", false):                            "a spec change that changes a sandbox's Service (cluster.TestRBACRoleCoversEveryCall)",
	grantKey("list", "networking.istio.io", "virtualservices", "", false):    "routes in the sandbox's namespaces when the ClusterRole is not bound (cluster.TestApplyWithoutClusterWideRead); the scenarios' developer has it",
	grantKey("watch", "networking.istio.io", "virtualservices", "", false):   "the route watch when the ClusterRole is not bound; the scenarios' developer has it",
	grantKey("watch", "gateway.networking.k8s.io", "httproutes", "", true):   "the route watch, where Gateway API is installed; this control plane has no Gateway API CRDs",
	grantKey("get", "gateway.networking.k8s.io", "httproutes", "", false):    "sbx's own HTTPRoutes (Gateway API routing: cluster.TestApplyWithGatewayAPI); no Gateway API CRDs here",
	grantKey("list", "gateway.networking.k8s.io", "httproutes", "", false):   "sbx's own HTTPRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("create", "gateway.networking.k8s.io", "httproutes", "", false): "sbx's own HTTPRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("update", "gateway.networking.k8s.io", "httproutes", "", false): "sbx's own HTTPRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("delete", "gateway.networking.k8s.io", "httproutes", "", false): "sbx's own HTTPRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("get", "gateway.networking.k8s.io", "grpcroutes", "", false):    "sbx's own GRPCRoutes (Gateway API routing: cluster.TestMeshModeRefusals); no Gateway API CRDs here",
	grantKey("list", "gateway.networking.k8s.io", "grpcroutes", "", false):   "sbx's own GRPCRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("create", "gateway.networking.k8s.io", "grpcroutes", "", false): "sbx's own GRPCRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("update", "gateway.networking.k8s.io", "grpcroutes", "", false): "sbx's own GRPCRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("delete", "gateway.networking.k8s.io", "grpcroutes", "", false): "sbx's own GRPCRoutes (Gateway API routing); no Gateway API CRDs here",
	grantKey("watch", "gateway.networking.k8s.io", "grpcroutes", "", true):   "the route watch, where Gateway API is installed; this control plane has no Gateway API CRDs",
}

func grantKey(verb, group, resource, name string, clusterWide bool) string {
	return strings.Join([]string{verb, group, resource, name, fmt.Sprint(clusterWide)}, "|")
}
