// Package kubectlsim runs the real kubectl (built from k8s.io/kubernetes by
// `make realcp-build`, beside the control plane) against the simulated
// cluster of `sbx demo --keep` (package sim): what a user of the demo
// types first must work there.
package kubectlsim

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// kubectlEnv runs kubectl with the kubeconfig of a simulated cluster.
type kubectlEnv struct {
	t          *testing.T
	bin        string
	kubeconfig string
	home       string
}

func (k *kubectlEnv) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.bin, args...)
	// A HOME of its own: kubectl's discovery cache (~/.kube/cache) must
	// not carry over between runs or from a user's clusters.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+k.kubeconfig, "HOME="+k.home)
	return cmd
}

// run runs kubectl and returns its stdout; it fails the test with both
// outputs when kubectl fails.
func (k *kubectlEnv) run(args ...string) string {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := k.cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		k.t.Fatalf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	k.t.Logf("kubectl %s (%s):\n%s%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	return stdout.String()
}

// fail runs kubectl, expects it to fail and returns its stderr.
func (k *kubectlEnv) fail(args ...string) string {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := k.cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		k.t.Fatalf("kubectl %s succeeded, want a failure:\n%s", strings.Join(args, " "), stdout.String())
	}
	k.t.Logf("kubectl %s failed as it should:\n%s", strings.Join(args, " "), stderr.String())
	return stderr.String()
}

func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: the output lacks %q:\n%s", what, w, out)
		}
	}
}

