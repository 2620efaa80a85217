package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/kube/kubetest"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
)

// TestSpecClusterContext connects specs whose spec.cluster names a
// context through the config's mapping, directly, not at all, or not
// known: the daemon resolves them as package cluster/kube does, and
// refuses an unknown name at once with what to do.
func TestSpecClusterContext(t *testing.T) {
	dir := shortTempDir(t)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	kubetest.WriteKubeconfig(t, kubeconfig, "dev", "https://127.0.0.1:1", "dev", "gke_acme_staging-1")
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("contexts:\n  staging-1: gke_acme_staging-1\n"), 0o600))

	fc := &fakeCluster{}
	var mu sync.Mutex
	opened := map[string]string{} // kube context asked for → context the kubeconfig yields
	provider := func(_ context.Context, src api.KubeconfigSource, kctx string) (Cluster, error) {
		opts := SourceOptions(src)
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
		{name: "current", cluster: "", status: "dev", opened: "dev"}, // pinned at connect
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
			st, err := td.client.Connect(context.Background(), api.ConnectRequest{Spec: sb, KubeconfigSource: api.NewKubeconfigSource(kubeconfig, nil), Context: tt.context, Wait: true}, nil)
			if tt.errText != nil {
				var ae *api.APIError
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
	kubetest.WriteKubeconfig(t, a, "dev", "https://127.0.0.1:1", "dev/team-a")
	kubetest.WriteKubeconfig(t, b, "", "https://127.0.0.2:1", "gke_acme_staging-1/team-b")

	for name, src := range map[string]api.KubeconfigSource{
		"list":                  api.NewKubeconfigSource("", []string{a, b}),
		"empty element dropped": api.NewKubeconfigSource("", []string{a, b, ""}),
	} {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, api.NewKubeconfigSource("", []string{a, b}).Key(), src.Key(), "one source, one cache key")
			sb := testSpec("listed", "localhost:1")
			sb.Spec.Cluster = "staging-1"
			got, err := specContext(api.ConnectRequest{Spec: sb, KubeconfigSource: src}, map[string]string{"staging-1": "gke_acme_staging-1"}, "config.yaml")
			require.NoError(t, err)
			require.Equal(t, "gke_acme_staging-1", got, "a context from the second file")

			for _, tc := range []struct{ kctx, namespace, server string }{
				{"", "team-a", "https://127.0.0.1:1"}, // current-context from the first file
				{"gke_acme_staging-1", "team-b", "https://127.0.0.2:1"},
			} {
				opts := SourceOptions(src)
				opts.Context = tc.kctx
				kc, err := kube.Load(opts)
				require.NoError(t, err, tc.kctx)
				require.Equal(t, tc.namespace, kc.Namespace)
				require.Equal(t, tc.server, kc.REST.Host)
				require.Equal(t, []string{a, b}, kc.Files)
			}
		})
	}

	// One file (--kubeconfig) stays an explicit path: a missing one is an error.
	_, err := kube.Load(SourceOptions(api.NewKubeconfigSource(filepath.Join(dir, "missing"), nil)))
	require.Error(t, err)
}

// TestKubeconfigFileWithListSeparator: --kubeconfig is one path even when
// a directory name contains the list separator, through the request's
// JSON, its query-string form and the daemon's options.
func TestKubeconfigFileWithListSeparator(t *testing.T) {
	dir := filepath.Join(shortTempDir(t), "a"+string(filepath.ListSeparator)+"b")
	require.NoError(t, os.Mkdir(dir, 0o700))
	file := filepath.Join(dir, "config")
	kubetest.WriteKubeconfig(t, file, "dev", "https://127.0.0.3:1", "dev/colon")
	src := api.NewKubeconfigSource(file, []string{"/ignored/when/a/file/is/given"})
	require.Equal(t, api.KubeconfigSource{KubeconfigFile: file}, src, "--kubeconfig wins over $KUBECONFIG, as in kubectl")

	b, err := json.Marshal(api.ConnectRequest{KubeconfigSource: src})
	require.NoError(t, err)
	var req api.ConnectRequest
	require.NoError(t, json.Unmarshal(b, &req))
	r := httptest.NewRequest(http.MethodGet, "/v1/list?"+api.ClusterRequest{KubeconfigSource: src}.Query().Encode(), nil)
	for name, got := range map[string]api.KubeconfigSource{"json": req.KubeconfigSource, "query": mustQuery(t, r).KubeconfigSource} {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, src, got)
			kc, err := kube.Resolve(SourceOptions(got))
			require.NoError(t, err)
			require.Equal(t, "https://127.0.0.3:1", kc.REST.Host)
			require.Equal(t, "colon", kc.Namespace)
			require.Equal(t, []string{file}, kc.Files)
		})
	}
}

