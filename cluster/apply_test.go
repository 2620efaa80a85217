package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	istionet "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
)

type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) actions() map[Action]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[Action]int{}
	for _, e := range l.events {
		out[e.Action]++
	}
	return out
}

func getVS(t *testing.T, f *fakeClients, ns, name string) *istionet.VirtualService {
	t.Helper()
	vs, err := f.Istio.NetworkingV1().VirtualServices(ns).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return vs
}

func routeNames(vs *istionet.VirtualService) []string {
	var out []string
	for _, r := range vs.Spec.Http {
		out = append(out, r.GetName())
	}
	return out
}

func specJSON(t *testing.T, vs *istionet.VirtualService) string {
	t.Helper()
	b, err := json.Marshal(&vs.Spec)
	require.NoError(t, err)
	// protojson varies whitespace between runs on purpose; compare the
	// canonical form.
	var v any
	require.NoError(t, json.Unmarshal(b, &v))
	b, err = json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestApplyCreatesAndIsIdempotent(t *testing.T) {
	f := hotrodFake(t)
	var log eventLog
	res, err := Apply(t.Context(), f.Clients, threeSandbox(), testOptions(testKey), log.add)
	require.NoError(t, err)
	require.Equal(t, testKey, res.Ref.RoutingKey)
	require.Equal(t, "hotrod", res.Ref.Namespace)
	require.Equal(t, "sbx-alice-relay", res.RelayName)
	// CD's route VirtualService, and the two gateway VirtualServices that
	// send to frontend (keyed twins for requests entering there).
	require.Equal(t, 3, log.actions()[ActionUpdated], log.events)
	require.Equal(t, 1+1+3+2, log.actions()[ActionCreated], log.events) // lease, deployment, 3 services, 2 own VSs
	require.Equal(t, 1, log.actions()[ActionWarning], "CD's route VirtualService is synced by Argo CD")

	lease, err := f.Kube.CoordinationV1().Leases("hotrod").Get(t.Context(), "sbx-alice", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotNil(t, lease.Spec.RenewTime)
	d, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, lease.UID, d.OwnerReferences[0].UID, "owned by the Lease")
	require.Equal(t, []string{"sbx-" + testKey + "-route-8083", "default"}, routeNames(getVS(t, f, "hotrod", "route")))
	own := getVS(t, f, "hotrod", "driver-sbx")
	require.Equal(t, lease.UID, own.OwnerReferences[0].UID)

	// Second apply: nothing written.
	f.clearActions()
	var log2 eventLog
	_, err = Apply(t.Context(), f.Clients, threeSandbox(), testOptions(testKey), log2.add)
	require.NoError(t, err)
	require.Empty(t, f.writes())
	require.Zero(t, log2.actions()[ActionCreated]+log2.actions()[ActionUpdated]+log2.actions()[ActionDeleted])
	require.Equal(t, 5+5, log2.actions()[ActionUnchanged], "5 objects and 5 VirtualServices with routes in place")
}

// TestApplyKeepsKeyAndRollsOnlyOnNewVerifier: a re-apply with the same
// token's verifier (a restarted daemon with its state) reuses the key and
// leaves the relay Deployment alone, so the relay does not roll; a new
// token (rotation, or a daemon that lost its state) changes the relay's
// args, and so its pod template, which rolls it.
func TestApplyKeepsKeyAndRollsOnlyOnNewVerifier(t *testing.T) {
	f := hotrodFake(t)
	o := Options{RelayImage: testImage, TokenVerifier: testVerifier("one")}
	r1, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.NoError(t, err)
	require.NoError(t, routingkey.Validate(r1.Ref.RoutingKey))
	d1, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.NoError(t, err)
	f.clearActions()
	r2, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.NoError(t, err)
	require.Equal(t, r1.Ref.RoutingKey, r2.Ref.RoutingKey)
	require.Empty(t, f.writes())
	d2, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, d1.ResourceVersion, d2.ResourceVersion)
	require.Equal(t, d1.Spec.Template, d2.Spec.Template)

	// A new token: same key, another pod template.
	o.TokenVerifier = testVerifier("two")
	r3, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.NoError(t, err)
	require.Equal(t, r1.Ref.RoutingKey, r3.Ref.RoutingKey)
	d3, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEqual(t, d1.Spec.Template, d3.Spec.Template)
	require.Equal(t, testVerifier("two"), relayVerifier(&d3.Spec.Template.Spec))
	require.Equal(t, testVerifier("one"), relayVerifier(&d1.Spec.Template.Spec))

	// Apply checks the verifier's form: a token passed by mistake, or the
	// render placeholder, never reaches the cluster.
	for _, v := range []string{"", testToken("two"), VerifierPlaceholder, strings.ToUpper(testVerifier("two"))} {
		o.TokenVerifier = v
		_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
		require.ErrorContains(t, err, "token verifier", v)
		require.ErrorContains(t, err, "a bug in the caller", v)
		require.NotContains(t, err.Error(), testToken("two"))
	}
}

