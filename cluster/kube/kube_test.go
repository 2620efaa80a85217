package kube_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/kube"
)

// kubeconfig writes a kubeconfig with the given contexts (name → server
// host, namespace) and current-context.
func kubeconfig(t *testing.T, dir, file, current string, contexts ...[3]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\n")
	if current != "" {
		b.WriteString("current-context: " + current + "\n")
	}
	b.WriteString("clusters:\n")
	for _, c := range contexts {
		b.WriteString("- name: " + c[0] + "-cluster\n  cluster:\n    server: https://" + c[1] + ":6443\n")
	}
	b.WriteString("users:\n- name: " + file + "-user\n  user:\n    token: secret-" + file + "\n")
	b.WriteString("contexts:\n")
	for _, c := range contexts {
		b.WriteString("- name: " + c[0] + "\n  context:\n    cluster: " + c[0] + "-cluster\n    user: " + file + "-user\n")
		if c[2] != "" {
			b.WriteString("    namespace: " + c[2] + "\n")
		}
	}
	path := filepath.Join(dir, file)
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	main := kubeconfig(t, dir, "main", "staging-1",
		[3]string{"staging-1", "staging1.example", "hotrod"},
		[3]string{"prod", "prod.example", ""})
	extra := kubeconfig(t, dir, "extra", "dev",
		[3]string{"dev", "dev.example", "devns"},
		[3]string{"staging-1", "shadowed.example", "shadowed"})
	noCurrent := kubeconfig(t, dir, "nocurrent", "", [3]string{"a", "a.example", ""}, [3]string{"b", "b.example", ""})
	missing := filepath.Join(dir, "missing")
	list := strings.Join([]string{missing, main, extra}, string(filepath.ListSeparator))
	// kubectl drops empty elements of KUBECONFIG (a trailing separator).
	listWithEmpty := strings.Join([]string{extra, main, ""}, string(filepath.ListSeparator))
	// --kubeconfig is one path, never a list: a directory may have the
	// list separator in its name.
	colonDir := filepath.Join(dir, "a"+string(filepath.ListSeparator)+"b")
	require.NoError(t, os.Mkdir(colonDir, 0o700))
	colon := kubeconfig(t, colonDir, "config", "dev", [3]string{"dev", "colon.example", "c"})

	tests := []struct {
		name          string
		opts          kube.Options
		host          string
		namespace     string
		explicit      bool
		context       string
		source        string
		errIs         error
		errText       []string
		files         []string
		bearerPresent bool
	}{
		{name: "explicit file, current context", opts: kube.Options{Kubeconfig: main},
			host: "https://staging1.example:6443", namespace: "hotrod", explicit: true, context: "staging-1", source: "current-context", files: []string{main}},
		{name: "--context", opts: kube.Options{Kubeconfig: main, Context: "prod"},
			host: "https://prod.example:6443", namespace: "default", context: "prod", source: "--context"},
		{name: "-n overrides the context namespace", opts: kube.Options{Kubeconfig: main, Namespace: "other"},
			host: "https://staging1.example:6443", namespace: "other", explicit: true, context: "staging-1"},
		{name: "KUBECONFIG list merged, first wins, missing skipped", opts: kube.Options{Getenv: env(map[string]string{"KUBECONFIG": list})},
			host: "https://staging1.example:6443", namespace: "hotrod", explicit: true, context: "staging-1", files: []string{main, extra}},
		{name: "KUBECONFIG context from the second file", opts: kube.Options{Getenv: env(map[string]string{"KUBECONFIG": list}), Context: "dev"},
			host: "https://dev.example:6443", namespace: "devns", explicit: true, context: "dev"},
		{name: "KUBECONFIG empty element dropped", opts: kube.Options{Getenv: env(map[string]string{"KUBECONFIG": listWithEmpty})},
			host: "https://dev.example:6443", namespace: "devns", explicit: true, context: "dev", files: []string{extra, main}},
		{name: "--kubeconfig with the list separator in a directory name", opts: kube.Options{Kubeconfig: colon},
			host: "https://colon.example:6443", namespace: "c", explicit: true, context: "dev", files: []string{colon}},
		{name: "--kubeconfig beats KUBECONFIG", opts: kube.Options{Kubeconfig: extra, Getenv: env(map[string]string{"KUBECONFIG": main})},
			host: "https://dev.example:6443", context: "dev", namespace: "devns", explicit: true},
		{name: "spec cluster is a context", opts: kube.Options{Kubeconfig: main, Cluster: "prod"},
			host: "https://prod.example:6443", context: "prod", namespace: "default", source: `spec cluster "prod"`},
		{name: "spec cluster through the map", opts: kube.Options{Kubeconfig: main, Cluster: "production", ClusterContexts: map[string]string{"production": "prod"}},
			host: "https://prod.example:6443", context: "prod", namespace: "default", source: `spec cluster "production" → context prod`},
		{name: "--context wins over spec cluster", opts: kube.Options{Kubeconfig: main, Cluster: "prod", Context: "staging-1"},
			host: "https://staging1.example:6443", context: "staging-1", namespace: "hotrod", explicit: true, source: "--context"},
		{name: "unknown --context", opts: kube.Options{Kubeconfig: main, Context: "nope"}, errIs: kube.ErrUnknownContext,
			errText: []string{`--context "nope"`, main, "available: prod, staging-1"}},
		{name: "unknown spec cluster", opts: kube.Options{Kubeconfig: main, Cluster: "staging-9", ClusterContexts: map[string]string{"production": "prod"}},
			errIs: kube.ErrUnknownContext, errText: []string{`spec cluster "staging-9"`, "available: prod, staging-1", "known: production", "sbx's config", "--context"}},
		{name: "unknown spec cluster names the sbx config file", opts: kube.Options{Kubeconfig: main, Cluster: "staging-9", ConfigFile: "/home/u/.config/sbx/config.yaml"},
			errIs: kube.ErrUnknownContext, errText: []string{`spec cluster "staging-9"`, main, "available: prod, staging-1", "known: none",
				`map "staging-9" to a context under contexts: in sbx config /home/u/.config/sbx/config.yaml`, "--context"}},
		{name: "spec cluster mapped to a missing context", opts: kube.Options{Kubeconfig: main, Cluster: "production", ClusterContexts: map[string]string{"production": "prod-eu"}},
			errIs: kube.ErrUnknownContext, errText: []string{`maps to context "prod-eu"`, "available: prod, staging-1"}},
		{name: "no current-context", opts: kube.Options{Kubeconfig: noCurrent}, errIs: kube.ErrUnknownContext,
			errText: []string{"sets no current-context", noCurrent, "available: a, b"}},
		{name: "missing --kubeconfig", opts: kube.Options{Kubeconfig: missing}, errText: []string{missing}},
		{name: "no kubeconfig anywhere", opts: kube.Options{Getenv: env(map[string]string{"KUBECONFIG": missing})},
			errIs: kube.ErrNoKubeconfig, errText: []string{missing, "--kubeconfig"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Getenv == nil {
				tt.opts.Getenv = env(nil)
			}
			c, err := kube.Resolve(tt.opts)
			// ChooseContext is the first half of Resolve: the same
			// context, reason and error.
			name, source, cerr := kube.ChooseContext(tt.opts)
			if tt.errIs != nil || tt.errText != nil {
				require.Error(t, err)
				require.EqualError(t, cerr, err.Error())
				if tt.errIs != nil {
					require.ErrorIs(t, err, tt.errIs)
				}
				for _, s := range tt.errText {
					require.Contains(t, err.Error(), s)
				}
				require.NotContains(t, err.Error(), "secret-", "errors never show tokens")
				return
			}
			require.NoError(t, err)
			require.NoError(t, cerr)
			require.Equal(t, c.Context, name)
			require.Equal(t, c.ContextSource, source)
			require.Equal(t, tt.host, c.REST.Host)
			require.Equal(t, tt.namespace, c.Namespace)
			require.Equal(t, tt.explicit, c.NamespaceExplicit)
			require.Equal(t, tt.context, c.Context)
			if tt.source != "" {
				require.Equal(t, tt.source, c.ContextSource)
			}
			if tt.files != nil {
				require.Equal(t, tt.files, c.Files)
			}
			require.NotEmpty(t, c.REST.BearerToken)
		})
	}
}

func TestLoadBuildsClientsets(t *testing.T) {
	dir := t.TempDir()
	path := kubeconfig(t, dir, "config", "kind", [3]string{"kind", "127.0.0.1", "sbx"})
	c, err := kube.Load(kube.Options{Kubeconfig: path, UserAgent: "sbx/test"})
	require.NoError(t, err)
	require.NotNil(t, c.Kube)
	require.NotNil(t, c.Istio)
	require.NotNil(t, c.Dynamic, "Argo Rollouts need the dynamic client")
	require.Equal(t, "sbx/test", c.REST.UserAgent)
	require.Equal(t, "sbx", c.Namespace)
	require.Positive(t, c.REST.QPS)
}