// TestKubeconfigSourceNormalisedWhereItEnters: a source from a request
// (its JSON body or its query) is normalised as api.NewKubeconfigSource
// normalises the CLI's, and the one-field "kubeconfig" of pre-release
// versions is refused rather than read as no kubeconfig.
func TestKubeconfigSourceNormalisedWhereItEnters(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  api.KubeconfigSource
		want api.KubeconfigSource
	}{
		{"nothing", api.KubeconfigSource{}, api.KubeconfigSource{}},
		{"file", api.KubeconfigSource{KubeconfigFile: "/x/a"}, api.KubeconfigSource{KubeconfigFile: "/x/a"}},
		{"file wins over the list", api.KubeconfigSource{KubeconfigFile: "/x/a", KubeconfigEnv: []string{"/x/b"}}, api.KubeconfigSource{KubeconfigFile: "/x/a"}},
		{"empty elements dropped", api.KubeconfigSource{KubeconfigEnv: []string{"", "/x/a", "", "/x/b"}}, api.KubeconfigSource{KubeconfigEnv: []string{"/x/a", "/x/b"}}},
		{"only empty elements", api.KubeconfigSource{KubeconfigEnv: []string{""}}, api.KubeconfigSource{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, api.NewKubeconfigSource(tc.src.KubeconfigFile, tc.src.KubeconfigEnv))
			q := url.Values{}
			if tc.src.KubeconfigFile != "" {
				q.Set("kubeconfigFile", tc.src.KubeconfigFile)
			}
			for _, p := range tc.src.KubeconfigEnv {
				q.Add("kubeconfigEnv", p)
			}
			r := httptest.NewRequest(http.MethodGet, "/v1/list?"+q.Encode(), nil)
			require.Equal(t, tc.want, mustQuery(t, r).KubeconfigSource)
		})
	}

	r := httptest.NewRequest(http.MethodPut, "/v1/sandboxes/a", strings.NewReader(`{"kubeconfig":"/x/a:/x/b"}`))
	var req api.ConnectRequest
	require.ErrorContains(t, readJSON(r, &req), `unknown field "kubeconfig"`)
}

// TestStateFileOneFieldKubeconfig: a state file whose sandbox has the
// one-field "kubeconfig" of pre-release versions is refused, naming the
// file, the sandbox and the fix, rather than read as the default
// kubeconfig; its sources are normalised as they are loaded.
func TestStateFileOneFieldKubeconfig(t *testing.T) {
	dir := shortTempDir(t)
	sf := &stateFile{path: filepath.Join(dir, "state.json")}
	write := func(sb map[string]any) {
		b, err := json.Marshal(map[string]any{"version": stateVersion, "sandboxes": []map[string]any{sb}})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(sf.path, b, 0o600))
	}
	write(map[string]any{"name": "old", "routingKey": "k1", "kubeconfig": "/x/a", "spec": testSpec("old", "localhost:1")})
	_, err := sf.Load()
	require.ErrorContains(t, err, "state file "+sf.path+`: sandbox old has a "kubeconfig" field, which this sbx no longer reads; rename it to "kubeconfigFile"`)

	write(map[string]any{"name": "new", "routingKey": "k1", "kubeconfigEnv": []string{"", "/x/a"}, "spec": testSpec("new", "localhost:1")})
	sbs, err := sf.Load()
	require.NoError(t, err)
	require.Len(t, sbs, 1)
	require.Equal(t, api.KubeconfigSource{KubeconfigEnv: []string{"/x/a"}}, sbs[0].KubeconfigSource)
}