// TestApplyRefusesOtherVerifier: a daemon re-applying on its own
// (RefuseOtherVerifier) does not take the sandbox back from another daemon
// that applied it with its own token since: Apply fails before writing,
// naming both verifiers by prefix. Without the option (the user connects
// again, or rotates) it takes over.
func TestApplyRefusesOtherVerifier(t *testing.T) {
	f := hotrodFake(t)
	mine, theirs := testOptions(testKey), testOptions(testKey)
	theirs.TokenVerifier = testVerifier("other daemon")
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), mine, nil)
	require.NoError(t, err)
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), theirs, nil)
	require.NoError(t, err)

	f.clearActions()
	mine.RefuseOtherVerifier = true
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), mine, nil)
	require.ErrorIs(t, err, ErrVerifierMismatch)
	var vm *VerifierMismatchError
	require.ErrorAs(t, err, &vm)
	require.Equal(t, theirs.TokenVerifier, vm.Relay)
	require.ErrorContains(t, err, "Deployment hotrod/sbx-alice-relay has --token-sha256 "+theirs.TokenVerifier[:12]+"…, this daemon's token hashes to "+mine.TokenVerifier[:12]+"…")
	require.Empty(t, f.writes(), "refused before writing anything")

	// The same verifier, or no Deployment at all, is no conflict.
	theirs.RefuseOtherVerifier = true
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), theirs, nil)
	require.NoError(t, err)
	require.NoError(t, f.Kube.AppsV1().Deployments("hotrod").Delete(t.Context(), "sbx-alice-relay", metav1.DeleteOptions{}))
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), mine, nil)
	require.NoError(t, err)
}

// TestApplyRollsRelayOnDenyChange: a changed deny list (outbound.deny)
// updates the relay Deployment on the next apply; the same list again
// writes nothing.
func TestApplyRollsRelayOnDenyChange(t *testing.T) {
	f := hotrodFake(t)
	o := testOptions(testKey)
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.NoError(t, err)

	o.RelayDeny = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	var log eventLog
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), o, log.add)
	require.NoError(t, err)
	require.Contains(t, log.events, Event{Action: ActionUpdated, Kind: "Deployment", Namespace: "hotrod", Name: "sbx-alice-relay"})
	d, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.NoError(t, err)
	args := d.Spec.Template.Spec.Containers[0].Args
	require.Equal(t, []string{"--deny", "10.0.0.0/24"}, args[len(args)-2:])

	f.clearActions()
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.NoError(t, err)
	require.Empty(t, f.writes())
}

