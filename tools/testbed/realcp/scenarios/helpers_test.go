package scenarios

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/cluster/spec/specfile"
	"github.com/sbx-dev/sbx/tools/testbed/realcp/controlplane"
	"github.com/sbx-dev/sbx/tunnel"
)

// relayImage is the relay image the scenarios render: the node stand-in
// runs the sbx binary built from the checkout for it.
const relayImage = "ghcr.io/sbx-dev/sbx:realcp-test"

// env is one scenario's namespace on the shared control plane, set up as
// a cluster admin would for a developer: the baseline (testdata/baseline/
// hotrod.yaml) deployed, deploy/rbac.yaml applied and its Role bound to
// the developer. Dev acts as the developer, with strict field validation
// on every write; any warning the API server sends it fails the test, and
// so does any request of the developer the API server forbade.
type env struct {
	t     *testing.T
	ns    string
	Admin kubernetes.Interface
	// AdminClients are sbx's clients as the admin, for looking.
	AdminClients cluster.Clients
	// Dev are sbx's clients as the developer.
	Dev      cluster.Clients
	warnings *warnings
	// expectForbidden, if set, marks the developer's requests a test
	// expects RBAC to refuse (a cluster-wide list the Role does not
	// grant): checkDeveloperRequests lets those through.
	expectForbidden func(controlplane.AuditEvent) bool
	// lenientWrites lets the developer's writes go without strict field
	// validation (the sbx binary's own requests: it does not ask for it).
	lenientWrites bool
}

// namespaceUses counts the envs of each name (tests run one at a time).
var namespaceUses = map[string]int{}

// newEnv makes namespace ns (with labels) and sets it up. The checks that
// the developer saw no 403 and no warning run when the test ends.
func newEnv(t *testing.T, ns string, labels map[string]string) *env {
	t.Helper()
	// Namespaces go away in the background: a test run again (-count)
	// gets a new one.
	if n := namespaceUses[ns]; n > 0 {
		namespaceUses[ns]++
		ns = fmt.Sprintf("%s-%d", ns, n+1)
	} else {
		namespaceUses[ns] = 1
	}
	ctx := t.Context()
	e := &env{t: t, ns: ns, warnings: &warnings{}}
	mark := auditMark(t)
	t.Cleanup(func() {
		e.expectNoWarnings()
		checkDeveloperRequests(t, ns, mark, e.expectForbidden, e.lenientWrites)
	})

	// The admin's warnings (Pod Security on the baseline's sample apps,
	// which are not sbx's) go to the test's log.
	adminCfg := rest.CopyConfig(cp.Admin)
	adminCfg.WarningHandler = logWarnings{t}
	var err error
	e.Admin, err = kubernetes.NewForConfig(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.AdminClients, err = cluster.NewClients(adminCfg); err != nil {
		t.Fatal(err)
	}
	if e.Dev, err = cluster.NewClients(strictConfig(cp.Developer, e.warnings)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		// The namespace controller empties it in the background.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Admin.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %s: %v", ns, err)
		}
	})
	// The baseline in ns, its ingress host of its own: scenarios share the
	// control plane, and one gateway host routed from two namespaces makes
	// sbx warn (rightly) that a keyed twin of its route would misroute.
	baseline := readRepoFile(t, "testdata", "baseline", "hotrod.yaml")
	baseline = strings.ReplaceAll(baseline, "namespace: hotrod", "namespace: "+ns)
	baseline = strings.ReplaceAll(baseline, "hotrod.example.com", ns+".example.com")
	if err := controlplane.ApplyBytes(ctx, adminCfg, ns, []byte(baseline)); err != nil {
		t.Fatalf("deploy the baseline (testdata/baseline/hotrod.yaml) to %s: %v", ns, err)
	}
	if err := controlplane.ApplyBytes(ctx, adminCfg, ns, []byte(readRepoFile(t, "deploy", "rbac.yaml"))); err != nil {
		t.Fatalf("apply deploy/rbac.yaml to %s: %v", ns, err)
	}
	// As deploy/rbac.yaml says: kubectl create rolebinding -n NS sbx-alice
	// --role=sbx-developer --user=alice@example.com
	if _, err := e.Admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sbx-alice"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "sbx-developer"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: controlplane.DeveloperUser}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("bind sbx-developer to %s in %s: %v", controlplane.DeveloperUser, ns, err)
	}
	e.waitAuthorized(
		authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: "coordination.k8s.io", Resource: "leases"},
		authorizationv1.ResourceAttributes{Verb: "list", Group: "networking.istio.io", Resource: "virtualservices"},
	)
	return e
}

// waitAuthorized waits until the API server's RBAC authorizer, which
// learns of new roles and bindings from a watch, allows the developer
// each of attrs: a request right after the binding may be forbidden
// otherwise (seen under load), as on any cluster.
func (e *env) waitAuthorized(attrs ...authorizationv1.ResourceAttributes) {
	e.t.Helper()
	for _, a := range attrs {
		var reason string
		err := wait.PollUntilContextTimeout(e.t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			r, err := e.Admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{User: controlplane.DeveloperUser, ResourceAttributes: &a},
			}, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			reason = r.Status.Reason
			return r.Status.Allowed, nil
		})
		if err != nil {
			e.t.Fatalf("%s is not allowed to %s %s.%s in %q after the bindings (%s): %v",
				controlplane.DeveloperUser, a.Verb, a.Resource, a.Group, a.Namespace, reason, err)
		}
	}
}

