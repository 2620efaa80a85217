package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/stretchr/testify/require"
)

// ageLease moves a sandbox's Lease renewal into the past.
func ageLease(t *testing.T, f *fakeClients, ns, sandbox string, renewed time.Time) {
	t.Helper()
	l, err := f.Kube.CoordinationV1().Leases(ns).Get(t.Context(), LeaseName(sandbox), metav1.GetOptions{})
	require.NoError(t, err)
	l.Spec.RenewTime = &metav1.MicroTime{Time: renewed}
	_, err = f.Kube.CoordinationV1().Leases(ns).Update(t.Context(), l, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func TestListRenewAndGC(t *testing.T) {
	f := hotrodFake(t)
	for _, n := range []string{"alice", "bob", "carol"} {
		_, err := Apply(t.Context(), f.Clients, routeSandbox(n), testOptions(map[string]string{"alice": testKey, "bob": testKey2, "carol": "c0c0c0c0c0c0c"}[n]), nil)
		require.NoError(t, err)
	}
	now := time.Now()
	ageLease(t, f, "hotrod", "alice", now.Add(-time.Hour))      // expired long ago
	ageLease(t, f, "hotrod", "bob", now.Add(-90*time.Second))   // expired 30s ago: within grace
	ageLease(t, f, "hotrod", "carol", now.Add(-10*time.Second)) // alive

	infos, err := List(t.Context(), f.Clients, []string{"hotrod"}, now)
	require.NoError(t, err)
	require.Len(t, infos, 3)
	require.Equal(t, "alice", infos[0].Name)
	require.Equal(t, testKey, infos[0].RoutingKey)
	require.Equal(t, "hotrod", infos[0].Namespace)
	require.Equal(t, "alice@laptop", infos[0].Holder)
	require.Equal(t, "route on my laptop", infos[0].Description)
	require.Equal(t, map[string]string{"team": "backend"}, infos[0].Labels)
	require.True(t, infos[0].Expired)
	require.True(t, infos[1].Expired)
	require.False(t, infos[2].Expired)
	require.False(t, infos[2].RelayReady)

	// Cluster-wide listing finds the same.
	all, err := List(t.Context(), f.Clients, nil, now)
	require.NoError(t, err)
	require.Len(t, all, 3)

	// Dry run deletes nothing.
	f.clearActions()
	rep, err := GC(t.Context(), f.Clients, GCOptions{Namespaces: []string{"hotrod"}, Grace: 45 * time.Second, Now: now, DryRun: true}, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"alice"}, rep.Deleted)
	require.True(t, rep.DryRun)
	require.Empty(t, f.writes())

	var log eventLog
	rep, err = GC(t.Context(), f.Clients, GCOptions{Namespaces: []string{"hotrod"}, Grace: 45 * time.Second, Now: now}, log.add)
	require.NoError(t, err)
	require.Equal(t, []string{"alice"}, rep.Deleted)
	// bob's Lease expired 30 s ago: it waits out the grace, and says so.
	require.Len(t, rep.Waiting, 1)
	require.Equal(t, "bob", rep.Waiting[0].Name)
	require.Equal(t, 45*time.Second, rep.Grace)
	require.Positive(t, log.actions()[ActionDeleted])
	_, err = f.Kube.AppsV1().Deployments("hotrod").Get(t.Context(), "sbx-alice-relay", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err))
	require.NotContains(t, routeNames(getVS(t, f, "hotrod", "route")), "sbx-"+testKey+"-route-8083")

	// Renewing bob saves it from the next GC.
	require.NoError(t, RenewLease(t.Context(), f.Clients, Ref{Name: "bob", Namespaces: []string{"hotrod"}}, now))
	rep, err = GC(t.Context(), f.Clients, GCOptions{Grace: 0, Now: now.Add(30 * time.Second)}, nil)
	require.NoError(t, err)
	require.Empty(t, rep.Deleted)
	rep, err = GC(t.Context(), f.Clients, GCOptions{Grace: 0, Now: now.Add(2 * time.Minute)}, nil)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"bob", "carol"}, rep.Deleted)
	require.Equal(t, []string{"default"}, routeNames(getVS(t, f, "hotrod", "route")))

	err = RenewLease(t.Context(), f.Clients, Ref{Name: "bob", Namespaces: []string{"hotrod"}}, now)
	require.ErrorIs(t, err, ErrSandboxGone, "a Lease that is gone says so: the daemon applies again")
}