func TestApplyUpdatesInPlaceAndPrunes(t *testing.T) {
	f := hotrodFake(t)
	_, err := Apply(t.Context(), f.Clients, threeSandbox(), testOptions(testKey), nil)
	require.NoError(t, err)
	cdBefore := specJSON(t, getVS(t, f, "hotrod", "route"))

	// Drop driver, change the frontend's local port (no cluster change).
	sb := threeSandbox()
	sb.Spec.Local = sb.Spec.Local[:2]
	sb.Spec.Local[0].Mappings[0].ToLocal = "localhost:9090"
	f.clearActions()
	var log eventLog
	_, err = Apply(t.Context(), f.Clients, sb, testOptions(testKey), log.add)
	require.NoError(t, err)
	w := f.writes()
	require.Contains(t, w, "update deployments hotrod/sbx-alice-relay")
	require.Contains(t, w, "delete services hotrod/driver-sbx-"+testKey)
	require.Contains(t, w, "delete virtualservices hotrod/driver-sbx")
	require.Len(t, w, 3, w)
	d, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotContains(t, strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "), "driver")
	require.Equal(t, cdBefore, specJSON(t, getVS(t, f, "hotrod", "route")))

	// A new routing key: new Services and routes, the old ones go.
	f.clearActions()
	_, err = Apply(t.Context(), f.Clients, sb, testOptions(testKey2), nil)
	require.NoError(t, err)
	require.Equal(t, []string{"sbx-" + testKey2 + "-route-8083", "default"}, routeNames(getVS(t, f, "hotrod", "route")))
	svcs, err := f.Kube.CoreV1().Services("hotrod").List(t.Context(), metav1.ListOptions{LabelSelector: sandboxSelector("alice")})
	require.NoError(t, err)
	var names []string
	for _, s := range svcs.Items {
		names = append(names, s.Name)
	}
	require.ElementsMatch(t, []string{"frontend-sbx-" + testKey2, "route-sbx-" + testKey2}, names)
	fe := getVS(t, f, "hotrod", "frontend-sbx")
	require.Equal(t, []string{"sbx-" + testKey2 + "-frontend-8080", "sbx-baseline-8080"}, routeNames(fe))
}

func TestSharedVirtualServiceRestoredByteForByte(t *testing.T) {
	f := hotrodFake(t)
	before := specJSON(t, getVS(t, f, "hotrod", "route"))
	beforeMeta := getVS(t, f, "hotrod", "route").ObjectMeta
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	_, err = Apply(t.Context(), f.Clients, routeSandbox("bob"), testOptions(testKey2), nil)
	require.NoError(t, err)
	vs := getVS(t, f, "hotrod", "route")
	require.Equal(t, []string{"sbx-" + testKey + "-route-8083", "sbx-" + testKey2 + "-route-8083", "default"}, routeNames(vs))
	require.Equal(t, beforeMeta.Labels, vs.Labels)
	require.Empty(t, vs.OwnerReferences, "CD's object is never owned by a sandbox")

	// Re-applying alice does not reorder: the twins of one route may come
	// in any order (none matches another's key), so both stay put.
	f.clearActions()
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	require.Empty(t, f.writes())

	require.NoError(t, Delete(t.Context(), f.Clients, Ref{Name: "alice", Namespaces: []string{"hotrod"}}, nil))
	require.Equal(t, []string{"sbx-" + testKey2 + "-route-8083", "default"}, routeNames(getVS(t, f, "hotrod", "route")))
	require.NoError(t, Delete(t.Context(), f.Clients, Ref{Name: "bob"}, nil))
	require.Equal(t, before, specJSON(t, getVS(t, f, "hotrod", "route")))
}

func TestTwoSandboxesShareOwnedVirtualService(t *testing.T) {
	f := hotrodFake(t)
	sbA, sbB := threeSandbox(), threeSandbox()
	sbB.Name = "bob"
	_, err := Apply(t.Context(), f.Clients, sbA, testOptions(testKey), nil)
	require.NoError(t, err)
	_, err = Apply(t.Context(), f.Clients, sbB, testOptions(testKey2), nil)
	require.NoError(t, err)
	own := getVS(t, f, "hotrod", "driver-sbx")
	require.Equal(t, []string{"sbx-" + testKey + "-driver-8082", "sbx-" + testKey2 + "-driver-8082", "sbx-baseline-8082"}, routeNames(own))
	require.Len(t, own.OwnerReferences, 2, "the garbage collector keeps it while either Lease exists")
	// Both sandboxes' relays run side by side.
	for _, n := range []string{"sbx-alice-relay", "sbx-bob-relay"} {
		_, err := f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), n, metav1.GetOptions{})
		require.NoError(t, err)
	}

	require.NoError(t, Delete(t.Context(), f.Clients, Ref{Name: "alice", Namespaces: []string{"hotrod"}}, nil))
	own = getVS(t, f, "hotrod", "driver-sbx")
	require.Equal(t, []string{"sbx-" + testKey2 + "-driver-8082", "sbx-baseline-8082"}, routeNames(own))
	require.Len(t, own.OwnerReferences, 1)
	require.Equal(t, "sbx-bob", own.OwnerReferences[0].Name)

	require.NoError(t, Delete(t.Context(), f.Clients, Ref{Name: "bob", Namespaces: []string{"hotrod"}}, nil))
	_, err = f.Istio.NetworkingV1().VirtualServices("hotrod").Get(t.Context(), "driver-sbx", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the last sandbox out removes sbx's VirtualService")
	for _, list := range []func() (int, error){
		func() (int, error) {
			l, err := f.Kube.AppsV1().Deployments("hotrod").List(t.Context(), metav1.ListOptions{LabelSelector: LabelManagedBy + "=sbx"})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := f.Kube.CoreV1().Services("hotrod").List(t.Context(), metav1.ListOptions{LabelSelector: LabelManagedBy + "=sbx"})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := f.Kube.CoordinationV1().Leases("hotrod").List(t.Context(), metav1.ListOptions{LabelSelector: LabelManagedBy + "=sbx"})
			return len(l.Items), err
		},
	} {
		n, err := list()
		require.NoError(t, err)
		require.Zero(t, n)
	}
	err = Delete(t.Context(), f.Clients, Ref{Name: "bob", Namespaces: []string{"hotrod"}}, nil)
	require.ErrorIs(t, err, ErrSandboxNotFound)
}

