package scenarios

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/meshbridge"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/node"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// cp is the control plane every scenario of the package shares: each
// works in namespaces of its own. Starting one takes ~10-20 s.
var cp *controlplane.ControlPlane

// repoRoot is the sbx checkout (deploy/, testdata/).
var repoRoot string

// nodeDir holds the node stand-in's container logs; sbxBin is the sbx
// binary it runs relay pods with (built from the checkout once).
var nodeDir, sbxBin string

// theNode is the node stand-in every scenario shares (a scenario that
// restarts it replaces it).
var theNode *node.Node

// mesh is the simulator's mesh router over the real cluster's Services
// and VirtualServices; the baseline's apps call each other through it.
var mesh *meshbridge.Bridge

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("realcp: ")
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "deploy", "rbac.yaml"))
	}
	if err != nil {
		log.Printf("cannot find the sbx checkout four folders up: %v", err)
		return 1
	}
	repoRoot = root

	dir, err := os.MkdirTemp("", "sbx-realcp-")
	if err != nil {
		log.Print(err)
		return 1
	}
	keep := false
	defer func() {
		if _, err := os.Stat(filepath.Join(dir, "logs")); keep && err == nil {
			log.Printf("kept %s (logs, audit log, kubeconfigs) for a look", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err = controlplane.Start(ctx, controlplane.Options{Dir: dir, Logf: log.Printf})
	if err != nil {
		log.Printf("FAIL: start the control plane: %v", err)
		keep = true
		return 1
	}
	defer cp.Close()
	if err := setUpCluster(ctx); err != nil {
		log.Printf("FAIL: set up the cluster: %v", err)
		keep = true
		return 1
	}
	nodeDir = filepath.Join(dir, "node")
	sbxBin = filepath.Join(dir, "sbx")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-o", sbxBin, "./cmd/sbx")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		log.Printf("FAIL: build sbx: %v\n%s", err, out)
		return 1
	}
	log.Printf("built sbx in %s", time.Since(start).Round(100*time.Millisecond))
	adminClients, err := cluster.NewClients(cp.Admin)
	if err != nil {
		log.Print(err)
		return 1
	}
	if mesh, err = meshbridge.Start(ctx, adminClients.Kube, adminClients.Istio, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))); err != nil {
		log.Printf("FAIL: start the mesh: %v", err)
		keep = true
		return 1
	}
	defer mesh.Close()
	if theNode, err = startNode(ctx, netip.Prefix{}); err != nil {
		log.Printf("FAIL: start the node stand-in: %v", err)
		keep = true
		return 1
	}
	defer func() { theNode.Close() }()
	code := m.Run()
	if code == 0 {
		unused, err := unusedGrants()
		switch {
		case err != nil:
			log.Printf("FAIL: read the audit log for the grants used: %v", err)
			code = 1
		case len(unused) > 0:
			log.Printf("FAIL: deploy/rbac.yaml grants what no scenario needed (least privilege):\n  %s", strings.Join(unused, "\n  "))
			code = 1
		}
	}
	keep = code != 0 || os.Getenv("SBX_REALCP_KEEP") != ""
	return code
}

// nodeName is the node stand-in's Node.
const nodeName = "realcp-node"

// startNode starts the node stand-in (with its pods in subnet, if valid:
// a restarted stand-in keeps its pods' IPs).
func startNode(ctx context.Context, subnet netip.Prefix) (*node.Node, error) {
	return node.Start(ctx, node.Options{
		Name: nodeName, URL: cp.URL, CA: cp.CA, Sbx: sbxBin, Dir: nodeDir, Logf: log.Printf, Subnet: subnet,
		Apps: baselineApp, DialService: mesh.DialService,
	})
}

// hotrodImage is the baseline's image (testdata/baseline/hotrod.yaml): the
// node stand-in runs its services as the simulator's sample app, in
// process, calling each other through the mesh.
const hotrodImage = "jaegertracing/example-hotrod"

func baselineApp(image string, pod *corev1.Pod, c *corev1.Container) (http.Handler, bool) {
	repo, _, _ := strings.Cut(image, ":")
	if repo != hotrodImage || len(c.Args) == 0 {
		return nil, false
	}
	for _, a := range sim.BaselineApp() {
		if a.Name == c.Args[0] {
			return sim.NewAppHandler(sim.AppConfig{
				Service: a.Name, Version: "v1", Namespace: pod.Namespace, Pod: pod.Name, Calls: a.Calls,
				Client: sim.PodHTTPClient(mesh.Net.PodResolver(pod.Namespace, pod.Labels)),
			}), true
		}
	}
	return nil, false
}

// setUpCluster does what a cluster admin did once before developers use
// sbx: Istio's CRDs, istio-system, and the developer's cluster-wide
// binding to sbx-route-reader (the ClusterRole comes with deploy/rbac.yaml,
// which each scenario applies to its namespace).
func setUpCluster(ctx context.Context) error {
	crds, err := istioCRDs(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := controlplane.ApplyBytes(ctx, cp.Admin, "", crds); err != nil {
		return fmt.Errorf("install Istio's CRDs: %w", err)
	}
	log.Printf("installed Istio's CRDs in %s", time.Since(start).Round(100*time.Millisecond))
	admin, err := kubernetes.NewForConfig(cp.Admin)
	if err != nil {
		return err
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice-routes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "sbx-route-reader"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: controlplane.DeveloperUser}},
	}, metav1.CreateOptions{})
	return err
}

// istioCRDs reads the CRDs of the istio.io/api release sbx's Istio client
// is built from.
func istioCRDs(ctx context.Context) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		return nil, fmt.Errorf("find the istio.io/api module (go list -m): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return nil, fmt.Errorf("the istio.io/api module is not downloaded: run go mod download in tools/testbed/realcp")
	}
	return os.ReadFile(filepath.Join(dir, "kubernetes", "customresourcedefinitions.gen.yaml"))
}
