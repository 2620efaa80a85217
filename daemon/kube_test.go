package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/sbx-dev/sbx/cluster/kube"
)

func TestTransientApplyErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"network", fmt.Errorf("apply: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), true},
		{"url", &url.Error{Op: "Get", URL: "https://api", Err: errors.New("EOF")}, true},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), true},
		{"unavailable", apierrors.NewServiceUnavailable("down"), true},
		{"internal", apierrors.NewInternalError(errors.New("webhook")), true},
		{"conflict", apierrors.NewConflict(gr, "x", errors.New("rv")), true},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), true},
		{"too many", apierrors.NewTooManyRequests("slow down", 1), true},
		{"not found wrapped", fmt.Errorf("read Deployment hotrod/x: %w", apierrors.NewNotFound(gr, "x")), false},
		{"resolution", errors.New("Deployment hotrod/rout not found: check spec.local[].from"), false},
		{"invalid", apierrors.NewBadRequest("bad"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, transient(tc.err))
		})
	}
}

// TestSpecClusterContext connects specs whose spec.cluster names a
// context through the config's mapping, directly, not at all, or not
// known: the daemon resolves them as package cluster/kube does, and
// refuses an unknown name at once with what to do.
func TestSpecClusterContext(t *testing.T) {
	dir := shortTempDir(t)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeKubeconfig(t, kubeconfig, "dev", "https://127.0.0.1:1", "dev", "gke_acme_staging-1")
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("contexts:\n  staging-1: gke_acme_staging-1\n"), 0o600))

	fc := &fakeCluster{}
	var mu sync.Mutex
	opened := map[string]string{} // kube context asked for → context the kubeconfig yields
	provider := func(_ context.Context, kc, kctx string) (Cluster, error) {
		opts := kubeOptions(kc)
		opts.Context = kctx
		c, _, err := kube.ChooseContext(opts)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		opened[kctx] = c
		return fc, nil
	}
	td := startDaemon(t, Options{Clusters: provider, link: (&fakeLinker{}).link, ConfigPath: cfgPath})

	tests := []struct {
		name, cluster, context string
		status, opened         string // the sandbox's context; what the cluster was opened with
		errText                []string
	}{
		{name: "mapped", cluster: "staging-1", status: "gke_acme_staging-1", opened: "gke_acme_staging-1"},
		{name: "context", cluster: "dev", status: "dev", opened: "dev"},
		{name: "current", cluster: "", status: "", opened: "dev"},
		{name: "flag", cluster: "staging-1", context: "dev", status: "dev", opened: "dev"},
		{name: "unknown", cluster: "staging-9", errText: []string{
			"sandbox unknown:", `spec cluster "staging-9"`, kubeconfig, "available: dev, gke_acme_staging-1",
			"known: staging-1", cfgPath, "pass --context",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := testSpec(tt.name, "localhost:1")
			sb.Spec.Cluster = tt.cluster
			st, err := td.client.Connect(context.Background(), ConnectRequest{Spec: sb, Kubeconfig: kubeconfig, Context: tt.context, Wait: true}, nil)
			if tt.errText != nil {
				var ae *APIError
				require.ErrorAs(t, err, &ae)
				require.Equal(t, 400, ae.StatusCode)
				for _, s := range tt.errText {
					require.Contains(t, err.Error(), s)
				}
				_, err := td.client.Sandbox(context.Background(), tt.name)
				require.Error(t, err, "a refused connect leaves no sandbox behind")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.status, st.Context)
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, tt.opened, opened[tt.status])
		})
	}
}

// TestKubeconfigPathList: the CLI passes its $KUBECONFIG on, which may be a
// list of files; the daemon merges them as kubectl does, both to open a
// cluster and to resolve a spec's cluster name.
func TestKubeconfigPathList(t *testing.T) {
	dir := shortTempDir(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeKubeconfig(t, a, "dev", "https://127.0.0.1:1", "dev/team-a")
	writeKubeconfig(t, b, "", "https://127.0.0.2:1", "gke_acme_staging-1/team-b")
	list := a + string(filepath.ListSeparator) + b

	sb := testSpec("listed", "localhost:1")
	sb.Spec.Cluster = "staging-1"
	got, err := specContext(ConnectRequest{Spec: sb, Kubeconfig: list}, map[string]string{"staging-1": "gke_acme_staging-1"}, "config.yaml")
	require.NoError(t, err)
	require.Equal(t, "gke_acme_staging-1", got, "a context from the second file")

	for _, tc := range []struct{ kctx, namespace, server string }{
		{"", "team-a", "https://127.0.0.1:1"}, // current-context from the first file
		{"gke_acme_staging-1", "team-b", "https://127.0.0.2:1"},
	} {
		opts := kubeOptions(list)
		opts.Context = tc.kctx
		kc, err := kube.Load(opts)
		require.NoError(t, err, tc.kctx)
		require.Equal(t, tc.namespace, kc.Namespace)
		require.Equal(t, tc.server, kc.REST.Host)
	}

	// One file (--kubeconfig) stays an explicit path: a missing one is an error.
	_, err = kube.Load(kubeOptions(filepath.Join(dir, "missing")))
	require.Error(t, err)
}

// writeKubeconfig writes a kubeconfig with one cluster at server (named
// after the file, so that merged files keep their own) and the given
// contexts, each "name" or "name/namespace".
func writeKubeconfig(t *testing.T, path, current, server string, contexts ...string) {
	t.Helper()
	c := filepath.Base(path)
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\ncurrent-context: %q\n", current)
	fmt.Fprintf(&b, "clusters:\n- {name: %s, cluster: {server: %q}}\nusers:\n- {name: %s, user: {token: t}}\ncontexts:\n", c, server, c)
	for _, ctx := range contexts {
		name, ns, _ := strings.Cut(ctx, "/")
		fmt.Fprintf(&b, "- {name: %s, context: {cluster: %s, user: %s, namespace: %q}}\n", name, c, c, ns)
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
}

// TestSameCluster: gc renews the daemon's own sandboxes in the cluster it
// is asked about, matching contexts once resolved, so a sandbox connected
// through spec.cluster (saved with the context it named) is renewed by a
// gc without --context when that context is the current one.
func TestSameCluster(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "kubeconfig")
	writeKubeconfig(t, kc, "staging", "https://127.0.0.1:1", "staging", "dev")
	for _, tc := range []struct {
		name              string
		savedKC, savedCtx string
		reqKC, reqCtx     string
		want              bool
	}{
		{"same words", kc, "dev", kc, "dev", true},
		{"saved resolved, request current", kc, "staging", kc, "", true},
		{"saved current, request names it", kc, "", kc, "staging", true},
		{"other context", kc, "dev", kc, "", false},
		{"other kubeconfig", kc, "staging", filepath.Join(dir, "other"), "staging", false},
		{"unreadable kubeconfig, same words", filepath.Join(dir, "missing"), "x", filepath.Join(dir, "missing"), "x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sameCluster(tc.savedKC, tc.savedCtx, ClusterRequest{Kubeconfig: tc.reqKC, Context: tc.reqCtx})
			require.Equal(t, tc.want, got)
		})
	}
}
