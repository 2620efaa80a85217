package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/kube/kubetest"
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
		{"routes kept changing", fmt.Errorf("mesh routes: %w", cluster.ErrRouteConflict), true},
		{"not found wrapped", fmt.Errorf("read Deployment hotrod/x: %w", apierrors.NewNotFound(gr, "x")), false},
		{"resolution", errors.New("Deployment hotrod/rout not found: check spec.local[].from"), false},
		{"invalid", apierrors.NewBadRequest("bad"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Transient(tc.err))
		})
	}
}

// TestOpenFollowsCurrentContext: KubeClusters reads the kubeconfig on
// every Open, as kubectl does on every run. After the current context
// changes, an Open without a context is the new cluster; the same
// context is served from the cache; a context re-pointed at another
// namespace is a new connection; the superseded ones stay open for the
// sandboxes still using them.
func TestOpenFollowsCurrentContext(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "config")
	write := func(current, prodNamespace string) {
		kubetest.WriteKubeconfig(t, kc, current, "https://127.0.0.1:1", "staging/team-s", "prod/"+prodNamespace)
	}
	write("staging", "team-p")
	now := time.Unix(1_000_000_000, 0)
	k := NewClusters(Options{Now: func() time.Time { return now }})
	t.Cleanup(func() { _ = k.Close() })
	src := fileSource(kc)
	open := func(kctx string) *Cluster {
		t.Helper()
		c, err := k.Open(src, kctx)
		require.NoError(t, err)
		return c
	}

	staging := open("")
	require.Equal(t, "team-s", staging.namespace)
	require.Same(t, staging, open(""), "same context: cached")
	require.Same(t, staging, open("staging"), "named or current: one connection")

	write("prod", "team-p") // kubectl config use-context prod
	prod := open("")
	require.NotSame(t, staging, prod, "a changed current-context is never served from the cache")
	require.Equal(t, "team-p", prod.namespace)
	require.Same(t, staging, open("staging"), "the old context's connection is still there")

	write("prod", "team-q") // kubectl config set-context prod --namespace team-q
	moved := open("")
	require.NotSame(t, prod, moved)
	require.Equal(t, "team-q", moved.namespace)
	k.mu.Lock()
	require.Len(t, k.clusters, 3, "nothing is closed while sandboxes may use it")
	k.mu.Unlock()

	// Another source with the same contexts is another connection.
	other := filepath.Join(dir, "other")
	kubetest.WriteKubeconfig(t, other, "prod", "https://127.0.0.1:1", "prod/team-q")
	c, err := k.Open(fileSource(other), "")
	require.NoError(t, err)
	require.NotSame(t, moved, c)

	// A kubeconfig that opened before and is now unreadable (being
	// rewritten) is worth a retry; one that never opened is the user's
	// to fix.
	require.NoError(t, os.WriteFile(kc, nil, 0o600))
	_, err = k.Open(src, "")
	require.Error(t, err)
	require.False(t, permanent(err))
	_, err = k.Open(fileSource(filepath.Join(dir, "missing")), "")
	require.True(t, permanent(err))

	// Still failing after rewriteGrace, it is no rewrite but the user's
	// doing: the sandbox fails with the reason instead of retrying forever.
	now = now.Add(rewriteGrace - time.Second)
	_, err = k.Open(src, "")
	require.False(t, permanent(err))
	now = now.Add(time.Second)
	_, err = k.Open(src, "")
	require.True(t, permanent(err))
	require.ErrorContains(t, err, "still failing after 1m0s: fix the kubeconfig")

	// Readable again, it opens, and the grace starts afresh next time.
	kubetest.WriteKubeconfig(t, kc, "prod", "https://127.0.0.1:1", "prod/team-q")
	_, err = k.Open(src, "")
	require.NoError(t, err)
	now = now.Add(time.Hour)
	require.NoError(t, os.WriteFile(kc, nil, 0o600))
	_, err = k.Open(src, "")
	require.False(t, permanent(err))

	// A kubeconfig that never opened and does not parse is retried for
	// the grace too (a restore may catch it mid-rewrite), then fails.
	broken := filepath.Join(dir, "broken")
	require.NoError(t, os.WriteFile(broken, []byte("apiVersion: v1\nclusters: {{{\n"), 0o600))
	bsrc := fileSource(broken)
	_, err = k.Open(bsrc, "")
	require.Error(t, err)
	require.False(t, permanent(err))
	require.ErrorContains(t, err, "fix the kubeconfig; retrying for up to 1m0s")
	now = now.Add(rewriteGrace)
	_, err = k.Open(bsrc, "")
	require.True(t, permanent(err))
	require.ErrorContains(t, err, "still failing after 1m0s")
}

