package cluster

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	istioapi "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster/istiovs"
	"github.com/sbx-dev/sbx/cluster/meshreport"
)

// AnnotationBaselineService on sbx's own VirtualService names the
// baseline Service it routes.
const AnnotationBaselineService = "sbx.dev/baseline-service"

// IsSandboxRoute reports whether a VirtualService route belongs to some
// sandbox (named "sbx-<key>-…").
func IsSandboxRoute(name string) bool { return istiovs.IsSandboxRoute(name) }

// RouteTarget is one VirtualService change sbx makes for a sandbox: its
// routes into a VirtualService CD (or anyone) owns, or sbx's own
// VirtualService of a Service, created, updated, recreated or deleted.
type RouteTarget struct {
	Namespace string
	Name      string
	// Own is true for sbx's own VirtualService of Service.
	Own     bool
	Service string
	// Create, Recreate (delete, then create again, so that Istio orders it
	// after every other VirtualService of the host) and Delete apply to
	// sbx's own VirtualService.
	Create, Recreate, Delete bool
	// Routes are this sandbox's routes in Object.
	Routes []*istioapi.HTTPRoute
	// Object is the whole VirtualService as sbx writes it (nil when it is
	// deleted).
	Object *istionet.VirtualService
	// ResourceVersion is the version the change was planned against.
	ResourceVersion string
}

// SandboxRouteRetries is the retry policy of a keyed route whose mirrored
// route sets none. Istio's default retries what the relay answers while
// the laptop is offline, after holding the request for --grace: up to
// 1.23 every 503, since 1.24 gRPC "unavailable" (and "cancelled"). The
// default would make a caller wait three grace periods for the same
// answer; connection failures (the relay pod restarting) are still
// retried.
func SandboxRouteRetries() *istioapi.HTTPRetry {
	return &istioapi.HTTPRetry{Attempts: 2, RetryOn: "connect-failure,refused-stream"}
}

// sandboxRoutes builds what the planner needs of a sandbox from its
// resolved workloads; it refuses two workloads behind one Service port and
// warns about ports the mesh cannot route by header.
func sandboxRoutes(key, home, regex string, workloads []ResolvedWorkload) (istiovs.Sandbox, []string, error) {
	sb := istiovs.Sandbox{Key: key, Regex: regex, Home: home, Retries: SandboxRouteRetries()}
	bySvc := map[string]*istiovs.Service{}
	var order []string
	claimed := map[string]string{}
	var warnings []string
	for _, w := range workloads {
		for _, p := range w.Ports {
			if !p.Routable {
				warnings = append(warnings, fmt.Sprintf("port %d of %s %s/%s is opaque TCP (Service port %q): the mesh cannot route it by the baggage header; only direct calls to %s reach the sandbox",
					p.Port, w.Local.From.Kind, w.Local.From.Namespace, w.Local.From.Name, p.Name, ServiceName(w.Local.Name, key)+"."+home))
				continue
			}
			for _, s := range p.Services {
				c := fmt.Sprintf("%s/%s/%d", s.Namespace, s.Name, p.Port)
				if other, ok := claimed[c]; ok && other != w.Local.Name {
					return sb, nil, fmt.Errorf("Service %s/%s port %d selects the pods of both local workloads %q and %q; sbx cannot send its keyed requests to two places: keep one of them in the sandbox",
						s.Namespace, s.Name, p.Port, other, w.Local.Name)
				}
				claimed[c] = w.Local.Name
				id := s.Namespace + "/" + s.Name
				svc, ok := bySvc[id]
				if !ok {
					svc = &istiovs.Service{Namespace: s.Namespace, Name: s.Name, Mapped: map[int32]istiovs.Mapping{}}
					for _, sp := range s.Spec.Ports {
						svc.Ports = append(svc.Ports, sp.Port)
					}
					bySvc[id] = svc
					order = append(order, id)
				}
				svc.Mapped[p.Port] = istiovs.Mapping{Workload: w.Local.Name, SandboxService: ServiceName(w.Local.Name, key)}
			}
		}
	}
	sort.Strings(order)
	for _, id := range order {
		sb.Services = append(sb.Services, *bySvc[id])
	}
	return sb, warnings, nil
}

// toMesh converts what the baseline holds into the planner's model.
func toMesh(r *Routing, domain string) *istiovs.Mesh {
	m := &istiovs.Mesh{Domain: domain, DefaultExportTo: r.DefaultExportTo}
	for _, v := range r.VirtualServices {
		m.VirtualServices = append(m.VirtualServices, &istiovs.VirtualService{
			Namespace: v.Namespace, Name: v.Name, Created: v.CreationTimestamp.Time,
			ResourceVersion: v.ResourceVersion, Labels: v.Labels, Annotations: v.Annotations,
			Spec: &v.Spec,
		})
	}
	return m
}

