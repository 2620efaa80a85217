package cluster

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

func threeSandbox() *spec.Sandbox {
	sb := routeSandbox("alice")
	sb.Spec.Local = append([]spec.Local{{
		Name: "frontend", From: spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "frontend"},
		Mappings: []spec.Mapping{{Port: 8080, ToLocal: "localhost:8080"}},
	}}, append(sb.Spec.Local, spec.Local{
		Name: "driver", From: spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "driver"},
		Mappings: []spec.Mapping{{Port: 8082, ToLocal: "127.0.0.1:18082"}},
	})...)
	return sb
}

func TestPlanRelayDeployment(t *testing.T) {
	objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), testOptions(testKey))
	require.NoError(t, err)
	d := objs.Relay
	require.Equal(t, "hotrod", d.Namespace)
	require.Equal(t, "sbx-alice-relay", d.Name)
	require.EqualValues(t, 1, *d.Spec.Replicas)
	c := d.Spec.Template.Spec.Containers[0]
	require.Equal(t, testImage, c.Image)
	require.Equal(t, []string{"sbx"}, c.Command)
	require.Equal(t, []string{"relay",
		"--sandbox", "alice",
		"--token-sha256", testVerifier(testKey),
		"--listen", "127.0.0.1:7000",
		"--health-listen", ":7001",
		"--inbound", "20001=frontend/8080/http",
		"--inbound", "20002=route/8083/http",
		"--inbound", "20003=driver/8082/grpc",
		"--grace", "10s",
		"--drain-timeout", "20s",
	}, c.Args)
	// The relay gets the token's verifier in its args, nothing from a
	// Secret: its only env is the runtime's memory limit.
	require.Len(t, c.Env, 1)
	require.Equal(t, "GOMEMLIMIT", c.Env[0].Name)
	require.Nil(t, c.Env[0].ValueFrom)
	require.Empty(t, c.EnvFrom)
	// The runtime throws at startup on a value outside its own grammar (a
	// Kubernetes "460Mi" would crash-loop the relay), so check that first.
	require.Regexp(t, `^[0-9]+(B|KiB|MiB|GiB|TiB)$`, c.Env[0].Value, "GOMEMLIMIT in the Go runtime's units (go doc runtime)")
	limit := c.Resources.Limits.Memory().Value()
	goLimit, err := resource.ParseQuantity(strings.TrimSuffix(c.Env[0].Value, "B")) // Go writes MiB, Kubernetes Mi
	require.NoError(t, err)
	require.InDelta(t, 0.9, float64(goLimit.Value())/float64(limit), 0.02, "GOMEMLIMIT is ~90% of the container limit")
	require.Equal(t, testVerifier(testKey), relayVerifier(&d.Spec.Template.Spec))

	var ports []int32
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
		require.LessOrEqual(t, len(p.Name), 15, "container port names are IANA service names")
	}
	require.Equal(t, []int32{7000, 7001, 20001, 20002, 20003}, ports)
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, "health", c.ReadinessProbe.HTTPGet.Port.StrVal)

	// Pod Security "restricted".
	ps := d.Spec.Template.Spec
	require.False(t, *ps.AutomountServiceAccountToken)
	require.True(t, *ps.SecurityContext.RunAsNonRoot)
	require.NotZero(t, *ps.SecurityContext.RunAsUser)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, ps.SecurityContext.SeccompProfile.Type)
	require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	require.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)
	require.Empty(t, c.SecurityContext.Capabilities.Add)
	require.Nil(t, c.SecurityContext.Privileged)
	require.False(t, ps.HostNetwork || ps.HostPID || ps.HostIPC)
	require.Empty(t, ps.Volumes)
	require.False(t, c.Resources.Requests.Cpu().IsZero())
	require.False(t, c.Resources.Limits.Memory().IsZero())

	for _, l := range []map[string]string{d.Labels, d.Spec.Template.Labels} {
		require.Equal(t, "sbx", l["app.kubernetes.io/managed-by"])
		require.Equal(t, "alice", l["sbx.dev/sandbox"])
		require.Equal(t, testKey, l["sbx.dev/routing-key"])
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	require.NoError(t, err)
	require.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)))
	require.Equal(t, "Lease", d.OwnerReferences[0].Kind)
}

