package live

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/stretchr/testify/require"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/kube/kubetest"
	"github.com/sbx-dev/sbx/cluster/spec"
)

func TestClassifyAPIError(t *testing.T) {
	leases := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	refused := &url.Error{Op: "Get", URL: "https://api:6443/x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	cases := []struct {
		name string
		err  error
		want apiCause
	}{
		{"forbidden", fmt.Errorf("list sbx Leases in all namespaces: %w", apierrors.NewForbidden(leases, "", errors.New("no RBAC"))), causeForbidden},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), causeUnauthorized},
		{"refused", fmt.Errorf("list: %w", refused), causeUnreachable},
		{"deadline", fmt.Errorf("list: %w", context.DeadlineExceeded), causeUnreachable},
		{"dns", &url.Error{Op: "Get", URL: "https://api:6443/x", Err: &net.DNSError{Err: "no such host", Name: "api", IsNotFound: true}}, causeUnreachable},
		{"client timeout", &url.Error{Op: "Get", URL: "https://api:6443/x", Err: timeoutError{}}, causeUnreachable},
		// A url.Error is a net.Error whatever it wraps: a credential
		// plugin that failed is not the network.
		{"credential plugin", &url.Error{Op: "Get", URL: "https://api:6443/x", Err: errors.New("getting credentials: exec: executable gke-gcloud-auth-plugin not found")}, causeOther},
		{"plain HTTP server", &url.Error{Op: "Get", URL: "https://api:6443/x", Err: errors.New("http: server gave HTTP response to HTTPS client")}, causeOther},
		{"canceled", &url.Error{Op: "Get", URL: "https://api", Err: context.Canceled}, causeOther},
		{"untrusted certificate", &url.Error{Op: "Get", URL: "https://api", Err: x509.UnknownAuthorityError{}}, causeOther},
		{"not found", apierrors.NewNotFound(leases, "x"), causeOther},
		{"server timeout", apierrors.NewServerTimeout(leases, "list", 1), causeOther},
		{"plain", errors.New("Deployment hotrod/rout not found"), causeOther},
		{"nil", nil, causeOther},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, classifyAPIError(tc.err))
		})
	}
}

// timeoutError is a net.Error that timed out, as net/http's
// "TLS handshake timeout" is.
type timeoutError struct{}

