package cluster

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// refBaggageMatch is a plain reading of W3C baggage: split members on ",",
// drop properties after ";", compare the trimmed key and value.
func refBaggageMatch(header, key, value string) bool {
	for _, member := range strings.Split(header, ",") {
		kv, _, _ := strings.Cut(member, ";")
		name, val, ok := strings.Cut(kv, "=")
		if ok && strings.Trim(name, " \t") == key && strings.Trim(val, " \t") == value {
			return true
		}
	}
	return false
}

// FuzzBaggageRegex checks the generated regex (full match, as Envoy runs
// it) against the reference reading for arbitrary header values.
func FuzzBaggageRegex(f *testing.F) {
	for _, s := range []string{
		"sbx-routing-key=k3x9a0b1c2d3e", "a=1, sbx-routing-key = k3x9a0b1c2d3e ;p, b=2",
		"my-sbx-routing-key=k3x9a0b1c2d3e", "sbx-routing-key=k3x9a0b1c2d3ex", "a=1;sbx-routing-key=k3x9a0b1c2d3e",
		"sbx-routing-key=k3x9a0b1c2d3e=1", ",,sbx-routing-key=k3x9a0b1c2d3e,,", "\tsbx-routing-key\t=\tk3x9a0b1c2d3e\t",
	} {
		f.Add(s)
	}
	re, err := BaggageRegex(routingkey.DefaultBaggageKey, testKey)
	if err != nil {
		f.Fatal(err)
	}
	full := regexp.MustCompile(`^(?:` + re + `)$`)
	search := regexp.MustCompile(re) // Linkerd's leftmost-match search
	f.Fuzz(func(t *testing.T, header string) {
		if strings.ContainsAny(header, "\r\n") {
			return // not a valid header value
		}
		got, want := full.MatchString(header), refBaggageMatch(header, routingkey.DefaultBaggageKey, testKey)
		if got != want {
			t.Fatalf("header %q: regex says %v, baggage reading says %v", header, got, want)
		}
		if s := search.MatchString(header); s != want {
			t.Fatalf("header %q: searching with the regex says %v, baggage reading says %v", header, s, want)
		}
	})
}

// FuzzParseManifests feeds arbitrary manifest streams (outside input of
// `sbx render --baseline`) to the parser: errors are fine, panics are not,
// and what parses can be queried.
func FuzzParseManifests(f *testing.F) {
	for _, p := range []string{"../testdata/baseline/hotrod.yaml", "../testdata/baseline/payments.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("kind: List\nitems: [{apiVersion: v1, kind: Service, metadata: {name: a}}]\n")
	f.Add("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\nspec: {workloadRef: {kind: Deployment, name: d}}\n")
	f.Add("---\n---\nnull\n")
	f.Add("apiVersion: apps/v1\nkind: Deployment\nspec: 3\n")
	f.Fuzz(func(t *testing.T, data string) {
		done := make(chan struct{})
		var m *ManifestBaseline
		var err error
		go func() {
			defer close(done)
			m, err = ParseManifests(strings.NewReader(data), "default")
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("ParseManifests hangs on %q", data)
		}
		if err != nil {
			return
		}
		for _, o := range m.Objects() {
			_ = o.GetObjectKind()
		}
		for _, kind := range []string{spec.KindDeployment, spec.KindStatefulSet, spec.KindRollout} {
			_, _ = m.PodLabels(t.Context(), spec.Workload{Kind: kind, Namespace: "default", Name: "r"})
		}
		_, _ = m.Services(t.Context(), "default")
		_, _ = m.Routing(t.Context(), nil)
	})
}