// TestRelayMemory pins the memory formula: the default cap keeps exactly
// the sizes the relay has always had, larger caps grow by ~1 MiB a
// stream rounded up to 64 MiB, the request stays limit/8 and GOMEMLIMIT
// 90% of the limit.
func TestRelayMemory(t *testing.T) {
	tests := []struct {
		streams                 int
		limit, request, goLimit string
	}{
		{0, "512Mi", "64Mi", "460MiB"},
		{1, "512Mi", "64Mi", "460MiB"},
		{relayargs.DefaultMaxStreams, "512Mi", "64Mi", "460MiB"},
		{256, "512Mi", "64Mi", "460MiB"}, // 512 MiB of budget: still the floor
		{257, "576Mi", "72Mi", "518MiB"}, // 513 MiB: the next 64 MiB step
		{320, "576Mi", "72Mi", "518MiB"},
		{1000, "1280Mi", "160Mi", "1152MiB"}, // 1256 MiB rounds up
		{relayargs.MaxStreamsLimit, "4352Mi", "544Mi", "3916MiB"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.streams), func(t *testing.T) {
			limit, request, goLimit := relayMemory(tt.streams)
			require.Equal(t, tt.limit, limit)
			require.Equal(t, tt.request, request)
			require.Equal(t, tt.goLimit, goLimit)

			l := resource.MustParse(limit)
			require.Zero(t, l.Value()%(64<<20), "a multiple of 64 MiB")
			require.GreaterOrEqual(t, l.Value(), int64(max(tt.streams, relayargs.DefaultMaxStreams))*relayargs.StreamMiB<<20+2*relayargs.WindowBudget+64<<20,
				"room for every stream's buffers, twice the shared window budget, plus the process")
			r := resource.MustParse(request)
			require.Equal(t, l.Value(), 8*r.Value(), "limit/request ratio 8")
		})
	}
}

func TestPlanRelayMaxStreams(t *testing.T) {
	o := testOptions(testKey)
	o.RelayMaxStreams = 512
	objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
	require.NoError(t, err)
	c := objs.Relay.Spec.Template.Spec.Containers[0]
	require.Equal(t, []string{"--drain-timeout", "20s", "--max-streams", "512"}, c.Args[len(c.Args)-4:])
	require.Equal(t, "768Mi", c.Resources.Limits.Memory().String())
	require.Equal(t, "96Mi", c.Resources.Requests.Memory().String())
	require.Equal(t, "GOMEMLIMIT", c.Env[0].Name)
	require.Equal(t, "691MiB", c.Env[0].Value)

	// The default, given explicitly, renders as if left out.
	o.RelayMaxStreams = relayargs.DefaultMaxStreams
	explicit, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
	require.NoError(t, err)
	o.RelayMaxStreams = 0
	unset, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
	require.NoError(t, err)
	require.Equal(t, unset.Relay, explicit.Relay)
	require.NotContains(t, unset.Relay.Spec.Template.Spec.Containers[0].Args, "--max-streams")

	for _, n := range []int{-1, relayargs.MaxStreamsLimit + 1} {
		o.RelayMaxStreams = n
		_, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
		require.ErrorContains(t, err, fmt.Sprintf("relay stream cap %d is out of range; allowed 1-4096", n))
	}
}

