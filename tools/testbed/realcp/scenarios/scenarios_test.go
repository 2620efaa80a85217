package scenarios

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"

	istioapi "istio.io/api/networking/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
)

// The control plane is the release it was built from, and any user may
// ask it its version.
func TestVersion(t *testing.T) {
	dc, err := discovery.NewDiscoveryClientForConfig(cp.Developer)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("GET /version as %s: %v", controlplane.DeveloperUser, err)
	}
	t.Logf("/version: %s (%s/%s, built %s with %s)", v.GitVersion, v.Major, v.Minor, v.BuildDate, v.GoVersion)
	if v.GitVersion != controlplane.KubernetesVersion || v.Major != "1" || v.Minor != "37" {
		t.Errorf("/version says %s (major %q, minor %q), want %s: the version ldflags (controlplane.Build) did not stamp it",
			v.GitVersion, v.Major, v.Minor, controlplane.KubernetesVersion)
	}
}

// Two control planes run side by side (two test runs on one machine):
// nothing of theirs is fixed, and closing one leaves the other alone.
func TestSecondControlPlane(t *testing.T) {
	second := controlplane.StartForTest(t, controlplane.Options{})
	if second.URL == cp.URL {
		t.Fatalf("both control planes are at %s", cp.URL)
	}
	for _, c := range []*controlplane.ControlPlane{cp, second} {
		dc, err := discovery.NewDiscoveryClientForConfig(c.Admin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dc.ServerVersion(); err != nil {
			t.Fatalf("%s: %v", c.URL, err)
		}
	}
	second.Close()
	dc, err := discovery.NewDiscoveryClientForConfig(cp.Admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ServerVersion(); err != nil {
		t.Fatalf("the shared control plane after the second one closed: %v", err)
	}
}

// A developer bound only to deploy/rbac.yaml's roles applies a sandbox
// with sbx's own code: every object passes the real API server's schema
// and strict field validation, nothing is forbidden (the audit log says),
// a second apply writes nothing (sbx's spec hashes hold against the real
// server's defaulting), and sbx's delete removes everything, routes in
// CD's VirtualServices included.
func TestDeveloperAppliesSandbox(t *testing.T) {
	e := newEnv(t, "apply", nil)
	ctx := t.Context()
	sb := e.sandbox()
	token := newToken(t)

	res, events := e.apply(sb, token)
	if n := count(events, cluster.ActionCreated); n == 0 {
		t.Fatalf("the first apply created nothing: %v", events)
	}
	d, err := e.Admin.AppsV1().Deployments(e.ns).Get(ctx, res.RelayName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("relay Deployment: %v", err)
	}
	if len(d.OwnerReferences) != 1 || d.OwnerReferences[0].Kind != "Lease" {
		t.Errorf("relay Deployment owners = %+v, want its sandbox's Lease", d.OwnerReferences)
	}
	for _, s := range res.Objects.Services {
		if _, err := e.Admin.CoreV1().Services(e.ns).Get(ctx, s.Name, metav1.GetOptions{}); err != nil {
			t.Errorf("sandbox Service %s: %v", s.Name, err)
		}
	}
	// Routes: in CD's route VirtualService, and sbx's own for frontend.
	vs, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, "route", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasSandboxRoute(vs.Spec.Http) {
		t.Errorf("CD's VirtualService route has no sandbox route: %v", routeNames(vs.Spec.Http))
	}
	if _, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, cluster.OwnedVirtualServiceName("frontend"), metav1.GetOptions{}); err != nil {
		t.Errorf("sbx's own VirtualService for frontend: %v", err)
	}

	// The same sandbox again: nothing to write.
	_, again := e.apply(sb, token)
	for _, ev := range again {
		if ev.Action == cluster.ActionCreated || ev.Action == cluster.ActionUpdated || ev.Action == cluster.ActionDeleted {
			t.Errorf("second apply of an unchanged sandbox wrote: %s", ev)
		}
	}

	// Strict validation is on: an unknown field is an error, not a warning.
	bogus := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": "strict-check"},
		"spec":     map[string]any{"ports": []any{map[string]any{"port": int64(80)}}, "bogus": true},
	}}
	_, err = e.Dev.Dynamic.Resource(corev1.SchemeGroupVersion.WithResource("services")).Namespace(e.ns).Create(ctx, bogus, metav1.CreateOptions{})
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), `unknown field "spec.bogus"`) {
		t.Errorf("a Service with an unknown field: %v, want strict validation's unknown field error", err)
	}

	list, err := cluster.List(ctx, e.Dev, []string{e.ns}, time.Now())
	if err != nil {
		t.Fatalf("cluster.List as the developer: %v", err)
	}
	if len(list) != 1 || list[0].Name != sb.Name || list[0].RoutingKey != res.Ref.RoutingKey || list[0].Expired {
		t.Errorf("cluster.List = %+v, want sandbox %s with key %s, not expired", list, sb.Name, res.Ref.RoutingKey)
	}

	if err := cluster.Delete(ctx, e.Dev, cluster.Ref{Name: sb.Name, Namespaces: []string{e.ns}}, func(ev cluster.Event) { t.Logf("delete: %s", ev) }); err != nil {
		t.Fatalf("cluster.Delete as the developer: %v", err)
	}
	if left := sandboxObjects(t, e, sb.Name); len(left) > 0 {
		t.Errorf("after cluster.Delete these are left: %v", left)
	}
	if left, err := cluster.Leftovers(ctx, e.Dev, []string{e.ns}, "cluster.local"); err != nil || len(left) > 0 {
		t.Errorf("after cluster.Delete, routes left: %+v (err %v)", left, err)
	}
}