func TestApplyRenewsExpiredLease(t *testing.T) {
	f := hotrodFake(t)
	_, err := Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	ageLease(t, f, "hotrod", "alice", time.Now().Add(-time.Hour))
	_, err = Apply(t.Context(), f.Clients, routeSandbox("alice"), testOptions(testKey), nil)
	require.NoError(t, err)
	l, err := f.Kube.CoordinationV1().Leases("hotrod").Get(t.Context(), "sbx-alice", metav1.GetOptions{})
	require.NoError(t, err)
	require.True(t, leaseExpiry(l).After(time.Now()))
}

func relayPod(name string, created time.Time, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "hotrod", CreationTimestamp: metav1.NewTime(created),
			Labels: relayPodLabels("alice", testKey)},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	mutate(p)
	return p
}

// withVerifier makes the pod's relay check Hellos against v.
func withVerifier(v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Containers = []corev1.Container{{Name: "relay", Args: RelayArgs("alice", v, nil, 0, nil)}}
	}
}

func ready(p *corev1.Pod) {
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "relay", Ready: true}}
}

func TestWaitRelay(t *testing.T) {
	base := time.Now()
	o := WaitOptions{Ref: Ref{Namespace: "hotrod", Name: "alice", RoutingKey: testKey}, Interval: time.Millisecond, RelayImage: testImage}

	t.Run("image pull error fails fast with a hint", func(t *testing.T) {
		f := hotrodFake(t, relayPod("sbx-alice-relay-1", base, func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "relay", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
		}))
		_, err := WaitRelay(t.Context(), f.Clients, o, nil)
		var re *RelayError
		require.True(t, errors.As(err, &re))
		require.Equal(t, "sbx-alice-relay-1", re.Pod)
		require.ErrorContains(t, err, "relay pod hotrod/sbx-alice-relay-1 not ready: ImagePullBackOff")
		require.ErrorContains(t, err, "set relayImage in the sbx config")
		require.NotContains(t, err.Error(), "--relay-image", "sbx connect has no such flag")
		require.ErrorContains(t, err, testImage)
	})

	t.Run("image pull error names the image the pod runs", func(t *testing.T) {
		// The user config's relayImage overrides the default the waiter
		// was given; the message must name the one that failed.
		f := hotrodFake(t, relayPod("p1", base, func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{{Name: "relay", Image: "registry.example/sbx:custom"}}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "relay", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull"}}}}
		}))
		_, err := WaitRelay(t.Context(), f.Clients, o, nil)
		require.ErrorContains(t, err, "cannot pull registry.example/sbx:custom")
		require.NotContains(t, err.Error(), testImage)
	})

	t.Run("crash loop names the logs command", func(t *testing.T) {
		f := hotrodFake(t, relayPod("p1", base, func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "relay", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}
		}))
		_, err := WaitRelay(t.Context(), f.Clients, o, nil)
		require.ErrorContains(t, err, "kubectl logs -n hotrod p1")
	})

	t.Run("ready pod, newest first, terminating and other keys skipped", func(t *testing.T) {
		f := hotrodFake(t,
			relayPod("old", base.Add(-time.Minute), ready),
			relayPod("new", base, ready),
			relayPod("dying", base.Add(time.Minute), func(p *corev1.Pod) { ready(p); now := metav1.Now(); p.DeletionTimestamp = &now }),
			relayPod("otherkey", base.Add(2*time.Minute), func(p *corev1.Pod) { ready(p); p.Labels = relayPodLabels("alice", testKey2) }),
		)
		p, err := WaitRelay(t.Context(), f.Clients, o, nil)
		require.NoError(t, err)
		require.Equal(t, "new", p.Name)
	})

	// A rotation rolls the relay: the old token's pod stays ready until the
	// new one is. Waiting for the new verifier passes over the old pod
	// (its relay would refuse the new token) and returns the new one.
	t.Run("passes over the pods of another token", func(t *testing.T) {
		oldV, newV := testVerifier("old"), testVerifier("new")
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-relay", Namespace: "hotrod"},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "relay", Args: RelayArgs("alice", newV, nil, 0, nil)}}}}}}
		f := hotrodFake(t, dep,
			relayPod("old", base, func(p *corev1.Pod) { ready(p); withVerifier(oldV)(p) }),
			relayPod("new", base.Add(-time.Minute), withVerifier(newV)))
		vo := o
		vo.TokenVerifier = newV
		var log eventLog
		progress := func(e Event) {
			log.add(e)
			if e.Action == ActionWaiting {
				p, err := f.Kube.CoreV1().Pods("hotrod").Get(t.Context(), "new", metav1.GetOptions{})
				require.NoError(t, err)
				ready(p)
				_, err = f.Kube.CoreV1().Pods("hotrod").UpdateStatus(t.Context(), p, metav1.UpdateOptions{})
				require.NoError(t, err)
			}
		}
		p, err := WaitRelay(t.Context(), f.Clients, vo, progress)
		require.NoError(t, err)
		require.Equal(t, "new", p.Name)
		require.Contains(t, log.events[0].Message, "pod new:")
		require.NotContains(t, log.events[0].Message, "pod old")

		// Without a verifier (or with the old one) the old pod does.
		p, err = WaitRelay(t.Context(), f.Clients, o, nil)
		require.NoError(t, err)
		require.Equal(t, "old", p.Name)
	})

	// Another daemon applied the sandbox with its token: no pod will ever
	// run this daemon's verifier, and the wait says so at once.
	t.Run("another verifier in the Deployment fails at once", func(t *testing.T) {
		theirs := testVerifier("theirs")
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-relay", Namespace: "hotrod"},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "relay", Args: RelayArgs("alice", theirs, nil, 0, nil)}}}}}}
		f := hotrodFake(t, dep, relayPod("theirs", base, func(p *corev1.Pod) { ready(p); withVerifier(theirs)(p) }))
		vo := o
		vo.TokenVerifier = testVerifier("mine")
		_, err := WaitRelay(t.Context(), f.Clients, vo, nil)
		require.ErrorIs(t, err, ErrVerifierMismatch)
	})

	t.Run("waits, reports, then returns the pod once ready", func(t *testing.T) {
		f := hotrodFake(t, relayPod("p1", base, func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available"}}
		}))
		var log eventLog
		progress := func(e Event) {
			log.add(e)
			if e.Action == ActionWaiting {
				// The cluster makes progress while we wait.
				p, err := f.Kube.CoreV1().Pods("hotrod").Get(t.Context(), "p1", metav1.GetOptions{})
				require.NoError(t, err)
				ready(p)
				_, err = f.Kube.CoreV1().Pods("hotrod").UpdateStatus(t.Context(), p, metav1.UpdateOptions{})
				require.NoError(t, err)
			}
		}
		p, err := WaitRelay(t.Context(), f.Clients, o, progress)
		require.NoError(t, err)
		require.Equal(t, "p1", p.Name)
		require.Contains(t, log.events[0].Message, "Unschedulable")
		require.Equal(t, ActionReady, log.events[len(log.events)-1].Action)
	})

	t.Run("timeout names the last reason", func(t *testing.T) {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-relay", Namespace: "hotrod"},
			Status: appsv1.DeploymentStatus{Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue, Reason: "FailedCreate",
				Message: `pods "x" is forbidden: violates PodSecurity "restricted:latest"`}}}}
		f := hotrodFake(t, d)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		_, err := WaitRelay(ctx, f.Clients, o, func(Event) { cancel() })
		require.ErrorContains(t, err, "relay of sandbox alice in namespace hotrod not ready")
		require.ErrorContains(t, err, "FailedCreate")
		require.ErrorContains(t, err, "PodSecurity")
	})
}

