package controlplane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVersionLDFlags(t *testing.T) {
	got, err := versionLDFlags("v1.37.2", time.Date(2026, 10, 27, 12, 1, 4, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=v1.37.2",
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=37",
		"-X k8s.io/component-base/version.buildDate=2026-10-27T12:01:04Z",
		"-X k8s.io/client-go/pkg/version.gitVersion=v1.37.2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ldflags %q lack %q", got, want)
		}
	}
	if _, err := versionLDFlags("1.37", time.Time{}); err == nil {
		t.Error("a version without a patch level was accepted")
	}
}

func TestIsPackagePath(t *testing.T) {
	for line, want := range map[string]bool{
		"k8s.io/kubernetes/cmd/kube-apiserver":        true,
		"github.com/sbx-dev/sbx/tools/testbed/realcp": true,
		"# k8s.io/kubernetes/pkg/x":                   false,
		"pkg/x/y.go:12:3: undefined: z":               false,
		"go: downloading k8s.io/api v0.37.2":          false,
		"":                                            false,
	} {
		if got := isPackagePath(line); got != want {
			t.Errorf("isPackagePath(%q) = %v, want %v", line, got, want)
		}
	}
}

// A missing binary is an error that says how to build it.
func TestBinariesMissing(t *testing.T) {
	dir := t.TempDir()
	_, _, err := Binaries(dir)
	if err == nil || !strings.Contains(err.Error(), "make realcp-build") {
		t.Fatalf("Binaries of an empty folder: %v, want an error naming make realcp-build", err)
	}
	for _, name := range []string{APIServer, ControllerManager} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a, c, err := Binaries(dir)
	if err != nil || a != filepath.Join(dir, APIServer) || c != filepath.Join(dir, ControllerManager) {
		t.Fatalf("Binaries = %q, %q, %v", a, c, err)
	}
}

func TestBinDirEnv(t *testing.T) {
	t.Setenv(EnvBinDir, "/x/y")
	if d, err := BinDir(); err != nil || d != "/x/y" {
		t.Fatalf("BinDir with %s set = %q, %v", EnvBinDir, d, err)
	}
	t.Setenv(EnvBinDir, "")
	t.Setenv("XDG_CACHE_HOME", "/cache")
	d, err := BinDir()
	if err != nil || !strings.HasPrefix(d, "/cache/sbx-realcp/"+KubernetesVersion+"-") {
		t.Fatalf("BinDir = %q, %v, want it under /cache/sbx-realcp/%s-…", d, err, KubernetesVersion)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("freePorts(3) = %v, want 3 distinct ports", ports)
	}
}

// A missing kubectl is an error that says how to build it (the kubectlsim
// tests skip with it).
func TestKubectlBinaryMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := KubectlBinary(dir); err == nil || !strings.Contains(err.Error(), "make realcp-build") {
		t.Fatalf("KubectlBinary of an empty folder: %v, want an error naming make realcp-build", err)
	}
	if err := os.WriteFile(filepath.Join(dir, Kubectl), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := KubectlBinary(dir); err != nil || p != filepath.Join(dir, Kubectl) {
		t.Fatalf("KubectlBinary = %q, %v", p, err)
	}
}
