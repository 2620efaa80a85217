package sim

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// FuzzResolverLookup feeds the simulated cluster DNS the names a relay or a
// laptop process may ask for: it must never panic, and whatever it
// resolves must be the one Service it knows.
func FuzzResolverLookup(f *testing.F) {
	for _, s := range []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local.",
		"", ".", "..", "[::1]", "10.96.0.1", "DRIVER.HOTROD.SVC.CLUSTER.LOCAL", "a.b.c.d.e.f.g", strings.Repeat("a.", 100)} {
		f.Add(s)
	}
	n := NewNetwork("")
	ip, err := n.AllocateServiceIP("hotrod", "driver")
	if err != nil {
		f.Fatal(err)
	}
	r := n.Resolver("hotrod")
	f.Fuzz(func(t *testing.T, host string) {
		ips, err := r.LookupNetIP(context.Background(), "ip", host)
		if err != nil {
			return
		}
		if len(ips) != 1 {
			t.Fatalf("%q resolved to %v", host, ips)
		}
		if ips[0] != ip && !strings.ContainsAny(host, ":") && strings.Count(host, ".") != 3 {
			t.Fatalf("%q resolved to %v, not the driver Service", host, ips)
		}
		_, _ = r.DialContext(context.Background(), "tcp", host+":1")
	})
}

// FuzzMatchHeaders runs arbitrary header values and patterns through the
// mesh's matcher: no panic, and an exact match implies the prefix match.
func FuzzMatchHeaders(f *testing.F) {
	f.Add("sbx-routing-key=k3x9", "k3x9", `(.*,)?\s*sbx-routing-key=k3x9\s*(;[^,]*)?(,.*)?`)
	f.Add("", "", "")
	f.Add("a,b", "a", "(")
	f.Fuzz(func(t *testing.T, value, pattern, re string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Baggage"] = []string{value}
		var c regexCache
		ri := requestInfo{req: r, port: 80}
		m := func(sm *networking.StringMatch) bool {
			return c.matches(&networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"baggage": sm}}, ri)
		}
		ex := m(exact(pattern))
		if ex && !m(prefix(pattern)) {
			t.Fatalf("exact %q matched %q but prefix did not", pattern, value)
		}
		_ = m(regex(re))
	})
}
