package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/kube/kubetest"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
)

// TestKubeconfigSource: the kubeconfig sent to the daemon is absolute;
// --kubeconfig is one file, never split; $KUBECONFIG is a list and, as in
// kubectl, its empty elements are ignored (made absolute they would name
// the working directory).
func TestKubeconfigSource(t *testing.T) {
	wd, err := os.Getwd()
	require.NoError(t, err)
	sep := string(filepath.ListSeparator)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	colon := filepath.Join(t.TempDir(), "x"+sep+"y", "config")
	list := func(p ...string) string { return strings.Join(p, sep) }
	tests := []struct {
		name, flag, env string
		file            string
		envList         []string
	}{
		{name: "nothing"},
		{name: "flag wins", flag: a, env: b, file: a},
		{name: "relative flag", flag: "kc", file: filepath.Join(wd, "kc")},
		{name: "flag with the separator in a directory name", flag: colon, file: colon},
		{name: "env list", env: list(a, b), envList: []string{a, b}},
		{name: "relative env element", env: list("kc", b), envList: []string{filepath.Join(wd, "kc"), b}},
		{name: "leading separator", env: list("", a), envList: []string{a}},
		{name: "trailing separator", env: list(a, b, ""), envList: []string{a, b}},
		{name: "empty middle element", env: list(a, "", b), envList: []string{a, b}},
		{name: "only separators", env: sep + sep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			got := kubeconfigSource(&globalOptions{kubeconfig: tt.flag})
			require.Equal(t, tt.file, got.KubeconfigFile)
			require.Equal(t, tt.envList, got.KubeconfigEnv)
			require.NotContains(t, got.KubeconfigEnv, wd, "never the working directory")
		})
	}
}

// TestKubeconfigFlagReachesDaemon: a --kubeconfig whose directory name
// contains the list separator selects that one file all the way from the
// flag through the JSON of connect and gc requests to the options the
// daemon loads it with; a $KUBECONFIG list with an empty element merges
// its two files there.
func TestKubeconfigFlagReachesDaemon(t *testing.T) {
	sep := string(filepath.ListSeparator)
	dir := filepath.Join(t.TempDir(), "team"+sep+"a")
	require.NoError(t, os.Mkdir(dir, 0o700))
	colon := kubetest.WriteKubeconfig(t, filepath.Join(dir, "config"), "dev", "https://127.0.0.1:1", "dev")
	first := kubetest.WriteKubeconfig(t, filepath.Join(t.TempDir(), "first"), "", "https://127.0.0.2:1", "first")
	second := kubetest.WriteKubeconfig(t, filepath.Join(t.TempDir(), "second"), "second", "https://127.0.0.3:1", "second")

	for _, tc := range []struct {
		name, flag, env, context string // context: the --context flag
		kctx, host               string // kctx: the context it resolves to
		files                    []string
	}{
		{name: "--kubeconfig", flag: colon, context: "dev", kctx: "dev", host: "https://127.0.0.1:1", files: []string{colon}},
		{name: "KUBECONFIG merged, current context of the second file", env: strings.Join([]string{first, second, ""}, sep), kctx: "second", host: "https://127.0.0.3:1", files: []string{first, second}},
		{name: "KUBECONFIG context of the first file", env: strings.Join([]string{first, second, ""}, sep), context: "first", kctx: "first", host: "https://127.0.0.2:1", files: []string{first, second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.env)
			g := &globalOptions{kubeconfig: tc.flag, context: tc.context}
			for name, v := range map[string]any{
				"connect": &api.ConnectRequest{KubeconfigSource: kubeconfigSource(g), Context: g.context},
				"gc":      new(clusterRequest(g)),
			} {
				b, err := json.Marshal(v)
				require.NoError(t, err)
				var got api.ClusterRequest // connect's cluster fields read alike
				require.NoError(t, json.Unmarshal(b, &got), name)
				opts := daemon.SourceOptions(got.KubeconfigSource)
				opts.Context = got.Context
				kc, err := kube.Resolve(opts)
				require.NoError(t, err, name)
				require.Equal(t, tc.kctx, kc.Context, name)
				require.Equal(t, tc.host, kc.REST.Host, name)
				require.Equal(t, tc.files, kc.Files, name)
			}
		})
	}
}