// TestDeadRoutesRemoved is case 7 of issue 13: the garbage collector
// removes a sandbox's objects when its Lease goes, but not its routes
// inside VirtualServices others own. The next sweep (sbx gc), apply or
// delete of anyone removes them, and the last sandbox's delete leaves no
// ownerless VirtualService behind.
func TestDeadRoutesRemoved(t *testing.T) {
	f := hotrodFake(t)
	ctx := t.Context()
	cdBefore := map[string]string{}
	for _, n := range []string{"route", "frontend-gw", "frontend-ingress"} {
		cdBefore[n] = specJSON(t, getVS(t, f, "hotrod", n))
	}
	alice, bob := threeSandbox(), threeSandbox()
	bob.Name = "bob"
	_, err := Apply(ctx, f.Clients, alice, testOptions(testKey), nil)
	require.NoError(t, err)
	_, err = Apply(ctx, f.Clients, bob, testOptions(testKey2), nil)
	require.NoError(t, err)

	// The garbage collector takes alice: her Lease and what it owns.
	collect := func(name string) {
		lease, err := f.Kube.CoordinationV1().Leases("hotrod").Get(ctx, LeaseName(name), metav1.GetOptions{})
		require.NoError(t, err)
		_, err = deleteObjects(ctx, f.Clients, []string{"hotrod"}, name, func(string, string) bool { return false }, true, func(Event) {})
		require.NoError(t, err)
		vss, err := f.Istio.NetworkingV1().VirtualServices("hotrod").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for _, v := range vss.Items {
			if removeOwner(&v.ObjectMeta, "Lease", lease.Name) {
				_, err := f.Istio.NetworkingV1().VirtualServices("hotrod").Update(ctx, v, metav1.UpdateOptions{})
				require.NoError(t, err)
			}
		}
	}
	collect("alice")

	left, err := Leftovers(ctx, f.Clients, []string{"hotrod"}, "")
	require.NoError(t, err)
	var names []string
	for _, l := range left {
		names = append(names, l.Name+": "+l.What)
	}
	require.ElementsMatch(t, []string{"route: dead routes", "frontend-gw: dead routes", "frontend-ingress: dead routes",
		"frontend-sbx: dead routes", "driver-sbx: dead routes"}, names)

	// A sweep removes alice's routes and keeps bob's.
	swept, err := SweepRoutes(ctx, f.Clients, []string{"hotrod"}, "", nil)
	require.NoError(t, err)
	require.Len(t, swept, 5)
	require.Equal(t, []string{"sbx-" + testKey2 + "-route-8083", "default"}, routeNames(getVS(t, f, "hotrod", "route")))
	require.Equal(t, []string{"sbx-" + testKey2 + "-driver-8082", "sbx-baseline-8082"}, routeNames(getVS(t, f, "hotrod", "driver-sbx")))
	left, err = Leftovers(ctx, f.Clients, []string{"hotrod"}, "")
	require.NoError(t, err)
	require.Empty(t, left)

	// Without the sweep, the last sandbox's delete does the same, and
	// deletes sbx's own VirtualServices rather than leaving them ownerless.
	_, err = Apply(ctx, f.Clients, alice, testOptions(testKey), nil)
	require.NoError(t, err)
	collect("alice")
	require.NoError(t, Delete(ctx, f.Clients, Ref{Name: "bob", Namespaces: []string{"hotrod"}}, nil))
	for n, before := range cdBefore {
		require.Equal(t, before, specJSON(t, getVS(t, f, "hotrod", n)), n)
	}
	for _, own := range []string{"driver-sbx", "frontend-sbx"} {
		_, err := f.Istio.NetworkingV1().VirtualServices("hotrod").Get(ctx, own, metav1.GetOptions{})
		require.True(t, apierrors.IsNotFound(err), own)
	}

	// The only sandbox collected with nobody left to clean up: sbx's own
	// VirtualServices hold nothing but dead routes and have no owner;
	// `sbx list` and `sbx gc` name them as such, and the sweep deletes them.
	_, err = Apply(ctx, f.Clients, alice, testOptions(testKey), nil)
	require.NoError(t, err)
	collect("alice")
	left, err = Leftovers(ctx, f.Clients, []string{"hotrod"}, "")
	require.NoError(t, err)
	names = nil
	for _, l := range left {
		names = append(names, l.Name+": "+l.What)
	}
	require.ElementsMatch(t, []string{"route: dead routes", "frontend-gw: dead routes", "frontend-ingress: dead routes",
		"frontend-sbx: ownerless VirtualService", "driver-sbx: ownerless VirtualService"}, names)
	_, err = SweepRoutes(ctx, f.Clients, []string{"hotrod"}, "", nil)
	require.NoError(t, err)
	for _, own := range []string{"driver-sbx", "frontend-sbx"} {
		_, err := f.Istio.NetworkingV1().VirtualServices("hotrod").Get(ctx, own, metav1.GetOptions{})
		require.True(t, apierrors.IsNotFound(err), "the sweep deletes the ownerless %s", own)
	}
	for n, before := range cdBefore {
		require.Equal(t, before, specJSON(t, getVS(t, f, "hotrod", n)), n)
	}
}