// TestConnectionKey: a cached connection is reused only for the same
// context, namespace, server, way there and credentials; an
// auth-provider's refreshed token is not a new connection; and the key
// holds no credential as it is.
func TestConnectionKey(t *testing.T) {
	base := func() *kube.Cluster {
		return &kube.Cluster{Context: "dev", Namespace: "team", REST: &rest.Config{
			Host: "https://127.0.0.1:1", BearerToken: "s3cret-token", Password: "s3cret-password",
			TLSClientConfig: rest.TLSClientConfig{KeyData: []byte("s3cret-key")},
		}}
	}
	ref := connectionKey(base())
	require.Equal(t, ref, connectionKey(base()), "the same resolution, the same key")
	for _, secret := range []string{"s3cret-token", "s3cret-password", "s3cret-key"} {
		require.NotContains(t, ref, secret)
	}
	proxy, err := url.Parse("http://proxy.example:3128")
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		change func(*kube.Cluster)
		same   bool
	}{
		{"context", func(c *kube.Cluster) { c.Context = "prod" }, false},
		{"namespace", func(c *kube.Cluster) { c.Namespace = "other" }, false},
		{"server", func(c *kube.Cluster) { c.REST.Host = "https://127.0.0.2:1" }, false},
		{"token", func(c *kube.Cluster) { c.REST.BearerToken = "rotated" }, false},
		{"client key", func(c *kube.Cluster) { c.REST.KeyData = []byte("rotated") }, false},
		{"CA", func(c *kube.Cluster) { c.REST.CAData = []byte("other") }, false},
		{"impersonation", func(c *kube.Cluster) { c.REST.Impersonate.UserName = "admin" }, false},
		{"proxy-url", func(c *kube.Cluster) { c.REST.Proxy = http.ProxyURL(proxy) }, false},
		{"disable-compression", func(c *kube.Cluster) { c.REST.DisableCompression = true }, false},
		{"user agent", func(c *kube.Cluster) { c.REST.UserAgent = "other" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(c)
			require.Equal(t, tc.same, connectionKey(c) == ref)
		})
	}

	// Every setting of an exec plugin counts, not only its command line.
	withExec := func(clusterInfo bool) *kube.Cluster {
		c := base()
		c.REST.ExecProvider = &clientcmdapi.ExecConfig{Command: "get-token", ProvideClusterInfo: clusterInfo}
		return c
	}
	require.NotEqual(t, connectionKey(withExec(false)), connectionKey(withExec(true)))

	// An auth-provider writes its refreshed token into the kubeconfig.
	withProvider := func(token string) *kube.Cluster {
		c := base()
		c.REST.AuthProvider = &clientcmdapi.AuthProviderConfig{Name: "oidc", Config: map[string]string{"id-token": token}}
		return c
	}
	require.Equal(t, connectionKey(withProvider("a")), connectionKey(withProvider("b")))
	require.NotEqual(t, ref, connectionKey(withProvider("a")))
}

// TestDialClosesSupersededDialers: a sandbox reconnecting through a new
// connection (its context's kubeconfig entry changed) closes the
// port-forward dialer it left in the old one, rather than keep that
// dialer's API server connections open until disconnect.
func TestDialClosesSupersededDialers(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "config")
	k := NewClusters(Options{})
	t.Cleanup(func() { _ = k.Close() })
	open := func(ns string) *Cluster {
		t.Helper()
		kubetest.WriteKubeconfig(t, kc, "dev", "https://127.0.0.1:1", "dev/"+ns)
		c, err := k.Open(fileSource(kc), "dev")
		require.NoError(t, err)
		return c
	}
	dialers := func(c *Cluster) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.dialers)
	}
	// The dialer is made before it dials; a cancelled dial keeps the
	// test off the network.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	dial := func(c *Cluster, sandbox string) {
		_, err := c.DialRelay(cancelled, cluster.Ref{Name: sandbox, RoutingKey: "k-" + sandbox, Namespace: "ns"})
		require.Error(t, err)
	}

	old := open("a")
	dial(old, "sb")
	dial(old, "other")
	require.Equal(t, 2, dialers(old))
	dial(old, "sb")
	require.Equal(t, 2, dialers(old), "the same relay reuses its dialer")

	moved := open("b")
	require.NotSame(t, old, moved)
	dial(moved, "sb")
	require.Equal(t, 1, dialers(moved))
	require.Equal(t, 1, dialers(old), "sb's old dialer is closed, the other sandbox's kept")
}

// TestRedactedURL: the server URL logged when a connection opens never
// carries a password.
func TestRedactedURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://127.0.0.1:6443":           "https://127.0.0.1:6443",
		"https://admin:s3cret@api.example": "https://admin:xxxxx@api.example",
		"https://%zz":                      "(unparsable URL)",
	} {
		require.Equal(t, want, redactedURL(in), in)
	}
}

// fileSource is the kubeconfig source of one file (--kubeconfig FILE).
func fileSource(path string) Source {
	return Source{Key: path, Options: kube.Options{Kubeconfig: path}, Name: "--kubeconfig " + path}
}

// permanent reports whether err is an Open failure retrying cannot cure.
func permanent(err error) bool {
	var ke *KubeconfigError
	return errors.As(err, &ke) && ke.IsPermanent()
}

// shortTempDir returns a temp dir with a short path.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sbxl")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