// TestConnectPinsCurrentContext: a sandbox connected without --context is
// saved with the context current then, so `kubectl config use-context`
// afterwards moves neither it nor its disconnect; connecting it again
// there is refused, as moving any connected sandbox is.
func TestConnectPinsCurrentContext(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "config")
	kubetest.WriteKubeconfig(t, kc, "staging", "https://127.0.0.1:1", "staging", "prod")
	fc := &fakeCluster{}
	var mu sync.Mutex
	var opened []string
	provider := func(_ context.Context, src api.KubeconfigSource, kctx string) (Cluster, error) {
		mu.Lock()
		defer mu.Unlock()
		opened = append(opened, kctx)
		return fc, nil
	}
	td := startDaemon(t, Options{Clusters: provider, link: (&fakeLinker{}).link})
	req := api.ConnectRequest{Spec: testSpec("pinned", "localhost:1"), KubeconfigSource: api.NewKubeconfigSource(kc, nil), Wait: true}
	st, err := td.client.Connect(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, "staging", st.Context)
	require.Equal(t, api.NewKubeconfigSource(kc, nil), st.Kubeconfig, "status says where the context is read from")

	kubetest.WriteKubeconfig(t, kc, "prod", "https://127.0.0.1:1", "staging", "prod")
	_, err = td.client.Connect(context.Background(), req, nil)
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusConflict, ae.StatusCode)
	for _, want := range []string{`connected to context "staging"`, `asks for context "prod"`, "--context staging", "sbx disconnect pinned"} {
		require.Contains(t, err.Error(), want)
	}

	_, err = td.client.Disconnect(context.Background(), "pinned")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, opened)
	for _, o := range opened {
		require.Equal(t, "staging", o, "every open, disconnect included, is the pinned context")
	}
}

// TestSameCluster: gc renews the daemon's own sandboxes in the cluster it
// is asked about, matching contexts once resolved, so a sandbox connected
// through spec.cluster (saved with the context it named) is renewed by a
// gc without --context when that context is the current one.
func TestSameCluster(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "kubeconfig")
	kubetest.WriteKubeconfig(t, kc, "staging", "https://127.0.0.1:1", "staging", "dev")
	// As handleGC calls it: with the request's current context.
	same := func(src api.KubeconfigSource, kubeContext string, creq api.ClusterRequest) bool {
		return sameCluster(src, kubeContext, creq, currentContext(creq.KubeconfigSource))
	}
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
			got := same(api.NewKubeconfigSource(tc.savedKC, nil), tc.savedCtx, api.ClusterRequest{KubeconfigSource: api.NewKubeconfigSource(tc.reqKC, nil), Context: tc.reqCtx})
			require.Equal(t, tc.want, got)
		})
	}
	// A $KUBECONFIG list is its files; a list of one is that file, as
	// --kubeconfig names it.
	list := api.NewKubeconfigSource("", []string{kc, filepath.Join(dir, "missing")})
	require.True(t, same(list, "staging", api.ClusterRequest{KubeconfigSource: list}))
	require.False(t, same(list, "staging", api.ClusterRequest{KubeconfigSource: api.NewKubeconfigSource(kc, nil)}), "a list is not the one file")
	require.True(t, same(api.NewKubeconfigSource(kc, nil), "staging", api.ClusterRequest{KubeconfigSource: api.NewKubeconfigSource("", []string{kc})}))
}

// TestRestorePinsCurrentContext: a sandbox an older daemon saved without
// a context (it followed the current one) is pinned to the context
// current at restore, opened there, and saved so, so that a later
// `kubectl config use-context` and restart do not move it.
func TestRestorePinsCurrentContext(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "config")
	kubetest.WriteKubeconfig(t, kc, "staging", "https://127.0.0.1:1", "staging", "prod")
	paths := testPaths(t)
	require.NoError(t, os.MkdirAll(paths.StateDir, 0o700))
	old, err := json.Marshal(map[string]any{"version": stateVersion, "sandboxes": []map[string]any{
		// As an older daemon wrote it once applied: nothing left to
		// save after the restored sandbox is applied again.
		{"name": "old", "routingKey": "k1", "namespace": "hotrod", "kubeconfigFile": kc, "spec": testSpec("old", "localhost:1")},
	}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(paths.State(), old, 0o600))

	fc := &fakeCluster{}
	var mu sync.Mutex
	var opened []string
	provider := func(_ context.Context, _ api.KubeconfigSource, kctx string) (Cluster, error) {
		mu.Lock()
		defer mu.Unlock()
		opened = append(opened, kctx)
		return fc, nil
	}
	td := startDaemon(t, Options{Paths: paths, Clusters: provider, link: (&fakeLinker{}).link})
	st := waitPhase(t, td.client, "old", api.PhaseReady)
	require.Equal(t, "staging", st.Context)
	// The status of a restored sandbox names its kubeconfig, as `sbx env
	// --env-from-baseline` reads it from there.
	require.Equal(t, api.NewKubeconfigSource(kc, nil), st.Kubeconfig)
	mu.Lock()
	require.NotEmpty(t, opened)
	for _, o := range opened {
		require.Equal(t, "staging", o, "every open is the pinned context")
	}
	mu.Unlock()

	// Restore saves after starting the session, which may be ready first.
	require.Eventually(t, func() bool {
		sbs, err := (&stateFile{path: paths.State()}).Load()
		return err == nil && len(sbs) == 1 && sbs[0].Context == "staging"
	}, 10*time.Second, 5*time.Millisecond, "the state file never recorded the pinned context")
}