// The relay's pod passes Pod Security "restricted": a namespace that
// enforces it admits the pod template (dry run), and the real Deployment
// and ReplicaSet controllers create the relay pod there. A pod that
// breaks the profile is refused, so the check is live.
func TestPodSecurityRestricted(t *testing.T) {
	e := newEnv(t, "restricted", map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
		// warn makes the API server warn about the Deployment's template
		// too (enforce judges pods only); any warning fails the test.
		"pod-security.kubernetes.io/warn":  "restricted",
		"pod-security.kubernetes.io/audit": "restricted",
	})
	ctx := t.Context()
	res, _ := e.apply(e.sandbox(), newToken(t))
	d, err := e.Admin.AppsV1().Deployments(e.ns).Get(ctx, res.RelayName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "relay-dry-run", Namespace: e.ns, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}
	if _, err := e.Admin.CoreV1().Pods(e.ns).Create(ctx, pod, dryRun); err != nil {
		t.Errorf("a pod from the relay's template is not admitted under restricted: %v", err)
	}
	bad := pod.DeepCopy()
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
	_, err = e.Admin.CoreV1().Pods(e.ns).Create(ctx, bad, dryRun)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
		t.Errorf("a pod with allowPrivilegeEscalation is admitted (%v): Pod Security is not enforced, the check proves nothing", err)
	}

	// The controllers' way: Deployment -> ReplicaSet -> Pod.
	p := waitRelayPod(t, e, d)
	t.Logf("the ReplicaSet controller created relay pod %s (%s)", p.Name, p.Status.Phase)
}

// Deleting only the Lease of a disconnected sandbox makes the real
// garbage collector remove the rest (ownerReferences): relay Deployment,
// its ReplicaSet and pod, the sandbox Services and sbx's own
// VirtualService. The routes sbx added to CD's VirtualServices have no
// owner; sbx's sweep (sbx gc) finds them dead and removes them, as the
// developer.
func TestLeaseDeletionCollectsSandbox(t *testing.T) {
	e := newEnv(t, "collect", nil)
	ctx := t.Context()
	sb := e.sandbox()
	res, _ := e.apply(sb, newToken(t))
	d, err := e.Admin.AppsV1().Deployments(e.ns).Get(ctx, res.RelayName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitRelayPod(t, e, d)
	before := sandboxObjects(t, e, sb.Name)
	t.Logf("the sandbox's objects: %v", before)
	for _, kind := range []string{"Deployment", "ReplicaSet", "Pod", "Service", "VirtualService"} {
		if !hasKind(before, kind) {
			t.Fatalf("no %s of the sandbox before the Lease is deleted: %v", kind, before)
		}
	}

	if err := e.Dev.Kube.CoordinationV1().Leases(e.ns).Delete(ctx, cluster.LeaseName(sb.Name), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the Lease as the developer: %v", err)
	}
	start := time.Now()
	var left []string
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		left = sandboxObjects(t, e, sb.Name)
		return len(left) == 0, nil
	})
	if err != nil {
		t.Fatalf("the garbage collector left %v %s after the Lease was deleted (%v); see %s",
			left, time.Since(start).Round(time.Second), err, cp.Logs()[controlplane.ControllerManager])
	}
	t.Logf("the garbage collector removed the sandbox's objects in %s", time.Since(start).Round(100*time.Millisecond))

	// What no owner reference reaches: sbx's routes in CD's VirtualServices.
	dead, err := cluster.Leftovers(ctx, e.Dev, []string{e.ns}, "cluster.local")
	if err != nil {
		t.Fatalf("cluster.Leftovers as the developer: %v", err)
	}
	if len(dead) == 0 {
		t.Fatal("no dead routes after the Lease went: sbx's routes in CD's VirtualServices should be left for the sweep")
	}
	t.Logf("dead routes: %+v", dead)
	swept, err := cluster.SweepRoutes(ctx, e.Dev, []string{e.ns}, "cluster.local", func(ev cluster.Event) { t.Logf("sweep: %s", ev) })
	if err != nil {
		t.Fatalf("cluster.SweepRoutes as the developer: %v", err)
	}
	if len(swept) != len(dead) {
		t.Errorf("swept %+v, want %+v", swept, dead)
	}
	if again, err := cluster.Leftovers(ctx, e.Dev, []string{e.ns}, "cluster.local"); err != nil || len(again) > 0 {
		t.Errorf("after the sweep, routes left: %+v (err %v)", again, err)
	}
	vs, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, "route", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := routeNames(vs.Spec.Http); len(got) != 1 || got[0] != "default" {
		t.Errorf("CD's VirtualService route has routes %v after the sweep, want only CD's [default]", got)
	}
}

