package scenarios

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
)

// TestDoctor: sbx doctor's cluster checks against the real API server and
// its real RBAC: the developer bound as deploy/rbac.yaml says passes every
// check; in a namespace without the binding, the permissions check fails
// and names what is missing and the fix.
func TestDoctor(t *testing.T) {
	e := newEnv(t, "doctor", nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	kc := &kube.Cluster{REST: strictConfig(cp.Developer, e.warnings), Namespace: e.ns, Context: "developer"}
	if err := kc.BuildClients(); err != nil {
		t.Fatal(err)
	}
	c := live.NewFromKube(kc, live.Options{})
	defer c.Close()

	checks := c.Doctor(ctx, []string{e.ns}, e.sandbox())
	for _, ch := range checks {
		t.Logf("%s %s: %s", ch.Level, ch.Name, ch.Detail)
		if ch.Level != live.LevelOK {
			t.Errorf("check %q: %s: %s (fix: %s)", ch.Name, ch.Level, ch.Detail, ch.Fix)
		}
	}
	if len(checks) < 5 || !strings.Contains(checks[0].Detail, "v1.37.2") {
		t.Errorf("checks: %+v", checks)
	}

	// A namespace the developer has no binding in.
	unbound := e.ns + "-unbound"
	if _, err := e.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unbound}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Admin.CoreV1().Namespaces().Delete(context.Background(), unbound, metav1.DeleteOptions{})
	})
	var perm *live.Check
	for _, ch := range c.Doctor(ctx, []string{unbound}, nil) {
		if ch.Name == "permissions in "+unbound {
			perm = &ch
		}
	}
	switch {
	case perm == nil:
		t.Fatal("no permissions check for the unbound namespace")
	case perm.Level != live.LevelFail:
		t.Errorf("unbound namespace: %+v", *perm)
	case !strings.Contains(perm.Detail, "create deployments.apps (the relay)") || !strings.Contains(perm.Fix, "bind the Role sbx-developer"):
		t.Errorf("the failure names what is missing and the fix: %+v", *perm)
	}
}