// TestKubectlAgainstSim: get, describe, logs, port-forward, apply and auth
// can-i of the real kubectl against the simulated API server, as the
// kubeconfig `sbx demo --keep` prints.
func TestKubectlAgainstSim(t *testing.T) {
	bin, err := controlplane.KubectlBinary("")
	if err != nil {
		t.Skipf("no real kubectl to test with: %v", err)
	}
	ctx := context.Background()
	c, err := sim.Start(ctx, sim.Options{})
	if err != nil {
		t.Fatalf("start the simulated cluster: %v", err)
	}
	defer c.Close()
	dir := t.TempDir()
	k := &kubectlEnv{t: t, bin: bin, kubeconfig: filepath.Join(dir, "kubeconfig"), home: filepath.Join(dir, "home")}
	if err := c.WriteKubeconfig(k.kubeconfig); err != nil {
		t.Fatal(err)
	}

	t.Run("get", func(t *testing.T) {
		k.t = t
		contains(t, "get ns", k.run("get", "ns"), "default", sim.AppNamespace, "istio-system")
		contains(t, "get pods", k.run("get", "pods", "-n", sim.AppNamespace), "frontend-", "driver-", "route-", "Running")
		contains(t, "get pods -A -o wide", k.run("get", "pods", "-A", "-o", "wide"), "NAMESPACE", sim.AppNamespace, "10.244.")
		contains(t, "get deploy", k.run("get", "deploy", "-n", sim.AppNamespace), "frontend", "driver", "route")
		contains(t, "get svc", k.run("get", "svc", "-n", sim.AppNamespace), "frontend", "driver", "route")
		contains(t, "get virtualservices", k.run("get", "virtualservices", "-n", sim.AppNamespace), "route")
		contains(t, "get vs -o yaml", k.run("get", "vs", "route", "-o", "yaml"), "kind: VirtualService", "name: default")
		contains(t, "api-resources", k.run("api-resources"), "pods", "deployments", "virtualservices")
		contains(t, "get all", k.run("get", "all"), "pod/driver-", "service/route", "deployment.apps/frontend")
		contains(t, "rollout status", k.run("rollout", "status", "deploy/route", "--timeout=10s"), "successfully rolled out")
	})

	pod := strings.TrimPrefix(strings.TrimSpace(k.run("get", "pods", "-l", "app=driver", "-o", "name")), "pod/")
	if pod == "" {
		t.Fatal("no driver pod")
	}

	t.Run("describe", func(t *testing.T) {
		k.t = t
		contains(t, "describe pod", k.run("describe", "pod", pod), "Name:", pod, "Namespace:", sim.AppNamespace, "Status:", "Running")
	})

	t.Run("logs", func(t *testing.T) {
		k.t = t
		out := k.run("logs", pod)
		contains(t, "logs", out, "sample service listening")
		if strings.Contains(out, `"kind"`) || strings.Contains(out, "apiVersion") {
			t.Errorf("kubectl logs printed an object, not a log:\n%s", out)
		}
		k.run("logs", "deploy/driver", "--tail=1")
	})

	t.Run("port-forward", func(t *testing.T) {
		k.t = t
		portForward(t, k, pod)
	})

	t.Run("apply", func(t *testing.T) {
		k.t = t
		cm := filepath.Join(dir, "cm.yaml")
		write := func(v string) {
			if err := os.WriteFile(cm, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kubectl-test\ndata:\n  greeting: "+v+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		write("hello")
		contains(t, "apply (create)", k.run("apply", "-f", cm), "configmap/kubectl-test created")
		write("again")
		contains(t, "apply (patch)", k.run("apply", "-f", cm), "configmap/kubectl-test configured")
		contains(t, "get cm", k.run("get", "cm", "kubectl-test", "-o", "jsonpath={.data.greeting}"), "again")
		write("server")
		contains(t, "apply --server-side", k.run("apply", "--server-side", "-f", cm), "configmap/kubectl-test serverside-applied")
		contains(t, "get cm", k.run("get", "cm", "kubectl-test", "-o", "jsonpath={.data.greeting}"), "server")
		contains(t, "delete", k.run("delete", "-f", cm), "deleted")
		// kubectl validates on the server (fieldValidation=Strict): a typo
		// is refused and named.
		if err := os.WriteFile(cm, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndta:\n  a: b\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		contains(t, "apply with a typo", k.fail("apply", "-f", cm), `unknown field "dta"`)
	})

	// The kubectl commands sbx's own hints, sbx demo --keep and the
	// README suggest.
	t.Run("hints", func(t *testing.T) {
		k.t = t
		for _, args := range sim.KubectlExamples {
			if out := k.run(args...); strings.TrimSpace(out) == "" {
				t.Errorf("kubectl %s (printed by sbx demo --keep) printed nothing", strings.Join(args, " "))
			}
		}
		ns := sim.AppNamespace
		contains(t, "baseline export", k.run("get", "deploy,sts,svc,virtualservices", "-n", ns, "-o", "yaml"),
			"kind: Deployment", "kind: Service", "kind: VirtualService")
		contains(t, "get by selector", k.run("get", "pods", "-n", ns, "-l", "app=driver"), "driver-")
		contains(t, "describe deployment", k.run("describe", "deployment", "-n", ns, "driver"), "Name:", "driver", "Replicas:")
		k.run("annotate", "virtualservice", "-n", ns, "route", "sbx.dev/ignore=true")
		contains(t, "annotated", k.run("get", "vs", "-n", ns, "route", "-o", "jsonpath={.metadata.annotations}"), "sbx.dev/ignore")
		k.run("annotate", "virtualservice", "-n", ns, "route", "sbx.dev/ignore-")
		if out := k.run("get", "vs", "-n", ns, "route", "-o", "jsonpath={.metadata.annotations}"); strings.Contains(out, "sbx.dev/ignore") {
			t.Errorf("kubectl annotate ...- left the annotation: %s", out)
		}
	})

	t.Run("get -w", func(t *testing.T) {
		k.t = t
		watchConfigMaps(t, k, c)
	})

	t.Run("auth can-i", func(t *testing.T) {
		k.t = t
		contains(t, "auth can-i", k.run("auth", "can-i", "list", "pods"), "yes")
		contains(t, "auth can-i --list", k.run("auth", "can-i", "--list"), "*.*")
	})
}

// portForward runs kubectl port-forward to the pod's port 8082 on a port
// kubectl picks and fetches a page through it.
func portForward(t *testing.T, k *kubectlEnv, pod string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, stderr, stop := start(t, k.cmd(ctx, "port-forward", "pod/"+pod, ":8082"), cancel)
	defer stop()
	// "Forwarding from 127.0.0.1:41234 -> 8082"
	re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> 8082`)
	sc := bufio.NewScanner(stdout)
	addr := ""
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatalf("kubectl port-forward printed no local address: %v\nstderr:\n%s", sc.Err(), stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/pf", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET through kubectl port-forward %s: %v\nstderr:\n%s", addr, err, stderr.String())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"driver"`) {
		t.Fatalf("GET through kubectl port-forward: %s %s", resp.Status, body)
	}
	t.Logf("through kubectl port-forward %s: %s", addr, bytes.TrimSpace(body))
}

// start runs a long-lived kubectl command; stop cancels its context and
// waits for it.
func start(t *testing.T, cmd *exec.Cmd, cancel context.CancelFunc) (io.Reader, *bytes.Buffer, func()) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return stdout, &stderr, func() {
		cancel()
		_ = cmd.Wait()
	}
}

// watchConfigMaps runs kubectl get configmaps -w and creates one: the
// change is printed with the ConfigMap columns (NAME DATA AGE).
func watchConfigMaps(t *testing.T, k *kubectlEnv, c *sim.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stdout, stderr, stop := start(t, k.cmd(ctx, "get", "configmaps", "-w"), cancel)
	defer stop()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	created := false
	var seen []string
	deadline := time.After(15 * time.Second)
	for {
		if !created {
			// Before or after kubectl's list, the line comes: from the
			// list or from the watch that follows it.
			if _, err := c.Clients.Kube.CoreV1().ConfigMaps(sim.AppNamespace).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: "watched"}, Data: map[string]string{"a": "1", "b": "2"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			created = true
		}
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl get -w ended; printed %q\nstderr:\n%s", seen, stderr.String())
			}
			seen = append(seen, l)
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "watched" {
				if f[1] != "2" {
					t.Fatalf("kubectl get -w printed %q, want the DATA column (2)", l)
				}
				t.Logf("kubectl get configmaps -w printed:\n%s", strings.Join(seen, "\n"))
				return
			}
		case <-deadline:
			t.Fatalf("kubectl get -w did not print the new ConfigMap; printed %q\nstderr:\n%s", seen, stderr.String())
		}
	}
}
