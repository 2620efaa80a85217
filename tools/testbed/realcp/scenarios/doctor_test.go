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
// check, including a relay probe of the image (started with the Role's
// permissions, scheduled and run by the node stand-in, and deleted); an
// image the node cannot pull fails the check naming it; in a namespace
// without the binding, the permissions check fails and names what is
// missing and the fix, and no probe is tried.
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

	checks := c.Doctor(ctx, live.DoctorOptions{Namespaces: []string{e.ns}, Sandbox: e.sandbox(), RelayImage: relayImage,
		Progress: func(msg string) { t.Log(msg) }})
	argo := false
	for _, ch := range checks {
		t.Logf("%s %s: %s", ch.Level, ch.Name, ch.Detail)
		if ch.Name == "routes" && ch.Level == live.LevelWarn && strings.Contains(ch.Detail, "synced by Argo CD") {
			argo = true // the baseline's VirtualService carries Argo CD's mark
			continue
		}
		if ch.Level != live.LevelOK {
			t.Errorf("check %q: %s: %s (fix: %s)", ch.Name, ch.Level, ch.Detail, ch.Fix)
		}
	}
	if !argo {
		t.Error("no warning about the Argo CD-synced VirtualService")
	}
	if len(checks) < 8 || !strings.Contains(checks[0].Detail, "v1.37.2") {
		t.Errorf("checks: %+v", checks)
	}
	noLeftovers := func() {
		t.Helper()
		leases, err := e.Admin.CoordinationV1().Leases(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		deps, err := e.Admin.AppsV1().Deployments(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases.Items {
			t.Errorf("the probe left Lease %s", l.Name)
		}
		for _, d := range deps.Items {
			if strings.HasPrefix(d.Name, "sbx-") {
				t.Errorf("the probe left Deployment %s", d.Name)
			}
		}
	}
	noLeftovers()

	const missing = "ghcr.io/sbx-dev/sbx:doctor-missing"
	theNode.FailPull(missing)
	var img *live.Check
	for _, ch := range c.Doctor(ctx, live.DoctorOptions{Namespaces: []string{e.ns}, RelayImage: missing}) {
		if ch.Name == "relay image" {
			img = &ch
		}
	}
	switch {
	case img == nil:
		t.Fatal("no relay image check")
	case img.Level != live.LevelFail || !strings.Contains(img.Detail, "cannot pull "+missing) || !strings.Contains(img.Fix, "relayImage"):
		t.Errorf("an image the node cannot pull: %+v", *img)
	}
	noLeftovers()

	// A namespace the developer has no binding in.
	unbound := e.ns + "-unbound"
	if _, err := e.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unbound}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Admin.CoreV1().Namespaces().Delete(context.Background(), unbound, metav1.DeleteOptions{})
	})
	var perm *live.Check
	var probe *live.Check
	for _, ch := range c.Doctor(ctx, live.DoctorOptions{Namespaces: []string{unbound}, RelayImage: relayImage}) {
		switch ch.Name {
		case "permissions in " + unbound:
			perm = &ch
		case "relay image":
			probe = &ch
		}
	}
	if probe == nil || probe.Level != live.LevelWarn || !strings.Contains(probe.Detail, "not tried") {
		t.Errorf("the probe in a namespace without permissions: %+v", probe)
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
