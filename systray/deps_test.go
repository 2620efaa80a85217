package systray

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesInTray keeps the tray a client of the local API only:
// it links daemon/api and daemon/client, never the daemon's Kubernetes
// and Istio adapters (issue 15; before the split ~470 such packages), nor
// a YAML library (the spec's types come without specfile's parser).
func TestNoKubernetesInTray(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/sbx-dev/sbx/systray").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "istio.io/") || strings.Contains(p, "yaml") {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("the tray links %d Kubernetes, Istio or YAML packages, e.g. %s; import daemon/api and daemon/client, not daemon", len(bad), strings.Join(bad[:min(5, len(bad))], ", "))
	}
}