func TestPlanRelayDeny(t *testing.T) {
	o := testOptions(testKey)
	o.RelayMaxStreams = 256
	o.RelayDeny = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("100.64.0.7/32"), netip.MustParsePrefix("fd00:bad::/32")}
	objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
	require.NoError(t, err)
	c := objs.Relay.Spec.Template.Spec.Containers[0]
	require.Equal(t, []string{"--max-streams", "256", "--deny", "10.0.0.0/24", "--deny", "100.64.0.7/32", "--deny", "fd00:bad::/32"}, c.Args[len(c.Args)-8:])

	// Unset and empty render the same Deployment, without --deny: existing
	// relays keep their exact spec (and spec hash).
	o.RelayMaxStreams = 0
	o.RelayDeny = nil
	unset, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
	require.NoError(t, err)
	o.RelayDeny = []netip.Prefix{}
	empty, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
	require.NoError(t, err)
	require.Equal(t, specHash(unset.Relay), specHash(empty.Relay))
	require.NotContains(t, unset.Relay.Spec.Template.Spec.Containers[0].Args, "--deny")

	// Any change of the list changes the Deployment's spec hash, so Apply
	// rolls the relay.
	hashes := map[string]string{"unset": specHash(unset.Relay)}
	for name, deny := range map[string][]string{
		"one": {"10.0.0.0/24"}, "other": {"10.0.1.0/24"}, "two": {"10.0.0.0/24", "10.0.1.0/24"}, "swapped": {"10.0.1.0/24", "10.0.0.0/24"},
	} {
		o.RelayDeny = nil
		for _, s := range deny {
			o.RelayDeny = append(o.RelayDeny, netip.MustParsePrefix(s))
		}
		objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
		require.NoError(t, err)
		h := specHash(objs.Relay)
		for other, oh := range hashes {
			require.NotEqual(t, oh, h, "%s and %s", name, other)
		}
		hashes[name] = h
	}

	for _, tt := range []struct {
		deny []netip.Prefix
		want string
	}{
		{[]netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}, "relay deny entry 10.1.2.3/8 is not in canonical form; write 10.0.0.0/8"},
		{[]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, "relay deny entry ::ffff:10.0.0.0/104 is not in canonical form; write 10.0.0.0/8"},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}, "relay deny entry 10.0.0.0/8 is listed twice"},
		{[]netip.Prefix{{}}, "relay deny entry 0 is not a CIDR prefix"},
		{make([]netip.Prefix, relayargs.MaxDeny+1), "the relay deny list has 65 entries; allowed at most 64"},
	} {
		o.RelayDeny = tt.deny
		_, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), o)
		require.ErrorContains(t, err, tt.want)
	}
}

// TestRelayLabelsNeverMatchBaselineSelectors proves the relay pod cannot
// receive baseline traffic: its labels use only keys sbx owns, so a
// baseline selector (which names the baseline's own labels) cannot match;
// and Plan refuses the one way it could (a selector naming only sbx keys).
func TestRelayLabelsNeverMatchBaselineSelectors(t *testing.T) {
	m := hotrodManifests(t)
	objs, err := Plan(t.Context(), m, threeSandbox(), testOptions(testKey))
	require.NoError(t, err)
	pod := labels.Set(objs.Relay.Spec.Template.Labels)
	for k := range pod {
		require.True(t, k == LabelManagedBy || strings.HasPrefix(k, "sbx.dev/"), k)
	}
	svcs, err := m.Services(t.Context(), "hotrod")
	require.NoError(t, err)
	require.NotEmpty(t, svcs)
	for _, s := range svcs {
		require.False(t, labels.SelectorFromSet(s.Spec.Selector).Matches(pod), "baseline Service %s selects the relay", s.Name)
	}
	// Every label of every baseline pod template, alone or combined, as a
	// selector: none matches the relay.
	for _, w := range threeSandbox().Spec.Local {
		pl, err := m.PodLabels(t.Context(), w.From)
		require.NoError(t, err)
		for k, v := range pl {
			require.False(t, labels.SelectorFromSet(labels.Set{k: v}).Matches(pod))
		}
		require.False(t, labels.SelectorFromSet(pl).Matches(pod))
	}
	// The sandbox Services select the relay and nothing of the baseline.
	for _, s := range objs.Services {
		require.True(t, labels.SelectorFromSet(s.Spec.Selector).Matches(pod))
		for _, w := range threeSandbox().Spec.Local {
			pl, _ := m.PodLabels(t.Context(), w.From)
			require.False(t, labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pl)))
		}
	}

	// A Service whose selector is made of sbx's own labels would catch the
	// relay: Plan refuses.
	bad := &ManifestBaseline{}
	*bad = *m
	bad.services = map[string][]*corev1.Service{"hotrod": append(svcs, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "catch-all", Namespace: "hotrod"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{LabelManagedBy: ManagedByValue}},
	})}
	_, err = Plan(t.Context(), bad, threeSandbox(), testOptions(testKey))
	require.ErrorContains(t, err, "Service hotrod/catch-all")
	require.ErrorContains(t, err, "would select the relay pod")
}

