// Package kubetest holds test helpers shared by the packages that resolve
// kubeconfigs (the daemon, the CLI): a kubeconfig fixture writer, so that
// their tests agree on one format.
package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteKubeconfig writes a kubeconfig to path with one cluster at server
// and one user (both named after the file, so that merged files keep their
// own), the given contexts, each "name" or "name/namespace", and
// current-context current ("" for none). It returns path.
func WriteKubeconfig(t testing.TB, path, current, server string, contexts ...string) string {
	t.Helper()
	c := filepath.Base(path)
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\ncurrent-context: %q\n", current)
	fmt.Fprintf(&b, "clusters:\n- {name: %s, cluster: {server: %q}}\nusers:\n- {name: %s, user: {token: t}}\ncontexts:\n", c, server, c)
	for _, ctx := range contexts {
		name, ns, _ := strings.Cut(ctx, "/")
		fmt.Fprintf(&b, "- {name: %s, context: {cluster: %s, user: %s, namespace: %q}}\n", name, c, c, ns)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("write kubeconfig %s: %v", path, err)
	}
	return path
}