// TestConcurrentAppliesRetryOnConflict applies many sandboxes at once to
// the same VirtualServices. The fake enforces resourceVersions like the API
// server, and a reactor injects extra conflicts; every route must land and
// CD's route must survive.
func TestConcurrentAppliesRetryOnConflict(t *testing.T) {
	f := hotrodFake(t)
	var injected, conflicts atomic.Int64
	f.istio.PrependReactor("update", "virtualservices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if injected.Add(1)%3 == 0 {
			conflicts.Add(1)
			return true, nil, apierrors.NewConflict(istionet.Resource("virtualservices"), "x", fmt.Errorf("injected"))
		}
		return false, nil, nil
	})
	const n = 6
	keys := make([]string, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		k := routingkey.New()
		keys[i] = k
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb := threeSandbox()
			sb.Name = fmt.Sprintf("dev%d", i)
			_, errs[i] = Apply(t.Context(), f.Clients, sb, testOptions(k), nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Positive(t, conflicts.Load())
	for _, vsName := range []string{"route", "driver-sbx", "frontend-sbx"} {
		vs := getVS(t, f, "hotrod", vsName)
		names := strings.Join(routeNames(vs), ",")
		for _, k := range keys {
			require.Contains(t, names, "sbx-"+k+"-", vsName)
		}
		require.Len(t, vs.Spec.Http, n+1, names)
	}
	require.Equal(t, "default", routeNames(getVS(t, f, "hotrod", "route"))[n])
	require.Len(t, getVS(t, f, "hotrod", "driver-sbx").OwnerReferences, n)

	// And concurrent deletes leave CD's object as it was.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Delete(t.Context(), f.Clients, Ref{Name: fmt.Sprintf("dev%d", i), Namespaces: []string{"hotrod"}}, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, []string{"default"}, routeNames(getVS(t, f, "hotrod", "route")))
}

func TestApplyRefusesIgnoredVirtualService(t *testing.T) {
	m := hotrodManifests(t)
	objs := m.Objects()
	for _, o := range objs {
		if vs, ok := o.(*istionet.VirtualService); ok && vs.Name == "route" {
			vs.Annotations = map[string]string{AnnotationIgnore: "true"}
		}
	}
	f := newFake(t, objs...)
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.ErrorContains(t, err, `VirtualService hotrod/route routes Service hotrod/route and is marked sbx.dev/ignore: "true"`)
	require.False(t, strings.HasPrefix(err.Error(), "sandbox alice:"), "the caller names the sandbox: %v", err)
	require.Empty(t, f.writes(), "nothing is written when the plan is refused")
}

func TestApplyMultiNamespace(t *testing.T) {
	m := hotrodManifests(t)
	objs := m.Objects()
	pay, err := ParseManifests(strings.NewReader(`
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: billing, namespace: payments}
spec:
  selector: {matchLabels: {app: billing}}
  template:
    metadata: {labels: {app: billing}}
    spec: {containers: [{name: b, image: b}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: payments}
spec:
  selector: {app: billing}
  ports: [{name: http, port: 9000}]
`), "default")
	require.NoError(t, err)
	f := newFake(t, append(objs, pay.Objects()...)...)
	sb := routeSandbox("alice")
	sb.Spec.Local = append(sb.Spec.Local, spec.Local{
		Name: "billing", From: spec.Workload{Kind: spec.KindStatefulSet, Namespace: "payments", Name: "billing"},
		Mappings: []spec.Mapping{{Port: 9000, ToLocal: "localhost:9000"}},
	})
	res, err := Apply(t.Context(), f.Clients, sb, testOptions(testKey), nil)
	require.NoError(t, err)
	require.Equal(t, []string{"hotrod", "payments"}, res.Objects.Namespaces)

	// One relay, in the first namespace; the billing Service lives next to
	// it and the payments VirtualService routes across namespaces to it.
	_, err = f.Kube.CoreV1().Services("hotrod").Get(t.Context(), "billing-sbx-"+testKey, metav1.GetOptions{})
	require.NoError(t, err)
	vs := getVS(t, f, "payments", "billing-sbx")
	require.Equal(t, "billing-sbx-"+testKey+".hotrod.svc.cluster.local", vs.Spec.Http[0].Route[0].Destination.Host)
	payLease, err := f.Kube.CoordinationV1().Leases("payments").Get(t.Context(), "sbx-alice", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, payLease.UID, vs.OwnerReferences[0].UID, "owned by the Lease of its own namespace")
	home, err := f.Kube.CoordinationV1().Leases("hotrod").Get(t.Context(), "sbx-alice", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "hotrod,payments", home.Annotations[AnnotationNamespaces])

	// Dropping the payments workload prunes its namespace.
	f.clearActions()
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	_, err = f.Kube.CoordinationV1().Leases("payments").Get(t.Context(), "sbx-alice", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err))
	_, err = f.Istio.NetworkingV1().VirtualServices("payments").Get(t.Context(), "billing-sbx", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err))
	home, err = f.Kube.CoordinationV1().Leases("hotrod").Get(t.Context(), "sbx-alice", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "hotrod", home.Annotations[AnnotationNamespaces])

	// Delete without namespaces finds everything through the Leases.
	_, err = Apply(t.Context(), f.Clients, sb, testOptions(testKey), nil)
	require.NoError(t, err)
	require.NoError(t, Delete(t.Context(), f.Clients, Ref{Name: "alice"}, nil))
	for _, ns := range []string{"hotrod", "payments"} {
		l, err := f.Kube.CoordinationV1().Leases(ns).List(t.Context(), metav1.ListOptions{})
		require.NoError(t, err)
		require.Empty(t, l.Items)
	}
	_, err = f.Istio.NetworkingV1().VirtualServices("payments").Get(t.Context(), "billing-sbx", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err))
}