func (timeoutError) Error() string   { return "net/http: TLS handshake timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// forbiddenCluster is a kubeCluster over fake clientsets whose API server
// refuses verb on resource (RBAC), with the context's namespace ns.
func forbiddenCluster(t *testing.T, ns, verb string, gr schema.GroupResource) *Cluster {
	k := kubefake.NewClientset()
	k.PrependReactor(verb, gr.Resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(gr, "", fmt.Errorf("User \"jo\" cannot %s resource %q", verb, gr.Resource))
	})
	c := NewFromKube(&kube.Cluster{
		REST: &rest.Config{Host: "https://api.staging:6443"}, Kube: k, Istio: istiofake.NewSimpleClientset(),
		Namespace: ns, Context: "staging",
	}, Options{})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestForbiddenHints: a refusal of the API server (RBAC) is explained as
// one, naming the resource refused and where, never as a network trouble.
func TestForbiddenHints(t *testing.T) {
	leases := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	deployments := schema.GroupResource{Group: "apps", Resource: "deployments"}
	ctx := context.Background()
	cases := []struct {
		name string
		call func(c *Cluster) error
		ns   string // the context's namespace
		gr   schema.GroupResource
		verb string
		want []string
	}{
		{"list all namespaces", func(c *Cluster) error { _, err := c.List(ctx, ""); return err }, "", leases, "list",
			[]string{"`kubectl --context staging auth can-i list leases.coordination.k8s.io --all-namespaces`", "ClusterRole sbx-route-reader in deploy/rbac.yaml", "pass -n NAMESPACE"}},
		{"list falls back to the context's namespace", func(c *Cluster) error { _, err := c.List(ctx, ""); return err }, "team", leases, "list",
			[]string{"`kubectl --context staging auth can-i list leases.coordination.k8s.io -n team`"}},
		{"gc all namespaces", func(c *Cluster) error { _, err := c.GC(ctx, "", false); return err }, "", leases, "list",
			[]string{"`kubectl --context staging auth can-i list leases.coordination.k8s.io --all-namespaces`", "pass -n NAMESPACE"}},
		{"delete in its namespaces", func(c *Cluster) error {
			return c.Delete(ctx, cluster.Ref{Name: "alice", RoutingKey: "aaaaaaaaaaaaa", Namespace: "hotrod", Namespaces: []string{"hotrod"}})
		}, "", deployments, "list",
			[]string{"may not do this with deployments.apps", "`kubectl --context staging auth can-i --list -n hotrod`"}},
		{"apply", func(c *Cluster) error {
			sb := testSpec("alice", "localhost:1")
			_, err := c.Apply(ctx, &sb, cluster.Options{RoutingKey: "aaaaaaaaaaaaa", RelayImage: "relay:1"}, nil)
			var pe interface{ IsPermanent() bool }
			require.ErrorAs(t, err, &pe, "a refusal is the user's to fix, not retried")
			return err
		}, "", leases, "get",
			[]string{"may not do this with leases.coordination.k8s.io", "`kubectl --context staging auth can-i --list -n hotrod`"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(forbiddenCluster(t, tc.ns, tc.verb, tc.gr))
			require.Error(t, err)
			require.True(t, apierrors.IsForbidden(err), "the cause stays visible to errors.As: %v", err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "did not answer")
			require.NotContains(t, err.Error(), "network")
		})
	}
}

// TestUnreachableHints: an API server that refuses connections or never
// answers is explained as one (its address without the password, the
// context), never as a permission problem.
func TestUnreachableHints(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	require.NoError(t, closed.Close())

	// A listener that accepts and never answers; its goroutine ends when
	// the listener closes, and it closes what it accepted.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { _ = silent.Close(); wg.Wait() })

	ops := map[string]func(ctx context.Context, c *Cluster) error{
		"list": func(ctx context.Context, c *Cluster) error { _, err := c.List(ctx, ""); return err },
		"gc":   func(ctx context.Context, c *Cluster) error { _, err := c.GC(ctx, "hotrod", false); return err },
		"delete": func(ctx context.Context, c *Cluster) error {
			return c.Delete(ctx, cluster.Ref{Name: "alice", Namespace: "hotrod"})
		},
		"apply": func(ctx context.Context, c *Cluster) error {
			sb := testSpec("alice", "localhost:1")
			_, err := c.Apply(ctx, &sb, cluster.Options{RoutingKey: "aaaaaaaaaaaaa", RelayImage: "relay:1"}, nil)
			var pe interface{ IsPermanent() bool }
			require.False(t, errors.As(err, &pe), "an unreachable API server is retried: %v", err)
			return err
		},
	}
	for _, srv := range []struct{ name, addr string }{{"refused", closedAddr}, {"silent", silent.Addr().String()}} {
		for name, op := range ops {
			t.Run(srv.name+"/"+name, func(t *testing.T) {
				kc := &kube.Cluster{REST: &rest.Config{Host: "http://jo:s3cret@" + srv.addr}, Namespace: "team", Context: "staging"}
				require.NoError(t, kc.BuildClients())
				c := NewFromKube(kc, Options{})
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				err := op(ctx, c)
				require.Error(t, err)
				msg := err.Error()
				require.Contains(t, msg, "the API server at http://jo:xxxxx@"+srv.addr+" did not answer")
				require.Contains(t, msg, "check your network or VPN, and that `kubectl --context staging get ns` works")
				require.NotContains(t, msg, "s3cret")
				require.NotContains(t, msg, "can-i")
				require.NotContains(t, msg, "rbac")
				require.NotContains(t, msg, "cluster-wide")
			})
		}
	}
}

// TestOtherErrorsGetNoHint: a cause the classifier does not know gets no
// invented next step.
func TestOtherErrorsGetNoHint(t *testing.T) {
	err := apierrors.NewNotFound(schema.GroupResource{Resource: "leases"}, "x")
	require.Same(t, error(err), explainAPIError(err, apiServer{url: "https://api", context: "c"}, apiOp{verb: "list", resource: "leases"}))
	canceled := fmt.Errorf("list: %w", context.Canceled)
	require.Equal(t, canceled, explainAPIError(canceled, apiServer{}, apiOp{}))
}

// TestUnauthorizedHint: rejected credentials are a login matter, named
// with the server and context, not RBAC and not the network.
func TestUnauthorizedHint(t *testing.T) {
	err := explainAPIError(fmt.Errorf("list sbx Leases in all namespaces: %w", apierrors.NewUnauthorized("token expired")),
		apiServer{url: "https://api.staging:6443", context: "staging"}, apiOp{verb: "list", resource: "leases"})
	require.True(t, apierrors.IsUnauthorized(err))
	require.Contains(t, err.Error(), "the API server at https://api.staging:6443 did not accept your credentials: log in again")
	require.Contains(t, err.Error(), "`kubectl --context staging get ns`")
	require.NotContains(t, err.Error(), "can-i")
	require.NotContains(t, err.Error(), "did not answer")
}

// testSpec is a sandbox of one workload, route in hotrod, port 8083.
func testSpec(name string, toLocal string) spec.Sandbox {
	return spec.Sandbox{Name: name, Spec: spec.Spec{Local: []spec.Local{{
		Name:     "route",
		From:     spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route"},
		Mappings: []spec.Mapping{{Port: 8083, ToLocal: toLocal}},
	}}}}
}

// TestRelayTimeoutIsNotUnreachable: a relay that never becomes ready
// fails the wait with what the pod waits for, not with "the API server
// did not answer: check your network or VPN": it answered every call.
func TestRelayTimeoutIsNotUnreachable(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-relay-1", Namespace: "hotrod",
		Labels: map[string]string{cluster.LabelManagedBy: cluster.ManagedByValue, cluster.LabelSandbox: "alice", cluster.LabelComponent: "relay"}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient cpu."}}}}
	c := NewFromKube(&kube.Cluster{
		REST: &rest.Config{Host: "https://api.staging:6443"}, Kube: kubefake.NewClientset(pod), Istio: istiofake.NewSimpleClientset(),
		Namespace: "hotrod", Context: "staging",
	}, Options{WaitTimeout: 50 * time.Millisecond})
	defer c.Close()
	err := c.WaitRelay(t.Context(), cluster.Ref{Name: "alice", Namespace: "hotrod"}, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "not scheduled: Unschedulable 0/3 nodes are available: 3 Insufficient cpu.")
	require.Contains(t, err.Error(), "kubectl describe pod -n hotrod sbx-alice-relay-1")
	require.NotContains(t, err.Error(), "did not answer")
	require.NotContains(t, err.Error(), "network")
}

// TestHintNamesTheKubeconfigInUse: a cluster opened with --kubeconfig
// suggests kubectl commands with that file, so that they ask the same
// cluster (the shell's default kubeconfig may be another).
func TestHintNamesTheKubeconfigInUse(t *testing.T) {
	err := explainAPIError(apierrors.NewUnauthorized("token expired"),
		apiServer{url: "https://api.staging:6443", context: "staging", kubeconfig: "/home/jo/.kube/staging"}, apiOp{verb: "list", resource: "leases"})
	require.Contains(t, err.Error(), "`kubectl --kubeconfig /home/jo/.kube/staging --context staging get ns`")
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "config")
	kubetest.WriteKubeconfig(t, kc, "dev", "https://127.0.0.1:1", "dev/team")
	k := NewClusters(Options{})
	defer k.Close()
	c, err := k.Open(fileSource(kc), "")
	require.NoError(t, err)
	require.Equal(t, kc, c.server.kubeconfig)
}

