package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/meshreport"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// Check is one line of `sbx doctor`: what was checked, whether it holds,
// and the fix when it does not.
type Check struct {
	Name string `json:"name"`
	// Level is "ok", "warn" (works, with a limit the detail names) or
	// "fail" (sbx connect would not work).
	Level  string `json:"level"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Check levels.
const (
	LevelOK   = "ok"
	LevelWarn = "warn"
	LevelFail = "fail"
)

// DoctorOptions say what Doctor checks.
type DoctorOptions struct {
	// Namespaces to check permissions in (default: the context's).
	Namespaces []string
	// Sandbox, when set, is the spec whose workloads are resolved; its
	// home namespace is where the relay probe runs.
	Sandbox *spec.Sandbox
	// RelayImage, when set, is started as a short-lived relay (see
	// cluster.ProbeRelay) in the first namespace, once the permissions
	// there hold; ProbeTimeout bounds it (default 2 minutes).
	RelayImage   string
	ProbeTimeout time.Duration
	// Routes are the baggage key and cluster domain the sandbox's mesh
	// routes are previewed with (the sbx config's).
	Routes cluster.RouteOptions
	// Progress, when set, is told what a long check is waiting for.
	Progress func(string)
}

// Doctor checks, in order, that the API server answers, that the user has
// every permission sbx needs (cluster.RequiredAccess, asked with
// SelfSubjectAccessReviews) in the namespaces, that the cluster pulls and
// runs the relay image (o.RelayImage), that the mesh's route kind is
// served, and, with a sandbox, that each local workload resolves to a
// baseline workload and Service port. It stops after a check that makes
// the rest meaningless (an API server that does not answer).
func (c *Cluster) Doctor(ctx context.Context, o DoctorOptions) []Check {
	var out []Check
	version, err := c.serverVersion(ctx)
	if err != nil {
		return append(out, Check{Name: "API server", Level: LevelFail, Detail: explainAPIError(err, c.server, apiOp{}).Error(),
			Fix: "check the kubeconfig's server and credentials, and your network or VPN"})
	}
	out = append(out, Check{Name: "API server", Level: LevelOK, Detail: fmt.Sprintf("%s answers (Kubernetes %s)", c.server.url, version)})
	namespaces := o.Namespaces
	if len(namespaces) == 0 && c.namespace != "" {
		namespaces = []string{c.namespace}
	}
	access := c.accessChecks(ctx, namespaces)
	out = append(out, access...)
	if o.RelayImage != "" && len(namespaces) > 0 {
		out = append(out, c.relayCheck(ctx, namespaces[0], access, o))
	}
	out = append(out, c.meshCheck())
	if o.Sandbox != nil {
		out = append(out, c.specChecks(ctx, o.Sandbox, o.Routes)...)
	}
	return out
}

// permissionsIn names the permissions check of namespace ns (the relay
// probe looks for it).
func permissionsIn(ns string) string { return "permissions in " + ns }

// relayCheck starts the relay image as a short-lived relay in ns, unless
// the permissions there already failed (the probe would only repeat it).
func (c *Cluster) relayCheck(ctx context.Context, ns string, access []Check, o DoctorOptions) Check {
	name := "relay image"
	for _, a := range access {
		if a.Name == permissionsIn(ns) && a.Level != LevelOK {
			return Check{Name: name, Level: LevelWarn, Detail: o.RelayImage + ": not tried: the permissions in " + ns + " are missing",
				Fix: "fix the permissions first; sbx doctor then starts a short-lived relay to try the image"}
		}
	}
	timeout := o.ProbeTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	progress := func(ev cluster.Event) {
		if o.Progress != nil && (ev.Action == cluster.ActionWaiting || ev.Action == cluster.ActionCreated) {
			o.Progress("relay probe: " + ev.String())
		}
	}
	res, err := cluster.ProbeRelay(pctx, c.clients, cluster.ProbeOptions{Namespace: ns, Image: o.RelayImage, Holder: "sbx doctor"}, progress)
	if err != nil {
		fix := "set relayImage in the sbx config (~/.config/sbx/config.yaml) to an image the cluster can pull and run"
		var te *cluster.RelayTimeoutError
		if errors.As(err, &te) {
			fix = "see why the pod waits in the detail; a slow first pull passes on a second run"
		}
		return Check{Name: name, Level: LevelFail, Detail: o.RelayImage + ": " + explainAPIError(err, c.server, apiOp{}).Error(), Fix: fix}
	}
	return Check{Name: name, Level: LevelOK, Detail: fmt.Sprintf("%s: a relay started from it was ready in %s in %s (and is deleted)", o.RelayImage, res.Took.Round(100*time.Millisecond), ns)}
}

func (c *Cluster) serverVersion(ctx context.Context) (string, error) {
	rc := c.clients.Kube.Discovery().RESTClient()
	if rc == nil { // a fake clientset
		v, err := c.clients.Kube.Discovery().ServerVersion()
		if err != nil {
			return "", err
		}
		return v.GitVersion, nil
	}
	raw, err := rc.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", err
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("read /version: %w", err)
	}
	return v.GitVersion, nil
}

// accessChecks asks for every permission sbx needs: the namespaced ones in
// each of namespaces, the cluster-wide ones in all.
func (c *Cluster) accessChecks(ctx context.Context, namespaces []string) []Check {
	type denial struct{ what, why string }
	ask := func(a cluster.Access, ns string) (bool, error) {
		res, sub, _ := strings.Cut(a.Resource, "/")
		r, err := c.clients.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
			Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
				Namespace: ns, Verb: a.Verb, Group: a.Group, Resource: res, Subresource: sub, Name: a.Name}},
		}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return r.Status.Allowed, nil
	}
	resource := func(a cluster.Access) string {
		if a.Group == "" {
			return a.Resource
		}
		return a.Resource + "." + a.Group
	}
	var out []Check
	for _, ns := range namespaces {
		var denied []denial
		n := 0
		for _, a := range cluster.RequiredAccess {
			if a.ClusterWide {
				continue
			}
			n++
			ok, err := ask(a, ns)
			if err != nil {
				return append(out, Check{Name: permissionsIn(ns), Level: LevelFail, Detail: explainAPIError(err, c.server, apiOp{verb: "create", resource: "selfsubjectaccessreviews.authorization.k8s.io"}).Error()})
			}
			if !ok {
				denied = append(denied, denial{a.Verb + " " + resource(a), a.Why})
			}
		}
		if len(denied) == 0 {
			out = append(out, Check{Name: permissionsIn(ns), Level: LevelOK, Detail: fmt.Sprintf("all %d that sbx needs (the Role in deploy/rbac.yaml)", n)})
			continue
		}
		var list []string
		for _, d := range denied {
			list = append(list, d.what+" ("+d.why+")")
		}
		out = append(out, Check{Name: permissionsIn(ns), Level: LevelFail,
			Detail: fmt.Sprintf("%d of %d missing: %s", len(denied), n, strings.Join(list, ", ")),
			Fix:    fmt.Sprintf("ask your cluster admin to bind the Role sbx-developer of deploy/rbac.yaml to you in namespace %s", ns)})
	}
	var missing []string
	n := 0
	for _, a := range cluster.RequiredAccess {
		if !a.ClusterWide {
			continue
		}
		n++
		ok, err := ask(a, "")
		if err != nil || !ok {
			w := a.Verb + " " + resource(a)
			if a.Name != "" {
				w += " " + a.Name
			}
			if !slices.Contains(missing, w) {
				missing = append(missing, w)
			}
		}
	}
	if len(missing) == 0 {
		return append(out, Check{Name: "cluster-wide reads", Level: LevelOK, Detail: fmt.Sprintf("all %d (the ClusterRole sbx-route-reader)", n)})
	}
	return append(out, Check{Name: "cluster-wide reads", Level: LevelWarn,
		Detail: fmt.Sprintf("%d of %d missing (%s): sbx list and gc look in one namespace, routes are judged for clients in the sandbox's namespaces only, and dead routes elsewhere stay", len(missing), n, strings.Join(missing, ", ")),
		Fix:    "ask for the ClusterRole sbx-route-reader of deploy/rbac.yaml (read-only)"})
}

// meshCheck says which route kinds the API server serves: Istio's
// VirtualServices, Gateway API HTTPRoutes (with Istio or Linkerd as the
// mesh), and so how sbx can route keyed requests here.
func (c *Cluster) meshCheck() Check {
	served := func(gv, resource string) bool {
		list, err := c.clients.Kube.Discovery().ServerResourcesForGroupVersion(gv)
		if err != nil {
			return false
		}
		for _, r := range list.APIResources {
			if r.Name == resource {
				return true
			}
		}
		return false
	}
	istio := served("networking.istio.io/v1", "virtualservices")
	gateway := served("gateway.networking.k8s.io/v1", "httproutes")
	linkerd := cluster.ServesLinkerd(c.clients.Kube.Discovery())
	switch {
	case istio && gateway:
		return Check{Name: "mesh", Level: LevelOK, Detail: "Istio VirtualServices and Gateway API HTTPRoutes are served: sbx routes each Service the way CD does (mesh: auto)"}
	case istio:
		return Check{Name: "mesh", Level: LevelOK, Detail: "Istio VirtualServices (networking.istio.io/v1) are served; no Gateway API HTTPRoutes, so sbx routes with VirtualServices"}
	case linkerd && gateway:
		return Check{Name: "mesh", Level: LevelOK, Detail: "Linkerd with Gateway API HTTPRoutes: sbx routes with its own HTTPRoutes"}
	case linkerd:
		return Check{Name: "mesh", Level: LevelFail, Detail: "Linkerd is installed but the cluster serves no Gateway API HTTPRoutes (gateway.networking.k8s.io/v1), the only way Linkerd routes by header",
			Fix: "install the Gateway API CRDs (standard channel)"}
	case gateway:
		return Check{Name: "mesh", Level: LevelWarn, Detail: "Gateway API HTTPRoutes are served but neither Istio nor Linkerd was found: sbx's HTTPRoutes take effect only where a mesh implements Gateway API for Services (GAMMA)",
			Fix: "check that the cluster's mesh implements the GAMMA profile"}
	}
	return Check{Name: "mesh", Level: LevelFail, Detail: "this cluster serves neither Istio VirtualServices nor Gateway API HTTPRoutes: sbx routes keyed requests with one of them",
		Fix: "use a cluster with Istio (istioctl install) or Linkerd with the Gateway API CRDs"}
}

// specChecks resolves each local workload of sb against the cluster and
// previews its mesh routes: per mapped Service port, whether keyed
// requests would reach the sandbox from every client namespace.
func (c *Cluster) specChecks(ctx context.Context, sb *spec.Sandbox, ro cluster.RouteOptions) []Check {
	ws, err := cluster.Resolve(ctx, cluster.LiveBaseline{C: c.clients}, sb)
	if err != nil {
		return []Check{{Name: "spec " + sb.Name, Level: LevelFail, Detail: explainAPIError(err, c.server, apiOp{}).Error(),
			Fix: "fix the spec's local[].from and mappings (sbx render -f FILE shows what sbx would write)"}}
	}
	var out []Check
	for _, w := range ws {
		var ports []string
		for _, p := range w.Ports {
			var svcs []string
			for _, s := range p.Services {
				svcs = append(svcs, s.Name)
			}
			ports = append(ports, fmt.Sprintf("%d via Service %s", p.Port, strings.Join(svcs, ", ")))
		}
		out = append(out, Check{Name: "workload " + w.Local.Name, Level: LevelOK,
			Detail: fmt.Sprintf("%s %s/%s, port %s", w.Local.From.Kind, w.Local.From.Namespace, w.Local.From.Name, strings.Join(ports, "; "))})
	}
	return append(out, c.routeChecks(ctx, sb, ro)...)
}

// routeChecks are the previewed mesh routes as doctor lines.
func (c *Cluster) routeChecks(ctx context.Context, sb *spec.Sandbox, ro cluster.RouteOptions) []Check {
	st, err := cluster.PreviewRoutes(ctx, c.clients, sb, routingkey.New(), ro)
	if err != nil {
		return []Check{{Name: "routes", Level: LevelFail, Detail: explainAPIError(err, c.server, apiOp{}).Error(),
			Fix: "sbx connect would refuse the same way; the detail says what to change"}}
	}
	var out []Check
	for _, p := range st.Report {
		name := fmt.Sprintf("routes %s.%s:%d", p.Service, p.Namespace, p.Port)
		var applies, short []string
		whoBy := map[string][]string{} // clients by what keyed requests get
		for _, v := range p.Views {
			who := "clients in " + v.Clients
			if v.Clients == "" {
				who = "clients in other namespaces"
			}
			if !slices.Contains(applies, v.Applies) {
				applies = append(applies, v.Applies)
			}
			var what string
			switch v.Keyed {
			case meshreport.KeyedSandbox:
				continue
			case meshreport.KeyedPartial:
				what = "keyed requests partly reach the sandbox: " + v.Reason
			default:
				what = "keyed requests would reach the baseline: " + v.Reason
			}
			if whoBy[what] == nil {
				short = append(short, what)
			}
			whoBy[what] = append(whoBy[what], who)
		}
		for i, what := range short {
			short[i] = strings.Join(whoBy[what], ", ") + ": " + what
		}
		if len(short) == 0 {
			out = append(out, Check{Name: name, Level: LevelOK,
				Detail: "keyed requests would reach the sandbox from every client namespace (routes of " + strings.Join(applies, ", ") + ")"})
			continue
		}
		out = append(out, Check{Name: name, Level: LevelWarn, Detail: strings.Join(short, "; "),
			Fix: "sbx routes NAME shows the same once connected; the detail says what stops keyed requests"})
	}
	for _, w := range st.Warnings {
		out = append(out, Check{Name: "routes", Level: LevelWarn, Detail: w})
	}
	return out
}