func TestPlanServices(t *testing.T) {
	objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), testOptions(testKey))
	require.NoError(t, err)
	require.Len(t, objs.Services, 3)
	byName := map[string]*corev1.Service{}
	for _, s := range objs.Services {
		byName[s.Name] = s
		require.Empty(t, validation.IsDNS1035Label(s.Name))
		require.Equal(t, "hotrod", s.Namespace)
	}
	r := byName["route-sbx-"+testKey]
	require.NotNil(t, r)
	require.Equal(t, "http", r.Spec.Ports[0].Name)
	require.Equal(t, "http", *r.Spec.Ports[0].AppProtocol)
	require.EqualValues(t, 8083, r.Spec.Ports[0].Port)
	require.EqualValues(t, 20002, r.Spec.Ports[0].TargetPort.IntVal)
	d := byName["driver-sbx-"+testKey]
	require.Equal(t, "grpc", *d.Spec.Ports[0].AppProtocol)
	require.EqualValues(t, 20003, d.Spec.Ports[0].TargetPort.IntVal)
	f := byName["frontend-sbx-"+testKey]
	require.Equal(t, "http-web", f.Spec.Ports[0].Name)
	require.Nil(t, f.Spec.Ports[0].AppProtocol)
}

func TestServiceNameLimits(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []string{"route", "a", "9lives", long, long[:50], long[:45], strings.Repeat("ab-", 21), "x-" + long[:61]}
	seen := map[string]string{}
	for _, w := range tests {
		n := ServiceName(w, testKey)
		require.Empty(t, validation.IsDNS1035Label(n), "%q → %q", w, n)
		require.LessOrEqual(t, len(n), 63)
		require.True(t, strings.HasSuffix(n, "-sbx-"+testKey), n)
		if prev, ok := seen[n]; ok {
			t.Fatalf("workloads %q and %q both get %q", prev, w, n)
		}
		seen[n] = w
	}
	require.Equal(t, "route-sbx-"+testKey, ServiceName("route", testKey))
	// Two long names sharing a prefix still differ.
	require.NotEqual(t, ServiceName(long+"x", testKey), ServiceName(long+"y", testKey))
	for _, n := range []string{LeaseName(long), RelayName(long), OwnedVirtualServiceName(long)} {
		require.Empty(t, validation.IsDNS1123Label(n), n)
	}
	require.NotEqual(t, RelayName(long), RelayName(long[:62]+"b"))
}

func TestResolveErrors(t *testing.T) {
	m := hotrodManifests(t)
	sb := routeSandbox("alice")
	sb.Spec.Local[0].Mappings = append(sb.Spec.Local[0].Mappings, spec.Mapping{Port: 9999, ToLocal: "localhost:9999"})
	_, err := Plan(t.Context(), m, sb, testOptions(testKey))
	require.ErrorContains(t, err, "spec.local[0].mappings[1].port: 9999 is not a port")
	require.ErrorContains(t, err, "available ports: 8083/http (Service route)")

	sb = routeSandbox("alice")
	sb.Spec.Local[0].From.Name = "nope"
	_, err = Plan(t.Context(), m, sb, testOptions(testKey))
	require.ErrorContains(t, err, "Deployment hotrod/nope is not in the baseline manifests")

	// A workload no Service selects: the error lists the candidates.
	noSvc := &ManifestBaseline{}
	*noSvc = *m
	noSvc.services = map[string][]*corev1.Service{"hotrod": {{
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "hotrod"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "other"}},
	}}}
	_, err = Plan(t.Context(), noSvc, routeSandbox("alice"), testOptions(testKey))
	require.ErrorContains(t, err, "no Service in namespace hotrod selects Deployment hotrod/route")
	require.ErrorContains(t, err, "other (selector {app=other})")

	_, err = Plan(t.Context(), m, routeSandbox("alice"), Options{RoutingKey: testKey, TokenVerifier: testVerifier(testKey)})
	require.ErrorContains(t, err, "--relay-image")
	_, err = Plan(t.Context(), m, routeSandbox("alice"), Options{RoutingKey: "BAD", TokenVerifier: testVerifier(testKey), RelayImage: testImage})
	require.ErrorContains(t, err, "routing key")
	_, err = Plan(t.Context(), m, routeSandbox("alice"), Options{RoutingKey: testKey, TokenVerifier: testToken(testKey), RelayImage: testImage})
	require.ErrorContains(t, err, "a token verifier is 64 hex digits")
	require.NotContains(t, err.Error(), testToken(testKey))
	_, err = Plan(t.Context(), m, routeSandbox("alice"), Options{RoutingKey: testKey, TokenVerifier: VerifierPlaceholder, RelayImage: testImage})
	require.NoError(t, err, "sbx render plans with the placeholder")
}

