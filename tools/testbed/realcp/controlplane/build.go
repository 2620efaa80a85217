package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// KubernetesVersion is the release the control plane is built from: the
// version of k8s.io/kubernetes in this module's go.mod. Build checks that
// the two agree.
const KubernetesVersion = "v1.37.2"

// Binaries the control plane is built into, from k8s.io/kubernetes.
const (
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	// Kubectl is built beside the control plane for the tests that run the
	// real kubectl against the simulated cluster (package kubectlsim).
	Kubectl = "kubectl"
)

// EnvBinDir overrides where the binaries are built and looked for.
const EnvBinDir = "SBX_REALCP_BIN"

// BinDir is where Build puts the binaries and Start looks for them:
// $SBX_REALCP_BIN, else a folder of the user's cache directory keyed by the
// Kubernetes version and the platform, so that later runs (and other
// checkouts) reuse one build.
func BinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory to keep the control plane's binaries in (%w); set %s to a folder", err, EnvBinDir)
	}
	return filepath.Join(cache, "sbx-realcp", KubernetesVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH, "bin"), nil
}

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	// ModuleDir is this module's root (the folder of its go.mod), where
	// `go build` resolves k8s.io/kubernetes. Empty: found with `go env
	// GOMOD` from the working directory.
	ModuleDir string
	// BinDir is where the binaries go (default BinDir()).
	BinDir string
	// Go is the go command (default "go").
	Go string
	// Logf reports progress (default: none).
	Logf func(format string, args ...any)
	// Every is how often a running build reports progress (default 30s).
	Every time.Duration
}

// Build compiles kube-apiserver, kube-controller-manager and kubectl from the
// k8s.io/kubernetes module this module requires, with the version stamped
// the way Kubernetes' own build does (so /version says KubernetesVersion),
// into o.BinDir. The binaries come from one `go build`, which shares the
// packages they have in common (kubectl adds ~1 min to a warm build); the Go build cache makes a later build
// quick (the first takes ~10-15 min on 2 cores), and go build leaves
// binaries that are up to date alone.
func Build(ctx context.Context, o BuildOptions) error {
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Every <= 0 {
		o.Every = 30 * time.Second
	}
	if o.ModuleDir == "" {
		d, err := moduleDir(ctx, o.Go)
		if err != nil {
			return err
		}
		o.ModuleDir = d
	}
	if o.BinDir == "" {
		d, err := BinDir()
		if err != nil {
			return err
		}
		o.BinDir = d
	}
	mod, err := kubernetesModule(ctx, o.Go, o.ModuleDir)
	if err != nil {
		return err
	}
	if mod.Version != KubernetesVersion {
		return fmt.Errorf("%s/go.mod requires k8s.io/kubernetes %s but controlplane.KubernetesVersion is %s: change both together (and the staging replaces, v0.%s)",
			o.ModuleDir, mod.Version, KubernetesVersion, strings.TrimPrefix(KubernetesVersion, "v1."))
	}
	if err := os.MkdirAll(o.BinDir, 0o755); err != nil {
		return fmt.Errorf("create the folder for the control plane's binaries: %w", err)
	}

	ldflags, err := versionLDFlags(KubernetesVersion, mod.Time)
	if err != nil {
		return err
	}
	args := []string{"build", "-v", "-ldflags", ldflags, "-o", o.BinDir + string(filepath.Separator),
		"k8s.io/kubernetes/cmd/" + APIServer, "k8s.io/kubernetes/cmd/" + ControllerManager, "k8s.io/kubernetes/cmd/" + Kubectl}
	cmd := exec.CommandContext(ctx, o.Go, args...)
	cmd.Dir = o.ModuleDir
	// Kubernetes releases these binaries static, without cgo.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = cmd.Stderr

	o.Logf("building %s, %s and %s %s into %s (the first build takes ~10-15 min on 2 cores; later ones use the Go build cache)",
		APIServer, ControllerManager, Kubectl, KubernetesVersion, o.BinDir)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s build: %w", o.Go, err)
	}
	// go build -v names each package it compiles (on stderr, with the
	// errors): count them for progress, keep the rest for the error.
	var compiled atomic.Int64
	var tail lastLines
	scanned := make(chan struct{})
	go func() { // ends when go build closes its stderr, which Wait below waits for
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if isPackagePath(line) {
				compiled.Add(1)
				continue
			}
			tail.add(line)
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
wait:
	for {
		select {
		case <-scanned:
			break wait
		case <-tick.C:
			o.Logf("building %s, %s and %s: %d packages compiled, %s", APIServer, ControllerManager, Kubectl,
				compiled.Load(), time.Since(start).Round(time.Second))
		}
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("build %s, %s and %s: %w (after %s)", APIServer, ControllerManager, Kubectl, ctx.Err(), time.Since(start).Round(time.Second))
		}
		return fmt.Errorf("build %s, %s and %s in %s: %w\n%s", APIServer, ControllerManager, Kubectl, o.ModuleDir, err, tail.String())
	}
	o.Logf("built %s, %s and %s %s in %s (%d packages compiled)", APIServer, ControllerManager, Kubectl, KubernetesVersion,
		time.Since(start).Round(time.Second), compiled.Load())
	return nil
}

