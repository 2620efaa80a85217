package cluster

// Access is one permission sbx needs in the cluster: what deploy/rbac.yaml
// grants (a test holds the two equal), and what `sbx doctor` asks the API
// server about (SelfSubjectAccessReview).
type Access struct {
	Verb, Group, Resource string
	// Name limits it to one object (a rule's resourceNames); "" = any.
	Name string
	// ClusterWide is a permission in every namespace (the ClusterRole
	// sbx-route-reader); the others are needed in each namespace a
	// sandbox has workloads in (the Role sbx-developer).
	ClusterWide bool
	// Why says what it is for, for a refusal's explanation.
	Why string
}

// RequiredAccess is every permission sbx uses.
var RequiredAccess = []Access{
	{Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Why: "the sandbox's Lease"},
	{Verb: "list", Group: "coordination.k8s.io", Resource: "leases", Why: "the sandbox's Lease"},
	{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Why: "the sandbox's Lease"},
	{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Why: "renewing the sandbox's Lease"},
	{Verb: "delete", Group: "coordination.k8s.io", Resource: "leases", Why: "disconnect"},
	{Verb: "get", Group: "", Resource: "services", Why: "baseline and sandbox Services"},
	{Verb: "list", Group: "", Resource: "services", Why: "the Services selecting the workload"},
	{Verb: "watch", Group: "", Resource: "services", Why: "outbound access to cluster names"},
	{Verb: "create", Group: "", Resource: "services", Why: "the sandbox's Services"},
	{Verb: "update", Group: "", Resource: "services", Why: "the sandbox's Services"},
	{Verb: "delete", Group: "", Resource: "services", Why: "disconnect"},
	{Verb: "get", Group: "apps", Resource: "deployments", Why: "the baseline workload and the relay"},
	{Verb: "list", Group: "apps", Resource: "deployments", Why: "the relay"},
	{Verb: "create", Group: "apps", Resource: "deployments", Why: "the relay"},
	{Verb: "update", Group: "apps", Resource: "deployments", Why: "the relay"},
	{Verb: "delete", Group: "apps", Resource: "deployments", Why: "disconnect"},
	{Verb: "get", Group: "apps", Resource: "statefulsets", Why: "a StatefulSet baseline workload"},
	{Verb: "get", Group: "argoproj.io", Resource: "rollouts", Why: "an Argo Rollout baseline workload"},
	{Verb: "get", Group: "", Resource: "pods", Why: "kubectl describe pod, which sbx's relay errors point to"},
	{Verb: "list", Group: "", Resource: "pods", Why: "waiting for the relay pod"},
	{Verb: "create", Group: "", Resource: "pods/portforward", Why: "the tunnel"},
	{Verb: "get", Group: "", Resource: "pods/portforward", Why: "the tunnel"},
	{Verb: "list", Group: "", Resource: "events", Why: "why a relay pod is not ready"},
	{Verb: "list", Group: "networking.istio.io", Resource: "virtualservices", Why: "mesh routes"},
	{Verb: "watch", Group: "networking.istio.io", Resource: "virtualservices", Why: "keeping routes in place"},
	{Verb: "create", Group: "networking.istio.io", Resource: "virtualservices", Why: "mesh routes"},
	{Verb: "update", Group: "networking.istio.io", Resource: "virtualservices", Why: "mesh routes"},
	{Verb: "delete", Group: "networking.istio.io", Resource: "virtualservices", Why: "disconnect"},
	{Verb: "get", Group: "gateway.networking.k8s.io", Resource: "httproutes", Why: "sbx's own HTTPRoutes (Gateway API routing)"},
	{Verb: "list", Group: "gateway.networking.k8s.io", Resource: "httproutes", Why: "sbx's own HTTPRoutes (Gateway API routing)"},
	{Verb: "create", Group: "gateway.networking.k8s.io", Resource: "httproutes", Why: "sbx's own HTTPRoutes (Gateway API routing)"},
	{Verb: "update", Group: "gateway.networking.k8s.io", Resource: "httproutes", Why: "sbx's own HTTPRoutes (Gateway API routing)"},
	{Verb: "delete", Group: "gateway.networking.k8s.io", Resource: "httproutes", Why: "sbx's own HTTPRoutes (Gateway API routing)"},
	{Verb: "get", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", Why: "sbx's own GRPCRoutes (Gateway API routing)"},
	{Verb: "list", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", Why: "sbx's own GRPCRoutes (Gateway API routing)"},
	{Verb: "create", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", Why: "sbx's own GRPCRoutes (Gateway API routing)"},
	{Verb: "update", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", Why: "sbx's own GRPCRoutes (Gateway API routing)"},
	{Verb: "delete", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", Why: "sbx's own GRPCRoutes (Gateway API routing)"},
	{Verb: "list", Group: "networking.istio.io", Resource: "virtualservices", ClusterWide: true, Why: "which VirtualService applies to each client namespace"},
	{Verb: "watch", Group: "networking.istio.io", Resource: "virtualservices", ClusterWide: true, Why: "keeping routes in place"},
	{Verb: "list", Group: "gateway.networking.k8s.io", Resource: "httproutes", ClusterWide: true, Why: "Gateway API routes of the same Services"},
	{Verb: "watch", Group: "gateway.networking.k8s.io", Resource: "httproutes", ClusterWide: true, Why: "Gateway API routes of the same Services"},
	{Verb: "list", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", ClusterWide: true, Why: "Gateway API routes of the same Services"},
	{Verb: "watch", Group: "gateway.networking.k8s.io", Resource: "grpcroutes", ClusterWide: true, Why: "Gateway API routes of the same Services"},
	{Verb: "get", Group: "", Resource: "configmaps", Name: "istio", ClusterWide: true, Why: "Istio's defaultVirtualServiceExportTo"},
	{Verb: "list", Group: "coordination.k8s.io", Resource: "leases", ClusterWide: true, Why: "sbx list/gc in every namespace, and removing dead routes"},
}