// twoWorkloads is a sandbox of route (whose mesh VirtualService CD owns:
// sbx adds routes to it) and frontend (routed by gateway VirtualServices
// only: sbx writes its own VirtualService and keyed twins of the gateway
// routes), in namespace @{ns}.
const twoWorkloads = `name: alice
spec:
  description: route and frontend on my laptop
  labels: {team: backend}
  local:
    - name: route
      from: {kind: Deployment, namespace: '@{ns}', name: route}
      mappings:
        - port: 8083
          toLocal: localhost:8083
    - name: frontend
      from: {kind: Deployment, namespace: '@{ns}', name: frontend}
      mappings:
        - port: 8080
          toLocal: localhost:8080
`

// sandbox parses twoWorkloads for the env's namespace with sbx's own
// spec parser.
func (e *env) sandbox() *spec.Sandbox {
	e.t.Helper()
	sb, err := specfile.Parse("alice.yaml", []byte(twoWorkloads), map[string]string{"ns": e.ns})
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

// apply applies sb as the developer with sbx's own code (what `sbx
// connect` does before it waits for the relay) and returns the result
// and the progress events.
func (e *env) apply(sb *spec.Sandbox, token string) (*cluster.Result, []cluster.Event) {
	e.t.Helper()
	var events []cluster.Event
	res, err := cluster.Apply(e.t.Context(), e.Dev, sb, cluster.Options{
		TokenVerifier: tunnel.VerifierOf(token).String(),
		RelayImage:    relayImage,
		Holder:        "alice@laptop",
	}, func(ev cluster.Event) {
		e.t.Logf("apply: %s", ev)
		events = append(events, ev)
	})
	if err != nil {
		e.t.Fatalf("cluster.Apply as %s: %v", controlplane.DeveloperUser, err)
	}
	return res, events
}

func (e *env) expectNoWarnings() {
	for _, w := range e.warnings.all() {
		e.t.Errorf("the API server warned the developer: %s", w)
	}
}

func newToken(t *testing.T) string {
	t.Helper()
	tok, err := cluster.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func readRepoFile(t *testing.T, path ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{repoRoot}, path...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// strictConfig is cfg with every create, update and patch sent with
// fieldValidation=Strict (an unknown or duplicate field is an error, not a
// warning) and the API server's warnings recorded in w.
func strictConfig(cfg *rest.Config, w *warnings) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return strictValidation{rt} }
	c.WarningHandler = w
	return c
}

type strictValidation struct{ next http.RoundTripper }

func (s strictValidation) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		r = r.Clone(r.Context())
		q := r.URL.Query()
		q.Set("fieldValidation", "Strict")
		r.URL.RawQuery = q.Encode()
	}
	return s.next.RoundTrip(r)
}

// logWarnings logs the API server's warnings to the test.
type logWarnings struct{ t *testing.T }

func (l logWarnings) HandleWarningHeader(code int, agent, text string) {
	l.t.Logf("the API server warned the admin: %s", text)
}

// warnings records the API server's warnings (rest.WarningHandler).
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, fmt.Sprintf("%d %s", code, text))
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}

// auditMark is where the audit log is now, for checkDeveloperRequests.
func auditMark(t *testing.T) int {
	t.Helper()
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	return len(events)
}

// checkDeveloperRequests fails t for each request of the developer since
// mark that the API server answered with 403, or that wrote without
// strict field validation (the checks would prove less than they say). A
// sentinel request first makes sure every earlier answer is in the log;
// the developer must have made some request at all.
func checkDeveloperRequests(t *testing.T, ns string, mark int, expected func(controlplane.AuditEvent) bool, lenient bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := kubernetes.NewForConfig(cp.Admin)
	if err != nil {
		t.Fatal(err)
	}
	sentinel := fmt.Sprintf("audit-sentinel-%d", time.Now().UnixNano())
	if _, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("sentinel request: %v", err)
	}
	var events []controlplane.AuditEvent
	for {
		if events, err = cp.AuditEvents(); err != nil {
			t.Fatal(err)
		}
		if hasSentinel(events[mark:], sentinel) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the audit log %s never showed the sentinel request: is the audit log written?", cp.AuditLog)
		case <-time.After(50 * time.Millisecond):
		}
	}
	seen := 0
	for _, e := range events[mark:] {
		if e.User.Username != controlplane.DeveloperUser {
			continue
		}
		seen++
		if e.Code() == http.StatusForbidden && (expected == nil || !expected(e)) {
			t.Errorf("forbidden by RBAC (deploy/rbac.yaml lacks a rule): %s", e)
		}
		switch e.Verb {
		case "create", "update", "patch":
			if !lenient && !strings.Contains(e.RequestURI, "fieldValidation=Strict") {
				t.Errorf("a write without strict field validation: %s (%s)", e, e.RequestURI)
			}
		}
	}
	if seen == 0 && !t.Failed() {
		t.Errorf("the audit log has no request of %s since the test began: the 403 check proves nothing", controlplane.DeveloperUser)
	}
	checked := "403s and strict validation"
	if lenient {
		checked = "403s"
	}
	t.Logf("audit log: %d requests of %s checked for %s", seen, controlplane.DeveloperUser, checked)
}

func hasSentinel(events []controlplane.AuditEvent, name string) bool {
	for _, e := range events {
		if e.ObjectRef != nil && e.ObjectRef.Name == name {
			return true
		}
	}
	return false
}
