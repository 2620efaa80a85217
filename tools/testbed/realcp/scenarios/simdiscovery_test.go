package scenarios

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

// TestSimDiscoveryMatchesRealAPIServer: the simulated API server's
// discovery (what kubectl reads to map `deploy` or `vs` to a URL) tells
// scope, kind, short names and category all as the real kube-apiserver (with Istio's
// CRDs) does, for every resource both serve in the same group version.
// The sim's scope and short-name tables are written by hand; this keeps
// them true.
func TestSimDiscoveryMatchesRealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := sim.Start(ctx, sim.Options{})
	if err != nil {
		t.Fatalf("start the simulated cluster: %v", err)
	}
	defer c.Close()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	simCfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	resources := func(name string, d *discovery.DiscoveryClient) map[string]metav1.APIResource {
		_, lists, err := d.ServerGroupsAndResources()
		if err != nil {
			t.Fatalf("discovery of the %s API server: %v", name, err)
		}
		out := map[string]metav1.APIResource{}
		for _, l := range lists {
			for _, r := range l.APIResources {
				out[l.GroupVersion+" "+r.Name] = r
			}
		}
		return out
	}
	simD, err := discovery.NewDiscoveryClientForConfig(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	realD, err := discovery.NewDiscoveryClientForConfig(cp.Admin)
	if err != nil {
		t.Fatal(err)
	}
	simRes, realRes := resources("simulated", simD), resources("real", realD)
	compared := 0
	for key, s := range simRes {
		r, ok := realRes[key]
		if !ok {
			continue // a version the real server does not serve, or a kind it no longer has
		}
		compared++
		if s.Namespaced != r.Namespaced || s.Kind != r.Kind {
			t.Errorf("%s: the sim says namespaced=%v kind=%s, the real API server namespaced=%v kind=%s (fix clusterScoped in tools/testbed/sim/discovery.go)",
				key, s.Namespaced, s.Kind, r.Namespaced, r.Kind)
		}
		if strings.Contains(s.Name, "/") {
			continue
		}
		for _, short := range s.ShortNames {
			if !slices.Contains(r.ShortNames, short) {
				t.Errorf("%s: the sim announces short name %q, the real API server %q (fix shortNames in tools/testbed/sim/discovery.go)", key, short, r.ShortNames)
			}
		}
		if slices.Contains(s.Categories, "all") != slices.Contains(r.Categories, "all") {
			t.Errorf("%s: in category all for the sim: %v, for the real API server: %v (fix inCategoryAll in tools/testbed/sim/discovery.go)",
				key, slices.Contains(s.Categories, "all"), slices.Contains(r.Categories, "all"))
		}
		for _, short := range r.ShortNames {
			if !slices.Contains(s.ShortNames, short) {
				t.Errorf("%s: the real API server has short name %q, the sim does not announce it (add it to shortNames in tools/testbed/sim/discovery.go)", key, short)
			}
		}
	}
	for _, key := range []string{"v1 pods", "v1 pods/log", "apps/v1 deployments", "networking.istio.io/v1 virtualservices", "v1 namespaces"} {
		if _, ok := simRes[key]; !ok {
			t.Errorf("the sim's discovery lacks %s", key)
		}
	}
	t.Logf("compared %d resources of the sim's discovery (%d) with the real API server's (%d)", compared, len(simRes), len(realRes))
}