// planOptions are the planner's hooks: sbx's names and marks.
func planOptions(r *Routing, live func(key, home string) bool) istiovs.Options {
	return istiovs.Options{
		Live:    live,
		OwnName: OwnedVirtualServiceName,
		IsOwn: func(v *istiovs.VirtualService) bool {
			return v.Labels[LabelManagedBy] == ManagedByValue && v.Labels[LabelComponent] == "routes"
		},
		Ignored: func(v *istiovs.VirtualService) bool {
			return v.Annotations[AnnotationIgnore] == "true" || v.Labels[AnnotationIgnore] == "true"
		},
		ExportToUnknown: r.ExportToUnknown,
	}
}

// refuseGatewayAPI refuses Services that Gateway API routes (HTTPRoute or
// GRPCRoute with the Service as parent): Istio applies those routes to the
// Service's traffic and sbx's VirtualService routes would not reliably
// take effect.
func refuseGatewayAPI(sb istiovs.Sandbox, r *Routing) error {
	for _, s := range sb.Services {
		for _, g := range r.GatewayRoutes {
			if g.ServiceNamespace == s.Namespace && g.Service == s.Name && !g.Own {
				return fmt.Errorf("Service %s/%s is routed by %s %s/%s (Gateway API); with mesh: istio sbx routes with VirtualServices, and Istio lets Gateway API routes of a Service take its traffic, so sbx's routes would not apply: use mesh: auto or gateway-api, or leave %s out of the sandbox",
					s.Namespace, s.Name, g.Kind, g.Namespace, g.Name, s.Name)
			}
		}
	}
	return nil
}

// RoutesRefusedError: the cluster's routing does not let sbx route the
// sandbox's Services (a Gateway API route takes one's traffic, a
// VirtualService sbx must not touch); Err says which and what to do.
// Trying again changes nothing until someone changes those objects, and
// until then keyed requests reach the baseline.
type RoutesRefusedError struct{ Err error }

func (e *RoutesRefusedError) Error() string { return e.Err.Error() }
func (e *RoutesRefusedError) Unwrap() error { return e.Err }

// planRoutes works out the VirtualService changes of a sandbox against the
// routing state: the planner's plan, as objects sbx writes.
//
// owners are the sandbox's Leases by namespace, which own sbx's own
// VirtualServices while the sandbox has routes in them; leaseName finds
// the owner reference to drop when it no longer does.
func planRoutes(all istiovs.Sandbox, r *Routing, mesh, domain string, live func(key, home string) bool,
	owners map[string]metav1.OwnerReference, sandbox string) (*routePlan, error) {

	leaseName := LeaseName(sandbox)
	// Each Service is routed one way: Istio VirtualServices or sbx's own
	// Gateway API HTTPRoutes.
	sb := all
	sb.Services = nil
	var gwSvcs []istiovs.Service
	var choices []BackendChoice
	for _, s := range all.Services {
		c, err := chooseBackend(mesh, s, r, domain)
		if err != nil {
			return nil, err
		}
		choices = append(choices, c)
		if c.Backend == MeshGatewayAPI {
			gwSvcs = append(gwSvcs, s)
		} else {
			sb.Services = append(sb.Services, s)
		}
	}
	if err := refuseGatewayAPI(sb, r); err != nil {
		return nil, &RoutesRefusedError{Err: err}
	}
	var plan *istiovs.Plan
	if r.IstioServed {
		var err error
		if plan, err = istiovs.MakePlan(toMesh(r, domain), sb, planOptions(r, live)); err != nil {
			return nil, &RoutesRefusedError{Err: err}
		}
	} else {
		plan = &istiovs.Plan{}
	}
	httpRoutes, gwReport, gwWarnings, err := planGatewayRoutes(all, gwSvcs, r, sandbox, owners)
	if err != nil {
		return nil, err
	}
	byKey := map[string]*istionet.VirtualService{}
	for _, v := range r.VirtualServices {
		byKey[v.Namespace+"/"+v.Name] = v
	}
	if r.Partial != "" {
		plan.Warnings = append([]string{r.Partial}, plan.Warnings...)
	}
	var out []RouteTarget
	for _, e := range plan.Edits {
		t := RouteTarget{Namespace: e.Namespace, Name: e.Name, Own: e.Own, Service: e.Service,
			Create: e.Create, Recreate: e.Recreate, Delete: e.Delete}
		for _, h := range e.HTTP {
			if istiovs.RouteKey(h.GetName()) == sb.Key {
				t.Routes = append(t.Routes, h)
			}
		}
		live := byKey[e.Namespace+"/"+e.Name]
		if live != nil {
			t.ResourceVersion = live.ResourceVersion
		}
		switch {
		case e.Delete:
		case e.Own:
			t.Object = ownedVirtualService(e.Name, e.Namespace, e.Service, e.HTTP, live)
			if o, ok := owners[e.Namespace]; ok && len(t.Routes) > 0 {
				o.Controller = nil
				addOwner(&t.Object.ObjectMeta, o)
			} else if len(t.Routes) == 0 {
				removeOwner(&t.Object.ObjectMeta, "Lease", leaseName)
			}
		default:
			t.Object = live.DeepCopy()
			t.Object.Spec.Http = e.HTTP
			if w := gitOpsWarning(live); w != "" && len(t.Routes) > 0 {
				plan.Warnings = append(plan.Warnings, w)
			}
		}
		out = append(out, t)
	}
	return &routePlan{VS: out, Gateway: httpRoutes, Choices: choices,
		Report:   append(plan.Report, gwReport...),
		Warnings: append(plan.Warnings, gwWarnings...), Unchanged: plan.Unchanged}, nil
}