// TestOneShotRequestsSayTheirOwnNextStep: Open's next steps are a
// sandbox supervisor's ("connect again", "retrying for up to 1m"); list,
// gc, disconnect --orphan and disconnect are not retried and say theirs,
// once.
func TestOneShotRequestsSayTheirOwnNextStep(t *testing.T) {
	dir := shortTempDir(t)
	kc := filepath.Join(dir, "config")
	kubetest.WriteKubeconfig(t, kc, "staging", "https://127.0.0.1:1", "staging/team-s")
	k := live.NewClusters(live.Options{})
	t.Cleanup(func() { _ = k.Close() })
	fc := &fakeCluster{}
	var mu sync.Mutex
	real := false
	provider := func(ctx context.Context, src api.KubeconfigSource, kctx string) (Cluster, error) {
		mu.Lock()
		defer mu.Unlock()
		if real {
			return LiveClusters(k)(ctx, src, kctx)
		}
		return fc, nil
	}
	td := startDaemon(t, Options{Clusters: provider, link: (&fakeLinker{}).link})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true,
		KubeconfigSource: api.NewKubeconfigSource(kc, nil), Context: "staging"}, nil)
	require.NoError(t, err)
	mu.Lock()
	real = true
	mu.Unlock()
	require.NoError(t, os.Remove(kc)) // the kubeconfig is gone since

	creq := api.ClusterRequest{KubeconfigSource: api.NewKubeconfigSource(kc, nil), Context: "staging"}
	cases := []struct {
		name string
		call func() string
		want string
	}{
		{"list", func() string {
			res, err := td.client.List(ctx, creq, true)
			require.NoError(t, err)
			return res.ClusterError
		}, "list sbx objects in the cluster: open the cluster: "},
		{"gc", func() string {
			_, err := td.client.GC(ctx, api.GCRequest{ClusterRequest: creq})
			require.Error(t, err)
			return err.Error()
		}, "open the cluster: "},
		{"orphan", func() string {
			_, err := td.client.DeleteOrphan(ctx, "ghost", creq, false)
			require.Error(t, err)
			return err.Error()
		}, "open the cluster: "},
		{"disconnect", func() string { _, err := td.client.Disconnect(ctx, "alice"); require.Error(t, err); return err.Error() },
			"delete the cluster objects of sandbox alice: open the cluster: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.call()
			t.Log(msg)
			require.Contains(t, msg, tc.want)
			require.Contains(t, msg, kc, "names the kubeconfig")
			require.NotContains(t, msg, "connect again")
			require.NotContains(t, msg, "retrying for up to")
		})
	}
}

func mustQuery(t *testing.T, r *http.Request) api.ClusterRequest {
	t.Helper()
	creq, err := clusterRequestFromQuery(r)
	require.NoError(t, err)
	return creq
}

// TestUnknownClusterQueryRefused: a query parameter the daemon does not
// know (a misspelt or renamed one) is refused, not silently dropped, so
// that a request about another kubeconfig never gets an answer about the
// default one.
func TestUnknownClusterQueryRefused(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/v1/list?kubeconfig=/tmp/x&context=c", nil)
	_, err := clusterRequestFromQuery(r, "cluster")
	require.ErrorContains(t, err, `unknown query parameter "kubeconfig" for /v1/list (known: kubeconfigFile, kubeconfigEnv, context, namespace, cluster)`)
	var he *httpError
	require.ErrorAs(t, err, &he)
	require.Equal(t, http.StatusBadRequest, he.code)
	ok := httptest.NewRequest(http.MethodGet, "/v1/list?kubeconfigFile=/tmp/x&cluster=false", nil)
	creq, err := clusterRequestFromQuery(ok, "cluster")
	require.NoError(t, err)
	require.Equal(t, "/tmp/x", creq.KubeconfigFile)
}