func TestPlanRoutes(t *testing.T) {
	objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), testOptions(testKey))
	require.NoError(t, err)
	byName := map[string]RouteTarget{}
	for _, rt := range objs.Routes {
		byName[rt.Name] = rt
	}
	require.ElementsMatch(t, []string{"route", "frontend-gw", "frontend-ingress", "frontend-sbx", "driver-sbx"}, slices.Collect(maps.Keys(byName)))

	// CD's route VirtualService: a keyed twin right before the route it
	// mirrors, with its settings; CD's route untouched.
	r := byName["route"]
	require.False(t, r.Create)
	require.Len(t, r.Object.Spec.Http, 2)
	twin, cd := r.Object.Spec.Http[0], r.Object.Spec.Http[1]
	require.Equal(t, "sbx-"+testKey+"-route-8083", twin.Name)
	require.Equal(t, "default", cd.Name)
	dst := twin.Route[0].Destination
	require.Equal(t, "route-sbx-"+testKey, dst.Host, "the short name: right on any cluster domain")
	require.EqualValues(t, 8083, dst.Port.Number)
	require.Equal(t, objs.Regex, twin.Match[0].Headers["baggage"].GetRegex())
	require.Equal(t, cd.Timeout.AsDuration(), twin.Timeout.AsDuration(), "the twin keeps CD's timeout")
	require.True(t, proto.Equal(cd.Retries, twin.Retries), "and CD's retries")
	require.Empty(t, r.Object.OwnerReferences, "sbx never claims CD's object")

	// frontend: only gateway-bound VirtualServices, which get twins; mesh
	// traffic goes through sbx's own VirtualService: public, short host,
	// the keyed route and the fallback for its port.
	for _, gw := range []string{"frontend-gw", "frontend-ingress"} {
		require.Equal(t, []string{"sbx-" + testKey + "-frontend-8080", ""}, routeNames(byName[gw].Object), gw)
	}
	f := byName["frontend-sbx"]
	require.True(t, f.Create)
	require.Equal(t, []string{"frontend"}, f.Object.Spec.Hosts)
	require.Equal(t, []string{"*"}, f.Object.Spec.ExportTo)
	require.Equal(t, []string{"sbx-" + testKey + "-frontend-8080", "sbx-baseline-8080"}, routeNames(f.Object))
	fb := f.Object.Spec.Http[1]
	require.EqualValues(t, 8080, fb.Match[0].Port)
	require.Equal(t, "frontend", fb.Route[0].Destination.Host)
	require.Nil(t, fb.Retries, "the fallback is Istio's default route: no settings of its own")
	require.Len(t, f.Object.OwnerReferences, 1)
	require.Nil(t, f.Object.OwnerReferences[0].Controller)
	require.Len(t, objs.Warnings, 1)
	require.Contains(t, objs.Warnings[0], "synced by Argo CD")

	require.True(t, byName["driver-sbx"].Create)
	require.NotEmpty(t, objs.RouteReport)
}

func TestPlanRefusesIgnoredVirtualService(t *testing.T) {
	m := hotrodManifests(t)
	m.vss["hotrod"][len(m.vss["hotrod"])-1].Annotations = map[string]string{AnnotationIgnore: "true"}
	_, err := Plan(t.Context(), m, routeSandbox("alice"), testOptions(testKey))
	require.ErrorContains(t, err, "VirtualService hotrod/route")
	require.ErrorContains(t, err, `sbx.dev/ignore: "true"`)
}

func TestPlanDeterministic(t *testing.T) {
	out := func() string {
		objs, err := Plan(t.Context(), hotrodManifests(t), threeSandbox(), testOptions(testKey))
		require.NoError(t, err)
		var b strings.Builder
		for _, o := range objs.List() {
			y, err := yaml.Marshal(o)
			require.NoError(t, err)
			b.Write(y)
		}
		return b.String()
	}
	first := out()
	for range 5 {
		require.Equal(t, first, out())
	}
}

var _ = fmt.Sprint
var _ = istionet.VirtualService{}