// routePlan is a sandbox's mesh routes against the routing state: the
// VirtualService changes (Istio backend), sbx's HTTPRoutes (Gateway API
// backend), how each Service is routed and why, and the report.
type routePlan struct {
	VS        []RouteTarget
	Gateway   []gwObject
	Choices   []BackendChoice
	Report    []meshreport.PortReport
	Warnings  []string
	Unchanged []string
}

// ownedVirtualService is sbx's own VirtualService of a Service: public, for
// the Service's short host (right on any cluster domain), owned by every
// sandbox with routes in it (none is its controller), so the garbage
// collector removes it with the last one's Lease.
func ownedVirtualService(name, ns, svc string, http []*istioapi.HTTPRoute, live *istionet.VirtualService) *istionet.VirtualService {

	vs := &istionet.VirtualService{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels:      map[string]string{LabelManagedBy: ManagedByValue, LabelComponent: "routes"},
			Annotations: map[string]string{AnnotationBaselineService: svc},
		},
	}
	if live != nil {
		vs.OwnerReferences = slices.Clone(live.OwnerReferences)
	}
	vs.Spec.Hosts = []string{svc}
	vs.Spec.ExportTo = []string{"*"}
	vs.Spec.Http = http
	return vs
}

// gitOpsWarning says when a VirtualService sbx adds routes to is synced by
// Argo CD or Flux: a sync replaces spec.http and removes them.
func gitOpsWarning(v *istionet.VirtualService) string {
	tool := ""
	for k, val := range v.Labels {
		switch {
		case k == "app.kubernetes.io/managed-by" && strings.EqualFold(val, "argocd"),
			k == "argocd.argoproj.io/instance":
			tool = "Argo CD"
		case strings.HasPrefix(k, "kustomize.toolkit.fluxcd.io/"), strings.HasPrefix(k, "helm.toolkit.fluxcd.io/"):
			tool = "Flux"
		}
	}
	for k := range v.Annotations {
		switch {
		case strings.HasPrefix(k, "argocd.argoproj.io/"):
			tool = "Argo CD"
		case strings.HasPrefix(k, "kustomize.toolkit.fluxcd.io/"), strings.HasPrefix(k, "helm.toolkit.fluxcd.io/"):
			tool = "Flux"
		}
	}
	if tool == "" {
		return ""
	}
	avoid := "an ignoreDifferences on /spec/http, or syncing without self-heal, avoids the churn"
	if tool == "Flux" {
		avoid = "Flux re-applies on every reconcile interval; the kustomize.toolkit.fluxcd.io/ssa: IfNotPresent annotation on the VirtualService in Git avoids the churn"
	}
	return fmt.Sprintf("VirtualService %s/%s is synced by %s: a sync replaces spec.http and removes sbx's routes; sbx puts them back within seconds while the sandbox is connected (%s)",
		v.Namespace, v.Name, tool, avoid)
}

// addOwner adds ref to meta's owners unless an owner of that kind and name
// is there (replacing its UID, which changes if the Lease was recreated).
func addOwner(meta *metav1.ObjectMeta, ref metav1.OwnerReference) bool {
	for i, o := range meta.OwnerReferences {
		if o.Kind == ref.Kind && o.Name == ref.Name && o.APIVersion == ref.APIVersion {
			if o.UID == ref.UID {
				return false
			}
			meta.OwnerReferences[i].UID = ref.UID
			return true
		}
	}
	meta.OwnerReferences = append(meta.OwnerReferences, ref)
	return true
}

// removeOwner drops the owner with ref's kind and name.
func removeOwner(meta *metav1.ObjectMeta, kind, name string) bool {
	for i, o := range meta.OwnerReferences {
		if o.Kind == kind && o.Name == name {
			meta.OwnerReferences = append(meta.OwnerReferences[:i:i], meta.OwnerReferences[i+1:]...)
			return true
		}
	}
	return false
}