func TestApplyRefusesForeignObject(t *testing.T) {
	f := hotrodFake(t)
	foreign := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-relay", Namespace: "hotrod"}}
	_, err := f.Kube.AppsV1().Deployments("hotrod").Create(t.Context(), foreign, metav1.CreateOptions{})
	require.NoError(t, err)
	o := testOptions(testKey)
	o.RefuseOtherVerifier = true // not a verifier conflict: not sbx's Deployment
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), o, nil)
	require.ErrorContains(t, err, "Deployment hotrod/sbx-alice-relay exists and does not belong to sbx sandbox alice")
}

func TestApplyErrorsFromTheLiveBaseline(t *testing.T) {
	f := hotrodFake(t)
	sb := routeSandbox("alice")
	sb.Spec.Local[0].From.Name = "routr"
	_, err := Apply(t.Context(), f.Clients, sb, testOptions(testKey), nil)
	require.ErrorContains(t, err, "spec.local[0]: Deployment hotrod/routr not found: check spec.local[].from")
	require.NotContains(t, err.Error(), "sandbox alice", "the caller names the sandbox; both doing it stutters")

	// No Istio in the cluster.
	f = hotrodFake(t)
	f.istio.PrependReactor("list", "virtualservices", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(istionet.Resource("virtualservices"), "")
	})
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.ErrorContains(t, err, "the cluster serves no Istio VirtualServices (networking.istio.io/v1) to route Service hotrod/route with: install Istio")
}

