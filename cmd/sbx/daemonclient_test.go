package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKubeconfigForDaemon: the kubeconfig sent to the daemon is absolute
// and, like kubectl's reading of $KUBECONFIG, ignores empty list elements
// (which made absolute would name the working directory).
func TestKubeconfigForDaemon(t *testing.T) {
	wd, err := os.Getwd()
	require.NoError(t, err)
	sep := string(filepath.ListSeparator)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	list := func(p ...string) string { return strings.Join(p, sep) }
	tests := []struct {
		name, flag, env, want string
	}{
		{name: "nothing", want: ""},
		{name: "flag wins", flag: a, env: b, want: a},
		{name: "relative flag", flag: "kc", want: filepath.Join(wd, "kc")},
		{name: "env list", env: list(a, b), want: list(a, b)},
		{name: "leading separator", env: list("", a), want: a},
		{name: "trailing separator", env: list(a, b, ""), want: list(a, b)},
		{name: "empty middle element", env: list(a, "", b), want: list(a, b)},
		{name: "only separators", env: sep + sep, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			got := kubeconfigForDaemon(&globalOptions{kubeconfig: tt.flag})
			require.Equal(t, tt.want, got)
			require.NotContains(t, filepath.SplitList(got), wd, "never the working directory")
		})
	}
}