// Binaries returns the paths of the built binaries, or an error that says
// how to build them.
func Binaries(dir string) (apiserver, controllerManager string, err error) {
	if dir == "" {
		if dir, err = BinDir(); err != nil {
			return "", "", err
		}
	}
	apiserver, controllerManager = filepath.Join(dir, APIServer), filepath.Join(dir, ControllerManager)
	for _, p := range []string{apiserver, controllerManager} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%s %s is not built (%w): run `make realcp-build` (or `go run ./cmd/build-controlplane` in tools/testbed/realcp) first; the first build takes ~10-15 min",
				filepath.Base(p), KubernetesVersion, err)
		}
	}
	return apiserver, controllerManager, nil
}

// KubectlBinary returns the path of the built kubectl, or an error that
// says how to build it.
func KubectlBinary(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = BinDir(); err != nil {
			return "", err
		}
	}
	p := filepath.Join(dir, Kubectl)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s %s is not built (%w): run `make realcp-build` (or `go run ./cmd/build-controlplane` in tools/testbed/realcp) first; ~1 min when the control plane is already built",
			Kubectl, KubernetesVersion, err)
	}
	return p, nil
}

// versionLDFlags stamps the version into the packages Kubernetes' own
// build stamps (hack/lib/version.sh): component-base's, which /version
// serves, and client-go's, which user agents carry. The build date is the
// release's commit time, so that two builds link the same binary.
func versionLDFlags(version string, released time.Time) (string, error) {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) != 3 {
		return "", fmt.Errorf("Kubernetes version %q is not vMAJOR.MINOR.PATCH", version)
	}
	vars := [][2]string{
		{"gitVersion", version},
		{"gitMajor", parts[0]},
		{"gitMinor", parts[1]},
		{"gitTreeState", "clean"},
		{"buildDate", released.UTC().Format(time.RFC3339)},
	}
	flags := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		for _, kv := range vars {
			flags = append(flags, "-X", pkg+"."+kv[0]+"="+kv[1])
		}
	}
	return strings.Join(flags, " "), nil
}

type moduleInfo struct {
	Version string
	Time    time.Time
}

func kubernetesModule(ctx context.Context, goCmd, dir string) (moduleInfo, error) {
	cmd := exec.CommandContext(ctx, goCmd, "list", "-m", "-json", "k8s.io/kubernetes")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return moduleInfo{}, fmt.Errorf("find k8s.io/kubernetes in %s/go.mod (go list -m): %w%s", dir, err, stderrOf(err))
	}
	var m moduleInfo
	if err := json.Unmarshal(out, &m); err != nil {
		return moduleInfo{}, fmt.Errorf("read go list -m k8s.io/kubernetes: %w", err)
	}
	return m, nil
}

func moduleDir(ctx context.Context, goCmd string) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w%s", err, stderrOf(err))
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not in a Go module: run the build from tools/testbed/realcp, or pass its folder")
	}
	return filepath.Dir(gomod), nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return "\n" + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// isPackagePath tells go build -v's package lines from its messages.
func isPackagePath(line string) bool {
	return line != "" && !strings.ContainsAny(line, " \t:") && !strings.HasPrefix(line, "#")
}

// lastLines keeps the last lines of a stream for an error message.
type lastLines struct{ lines []string }

func (l *lastLines) add(s string) {
	const keep = 40
	l.lines = append(l.lines, s)
	if len(l.lines) > keep {
		l.lines = l.lines[len(l.lines)-keep:]
	}
}

func (l *lastLines) String() string { return strings.Join(l.lines, "\n") }