// TestClusterHoldsOnlyTheVerifier: what Apply writes, logs and renders
// carries the token's verifier and never the token, and no Secret: a
// colleague who may read everything in the namespace learns the hash only.
func TestClusterHoldsOnlyTheVerifier(t *testing.T) {
	f := hotrodFake(t)
	o := testOptions(testKey)
	res, err := Apply(t.Context(), f.Clients, threeSandbox(), o, nil)
	require.NoError(t, err)
	var out strings.Builder
	slog.New(slog.NewTextHandler(&out, nil)).Info("applied", "result", res, "options", o)
	require.NoError(t, res.Objects.WriteYAML(&out))
	for _, a := range f.kube.Actions() {
		require.NotEqual(t, "secrets", a.GetResource().Resource, "sbx makes no Secret call: %s", a)
		if c, ok := a.(k8stesting.CreateAction); ok {
			b, err := json.Marshal(c.GetObject())
			require.NoError(t, err)
			out.Write(b)
		}
	}
	for _, obj := range res.Objects.List() {
		_, isSecret := obj.(*corev1.Secret)
		require.False(t, isSecret)
	}
	require.NotContains(t, out.String(), testToken(testKey))
	require.Contains(t, out.String(), "--token-sha256")
	require.Contains(t, out.String(), o.TokenVerifier)
}

// Without cluster-wide read of VirtualServices, sbx plans from the
// sandbox's namespaces and says which permission would show the rest.
func TestApplyWithoutClusterWideRead(t *testing.T) {
	f := hotrodFake(t)
	f.istio.PrependReactor("list", "virtualservices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "" {
			return true, nil, apierrors.NewForbidden(istionet.Resource("virtualservices"), "", fmt.Errorf("RBAC: denied"))
		}
		return false, nil, nil
	})
	var log eventLog
	res, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), log.add)
	require.NoError(t, err)
	var warns []string
	for _, e := range log.events {
		if e.Action == ActionWarning {
			warns = append(warns, e.Message)
		}
	}
	require.Contains(t, strings.Join(warns, "\n"), "may not list VirtualServices in all namespaces")
	require.Contains(t, strings.Join(warns, "\n"), "ClusterRole sbx-route-reader")
	require.Equal(t, []string{"sbx-" + testKey + "-route-8083", "default"}, routeNames(getVS(t, f, "hotrod", "route")))
	require.NotEmpty(t, res.Routes.Report)
}