// TestRelayErrorPermanence: an image the cluster cannot pull ends the
// wait for good (the connect fails at once); a crash loop does not (a
// relay killed once shows CrashLoopBackOff until the kubelet restarts it).
func TestRelayErrorPermanence(t *testing.T) {
	for reason, permanent := range map[string]bool{"ImagePullBackOff": true, "ErrImagePull": true, "CreateContainerConfigError": true, "CrashLoopBackOff": false} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-relay-1", Namespace: "hotrod",
			Labels: map[string]string{cluster.LabelManagedBy: cluster.ManagedByValue, cluster.LabelSandbox: "alice", cluster.LabelComponent: "relay"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "relay", Image: "relay:1"}}},
			Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "relay",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}}}}
		c := NewFromKube(&kube.Cluster{REST: &rest.Config{Host: "https://api:6443"}, Kube: kubefake.NewClientset(pod), Istio: istiofake.NewSimpleClientset(),
			Namespace: "hotrod", Context: "staging"}, Options{WaitTimeout: time.Minute})
		err := c.WaitRelay(t.Context(), cluster.Ref{Name: "alice", Namespace: "hotrod"}, nil)
		c.Close()
		require.ErrorContains(t, err, reason)
		var p interface{ IsPermanent() bool }
		require.Equal(t, permanent, errors.As(err, &p) && p.IsPermanent(), reason)
	}
}