// TestWaitRelayTimeout: a relay that is not ready by the deadline is
// reported as what it is (the pod's state and its latest warnings, the
// kubectl command that shows more), never as a network failure: the API
// server answered every call. A call client-go refuses because it would
// end after the deadline is no error of its own either.
func TestWaitRelayTimeout(t *testing.T) {
	base := time.Now()
	notReady := relayPod("sbx-alice-relay-1", base, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "relay", Ready: false}}
	})
	warn := func(name, reason, msg string, at time.Time) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "hotrod"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "hotrod", Name: "sbx-alice-relay-1"},
			Type:           corev1.EventTypeWarning, Reason: reason, Message: msg, LastTimestamp: metav1.NewTime(at)}
	}
	o := WaitOptions{Ref: Ref{Namespace: "hotrod", Name: "alice", RoutingKey: testKey}, Interval: 5 * time.Millisecond, RelayImage: testImage}

	t.Run("deadline", func(t *testing.T) {
		f := hotrodFake(t, notReady,
			warn("e1", "Unhealthy", "Readiness probe failed: connection refused", base.Add(-time.Minute)),
			warn("e2", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", base),
			&corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e3", Namespace: "hotrod"},
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "sbx-alice-relay-1"},
				Type:           corev1.EventTypeNormal, Reason: "Started", Message: "Started container relay"})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := WaitRelay(ctx, f.Clients, o, nil)
		var te *RelayTimeoutError
		require.ErrorAs(t, err, &te)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "nothing may read it as an unanswered call")
		msg := err.Error()
		require.Contains(t, msg, "relay of sandbox alice in namespace hotrod not ready after")
		require.Contains(t, msg, "container relay not ready (probe /readyz on port")
		require.Contains(t, msg, "its latest warnings: Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 503; Unhealthy: Readiness probe failed: connection refused")
		require.NotContains(t, msg, "Started container", "only warnings")
		require.Contains(t, msg, "`kubectl describe pod -n hotrod sbx-alice-relay-1`")
	})

	t.Run("call refused near the deadline", func(t *testing.T) {
		f := hotrodFake(t, notReady)
		start := time.Now()
		f.kube.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			if time.Since(start) > 60*time.Millisecond {
				return true, nil, errors.New("client rate limiter Wait returned an error: rate: Wait(n=1) would exceed context deadline")
			}
			return false, nil, nil
		})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := WaitRelay(ctx, f.Clients, WaitOptions{Ref: o.Ref, Interval: 50 * time.Millisecond}, nil)
		var te *RelayTimeoutError
		require.ErrorAs(t, err, &te)
		require.NotContains(t, err.Error(), "rate limiter")
		require.Contains(t, err.Error(), "container relay not ready")
	})

	t.Run("cancelled", func(t *testing.T) {
		f := hotrodFake(t, notReady)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(20*time.Millisecond, cancel)
		_, err := WaitRelay(ctx, f.Clients, o, nil)
		require.ErrorIs(t, err, context.Canceled, "a disconnect stays a cancellation")
	})
}
