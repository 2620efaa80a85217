package kubetest_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/kube/kubetest"
)

// TestWriteKubeconfig: the fixture loads as kubectl would read it, with
// its current context, namespaces and server.
func TestWriteKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	require.Equal(t, path, kubetest.WriteKubeconfig(t, path, "dev", "https://127.0.0.1:1", "dev/team", "prod"))
	for _, tc := range []struct{ context, want, namespace string }{
		{"", "dev", "team"},
		{"prod", "prod", "default"},
	} {
		c, err := kube.Resolve(kube.Options{Kubeconfig: path, Context: tc.context})
		require.NoError(t, err)
		require.Equal(t, tc.want, c.Context)
		require.Equal(t, tc.namespace, c.Namespace)
		require.Equal(t, "https://127.0.0.1:1", c.REST.Host)
	}
}