// waitRelayPod waits for the Deployment and ReplicaSet controllers to
// create the relay's pod, failing fast when the ReplicaSet cannot.
func waitRelayPod(t *testing.T, e *env, d *appsv1.Deployment) *corev1.Pod {
	t.Helper()
	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String()
	var pod *corev1.Pod
	var why string
	err := wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		rss, err := e.Admin.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		if len(rss.Items) == 0 {
			why = "no ReplicaSet yet"
		}
		for _, rs := range rss.Items {
			for _, c := range rs.Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
					// Missing service account is transient: its controller
					// makes one in each new namespace.
					if !strings.Contains(c.Message, "serviceaccount") {
						return false, fmt.Errorf("ReplicaSet %s cannot create the relay pod: %s", rs.Name, c.Message)
					}
				}
			}
		}
		pods, err := e.Admin.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		if len(pods.Items) > 0 {
			pod = &pods.Items[0]
			return true, nil
		}
		if len(rss.Items) > 0 {
			why = "a ReplicaSet but no pod yet"
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no relay pod (%s): %v; see %s", why, err, cp.Logs()[controlplane.ControllerManager])
	}
	return pod
}

// sandboxObjects lists what is left of a sandbox in the env's namespace,
// as "Kind/name": everything with the sandbox's label, the relay's
// ReplicaSets and pods, and sbx's own VirtualServices.
func sandboxObjects(t *testing.T, e *env, sandbox string) []string {
	t.Helper()
	ctx := t.Context()
	sel := labels.Set{cluster.LabelSandbox: sandbox}.String()
	opts := metav1.ListOptions{LabelSelector: sel}
	var out []string
	add := func(kind string, names []string, err error) {
		if err != nil {
			t.Fatalf("list %s: %v", kind, err)
		}
		for _, n := range names {
			out = append(out, kind+"/"+n)
		}
	}
	leases, err := e.Admin.CoordinationV1().Leases(e.ns).List(ctx, opts)
	add("Lease", names(leases, err), err)
	deps, err := e.Admin.AppsV1().Deployments(e.ns).List(ctx, opts)
	add("Deployment", names(deps, err), err)
	rss, err := e.Admin.AppsV1().ReplicaSets(e.ns).List(ctx, opts)
	add("ReplicaSet", names(rss, err), err)
	// A pod being deleted is the node stand-in's to finish: it stops the
	// relay with SIGTERM and waits out its grace period, as a kubelet does.
	pods, err := e.Admin.CoreV1().Pods(e.ns).List(ctx, opts)
	if err == nil {
		pods.Items = slices.DeleteFunc(pods.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil })
	}
	add("Pod", names(pods, err), err)
	svcs, err := e.Admin.CoreV1().Services(e.ns).List(ctx, opts)
	add("Service", names(svcs, err), err)
	vss, err := e.AdminClients.Istio.NetworkingV1().VirtualServices(e.ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{cluster.LabelManagedBy: cluster.ManagedByValue}.String(),
	})
	add("VirtualService", names(vss, err), err)
	return out
}

// names returns the names of a typed list's items (nil on error).
func names(list runtime.Object, err error) []string {
	if err != nil {
		return nil
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		panic(err) // only typed lists are passed
	}
	var out []string
	for _, o := range items {
		m, err := meta.Accessor(o)
		if err != nil {
			panic(err)
		}
		out = append(out, m.GetName())
	}
	return out
}

func hasKind(objs []string, kind string) bool {
	for _, o := range objs {
		if strings.HasPrefix(o, kind+"/") {
			return true
		}
	}
	return false
}

func count(events []cluster.Event, a cluster.Action) int {
	n := 0
	for _, e := range events {
		if e.Action == a {
			n++
		}
	}
	return n
}

func routeNames(http []*istioapi.HTTPRoute) []string {
	var out []string
	for _, r := range http {
		out = append(out, r.GetName())
	}
	return out
}

func hasSandboxRoute(http []*istioapi.HTTPRoute) bool {
	for _, r := range http {
		if cluster.IsSandboxRoute(r.GetName()) {
			return true
		}
	}
	return false
}
