package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const goldenKey = "k3x9a0b1c2d3e"

// TestRenderGolden renders the examples against the hotrod baseline and
// compares them with the reviewed golden files (go test ./cmd/sbx -run
// TestRenderGolden -update rewrites them).
func TestRenderGolden(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"render-route.yaml", []string{"-f", "../../testdata/render/route.yaml", "--set", "name=alice",
			"--baseline", "../../testdata/baseline/hotrod.yaml"}},
		{"render-three.yaml", []string{"-f", "../../testdata/render/three.yaml",
			"--baseline", "../../testdata/baseline/hotrod.yaml", "--baggage-key", "x-sbx"}},
		{"render-two-namespaces.yaml", []string{"-f", "../../testdata/render/two-namespaces.yaml", "--set", "name=bob",
			"--baseline", "../../testdata/baseline/hotrod.yaml", "--baseline", "../../testdata/baseline/payments.yaml"}},
		{"render-spec-single.yaml", []string{"-f", "../../testdata/specs/valid/single.yaml",
			"--baseline", "../../testdata/baseline/hotrod.yaml"}},
		// A raised stream cap: --max-streams in the relay args, memory
		// scaled to 768Mi (limit), 96Mi (request), GOMEMLIMIT 691MiB.
		{"render-max-streams.yaml", []string{"-f", "../../testdata/render/route.yaml", "--set", "name=alice",
			"--baseline", "../../testdata/baseline/hotrod.yaml", "--relay-max-streams", "512"}},
		// A deny list: one --deny per entry after the other relay args,
		// host bits dropped; nothing else changes.
		{"render-deny.yaml", []string{"-f", "../../testdata/render/route.yaml", "--set", "name=alice",
			"--baseline", "../../testdata/baseline/hotrod.yaml", "--relay-deny", "10.1.2.3/24,fd00:bad::/32", "--relay-deny", "100.64.0.7"}},
		// Gateway API: CD routes driver with an HTTPRoute, so sbx routes it
		// with its own HTTPRoute next to CD's (auto); route and frontend
		// keep VirtualServices, which CD routes them with.
		{"render-gateway-api.yaml", []string{"-f", "../../testdata/render/three.yaml",
			"--baseline", "../../testdata/baseline/hotrod.yaml", "--baseline", "../../testdata/baseline/gateway-api.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			args := append([]string{"render", "--routing-key", goldenKey, "--relay-image", "ghcr.io/sbx-dev/sbx:v0.1.0"}, tt.args...)
			code, out, errOut := runCLI(t, args...)
			require.Equal(t, 0, code, errOut)
			path := filepath.Join("../../testdata/golden", tt.golden)
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(out), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run with -update to create it")
			require.Equal(t, string(want), out)
			require.Contains(t, out, "- --token-sha256\n        - <sha256 of the tunnel token")
			require.NotContains(t, out, "kind: Secret")

			// Deterministic: the same inputs render the same bytes.
			_, again, _ := runCLI(t, args...)
			require.Equal(t, out, again)
		})
	}
}

func TestRenderWarningsAndErrors(t *testing.T) {
	base := []string{"render", "-f", "../../testdata/render/three.yaml", "--routing-key", goldenKey}

	code, out, errOut := runCLI(t, append(base, "--baseline", "../../testdata/baseline/hotrod.yaml")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "warning: VirtualService hotrod/route is synced by Argo CD")
	require.Contains(t, out, "image: ghcr.io/sbx-dev/sbx:", "default relay image from the build version")

	code, _, errOut = runCLI(t, base...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "no baseline manifests given")

	code, _, errOut = runCLI(t, "render", "-f", "../../testdata/render/three.yaml", "--routing-key", "NOT-A-KEY",
		"--baseline", "../../testdata/baseline/hotrod.yaml")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "routing key")

	code, _, errOut = runCLI(t, append(base, "--baseline", "../../testdata/baseline/payments.yaml")...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Deployment hotrod/frontend is not in the baseline manifests")

	code, _, errOut = runCLI(t, append(base, "--baseline", "nope.yaml")...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "check the path given to --baseline")

	// Without --routing-key: a random key, said on stderr.
	code, out, errOut = runCLI(t, "render", "-f", "../../testdata/render/three.yaml", "--baseline", "../../testdata/baseline/hotrod.yaml")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "note: random routing key")
	require.False(t, strings.Contains(out, goldenKey))

	for _, n := range []string{"-1", "4097"} {
		code, _, errOut = runCLI(t, append(base, "--baseline", "../../testdata/baseline/hotrod.yaml", "--relay-max-streams", n)...)
		require.Equal(t, 2, code, n)
		require.Contains(t, errOut, "--relay-max-streams: relay stream cap "+n+" is out of range; allowed 1-4096")
	}
	code, _, errOut = runCLI(t, append(base, "--baseline", "../../testdata/baseline/hotrod.yaml", "--relay-max-streams", "many")...)
	require.NotZero(t, code)
	require.Contains(t, errOut, `invalid argument "many" for "--relay-max-streams"`)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--relay-deny", "10.0.0.0/33"}, `--relay-deny: "10.0.0.0/33" is not an IP address or CIDR prefix; want an address or range the relay must never dial, e.g. 10.0.0.0/24 or 100.64.0.7`},
		{[]string{"--relay-deny", "metadata.google.internal"}, `--relay-deny: "metadata.google.internal" is not an IP address or CIDR prefix`},
		{[]string{"--relay-deny", "10.0.0.0/8", "--relay-deny", "10.1.0.0/8"}, "--relay-deny: relay deny entry 10.0.0.0/8 is listed twice"},
		{[]string{"--relay-deny", strings.TrimSuffix(strings.Repeat("10.0.0.1,", 65), ",")}, "--relay-deny: the relay deny list has 65 entries; allowed at most 64"},
	} {
		code, _, errOut = runCLI(t, append(append(base, "--baseline", "../../testdata/baseline/hotrod.yaml"), tt.args...)...)
		require.Equal(t, 2, code, tt.args)
		require.Contains(t, errOut, tt.want)
	}

	code, out, errOut = runCLI(t, append(base, "--baseline", "../../testdata/baseline/hotrod.yaml", "-o", "json")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, `"kind": "List"`)
}

// TestRenderMesh: --mesh picks the routing backend as mesh in the sbx
// config does; render says per Service which one and why, and refuses a
// mode that cannot work with the reason and the way out.
func TestRenderMesh(t *testing.T) {
	base := []string{"render", "--routing-key", goldenKey, "-f", "../../testdata/render/route.yaml", "--set", "name=alice",
		"--baseline", "../../testdata/baseline/hotrod.yaml"}
	code, _, errOut := runCLI(t, base...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "routing: Service hotrod/route: keyed requests routed with Istio VirtualServices (CD routes it with VirtualService hotrod/route)")

	code, _, errOut = runCLI(t, append(base, "--mesh", "gateway-api")...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Service hotrod/route is routed by VirtualService hotrod/route; with mesh: gateway-api")

	code, _, errOut = runCLI(t, append(base, "--mesh", "linkerd")...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--mesh: mesh "linkerd" is not one of auto, istio, gateway-api`)
}
