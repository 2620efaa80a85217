package config

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/spec/strictyaml"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

func TestDefault(t *testing.T) {
	c := Default()
	require.Equal(t, "sbx-routing-key", c.BaggageKey)
	require.Equal(t, 2, c.PoolSize)
	require.Equal(t, ModeAuto, c.Outbound.Mode)
	require.Empty(t, c.Outbound.HostsFile, "unset: the machine's, which only the sbx daemon fills in")
	require.Equal(t, netip.MustParsePrefix("127.241.0.0/16"), c.Outbound.HostsRange)
	require.Equal(t, "127.0.0.1:0", c.Outbound.ProxyListen)
	require.False(t, c.Outbound.InjectBaggage)
	require.Empty(t, c.RelayImage)
	require.Zero(t, c.RelayMaxStreams, "unset: the relay's default")

	// Defaults are what an absent or empty file gives.
	got, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.NoError(t, err)
	require.Equal(t, c, got)
	got, err = Parse("empty.yaml", []byte("# only a comment\n"))
	require.NoError(t, err)
	require.Equal(t, c, got)
}

func TestParseFull(t *testing.T) {
	data := `
relayImage: registry.example.com:5000/team/sbx:v1.2.3
relayMaxStreams: 512
baggageKey: x-route
poolSize: 4
outbound:
  mode: proxy
  namespaces: [shared, observability]
  hostsFile: /tmp/hosts
  hostsRange: 127.50.0.0/24
  injectBaggage: true
  proxyListen: 127.0.0.1:1080
  deny: [10.0.0.0/24, 100.64.0.7, "fd00:bad::/32"]
contexts:
  staging-1: arn:aws:eks:eu-west-1:123:cluster/staging-1
  local: kind-kind
clusterDomain: corp.example
mesh: gateway-api
`
	c, err := Parse("config.yaml", []byte(data))
	require.NoError(t, err)
	require.Equal(t, &Config{
		RelayImage:      "registry.example.com:5000/team/sbx:v1.2.3",
		RelayMaxStreams: 512,
		BaggageKey:      "x-route",
		PoolSize:        4,
		Outbound: Outbound{
			Mode:          ModeProxy,
			Namespaces:    []string{"shared", "observability"},
			HostsFile:     "/tmp/hosts",
			HostsRange:    netip.MustParsePrefix("127.50.0.0/24"),
			InjectBaggage: true,
			ProxyListen:   "127.0.0.1:1080",
			Deny: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("100.64.0.7/32"),
				netip.MustParsePrefix("fd00:bad::/32")},
		},
		Contexts:      map[string]string{"staging-1": "arn:aws:eks:eu-west-1:123:cluster/staging-1", "local": "kind-kind"},
		ClusterDomain: "corp.example",
		Mesh:          "gateway-api",
	}, c)

	// Partial outbound keeps the other defaults; a host-bits range is masked.
	c, err = Parse("config.yaml", []byte("outbound: {mode: hosts, hostsRange: 127.9.9.9/16}\nrelayImage: sbx@sha256:"+strings.Repeat("a", 64)+"\n"))
	require.NoError(t, err)
	require.Equal(t, ModeHosts, c.Outbound.Mode)
	require.Equal(t, netip.MustParsePrefix("127.9.0.0/16"), c.Outbound.HostsRange)
	require.Empty(t, c.Outbound.HostsFile)
	require.Equal(t, DefaultPoolSize, c.PoolSize)

	// relayMaxStreams at both ends of its range.
	for _, n := range []string{"1", "4096", "'300'"} {
		c, err := Parse("config.yaml", []byte("relayMaxStreams: "+n+"\n"))
		require.NoError(t, err, n)
		require.Equal(t, strings.Trim(n, "'"), strconv.Itoa(c.RelayMaxStreams))
	}

	// outbound.deny: block list, host bits dropped, IPv4-mapped as IPv4,
	// order kept.
	c, err = Parse("config.yaml", []byte("outbound:\n  deny:\n    - 10.1.2.3/8\n    - '::ffff:192.168.0.0/112'\n    - fd00::1\n    - 169.254.0.0/16\n"))
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("fd00::1/128"), netip.MustParsePrefix("169.254.0.0/16")}, c.Outbound.Deny)
	c, err = Parse("config.yaml", []byte("outbound: {deny: []}\n"))
	require.NoError(t, err)
	require.Empty(t, c.Outbound.Deny)
	c, err = Parse("config.yaml", []byte("outbound: {deny: [fd00::/8, 1.2.3.4]}\n")) // unquoted IPv6 in a flow list
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("1.2.3.4/32")}, c.Outbound.Deny)

	// JSON (what sbx status shows) round-trips.
	c, err = Parse("config.yaml", []byte(data))
	require.NoError(t, err)
	b, err := json.Marshal(c)
	require.NoError(t, err)
	var back Config
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, c, &back)
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, data string
		want       []string // each a whole error line
	}{
		{"unknown field", "poolsize: 3\n", []string{`config.yaml:1:1: poolsize: unknown field "poolsize"; did you mean "poolSize"? (allowed: relayImage, relayMaxStreams, baggageKey, poolSize, outbound, contexts, clusterDomain, mesh)`}},
		{"unknown outbound field", "outbound:\n  inject_baggage: true\n", []string{`config.yaml:2:3: outbound.inject_baggage: unknown field "inject_baggage"; did you mean "injectBaggage"? (allowed: mode, namespaces, hostsFile, hostsRange, injectBaggage, proxyListen, deny)`}},
		{"deny typo", "outbound:\n  dney: [10.0.0.0/8]\n", []string{`config.yaml:2:3: outbound.dney: unknown field "dney"; did you mean "deny"?`}},
		{"deny bad entries", "outbound:\n  deny: [10.0.0.0/8, fd00::/8, 10.0.0.0/33, metadata.google.internal, 'fe80::1%eth0', '']\n", []string{
			`config.yaml:2:32: outbound.deny[2]: "10.0.0.0/33" is not an IP address or CIDR prefix; want an address or range the relay must never dial, e.g. 10.0.0.0/24 or 100.64.0.7`,
			`config.yaml:2:45: outbound.deny[3]: "metadata.google.internal" is not an IP address or CIDR prefix`,
			`config.yaml:2:71: outbound.deny[4]: "fe80::1%eth0" is not an IP address or CIDR prefix`,
			`config.yaml:2:87: outbound.deny[5]: "" is not an IP address or CIDR prefix`}},
		{"deny duplicate", "outbound:\n  deny:\n    - 10.0.0.0/8\n    - 10.9.9.9/8\n", []string{
			`config.yaml:4:7: outbound.deny[1]: 10.0.0.0/8 is already listed at outbound.deny[0]`}},
		{"deny not list", "outbound: {deny: 10.0.0.0/8}\n", []string{`outbound.deny: must be a list, not the string "10.0.0.0/8"`}},
		{"deny entry not string", "outbound: {deny: [[10.0.0.0/8]]}\n", []string{`outbound.deny[0]: must be a string, not a list`}},
		{"deny too long", "outbound: {deny: [" + strings.TrimSuffix(strings.Repeat("10.0.0.0/8,", 65), ",") + "]}\n", []string{
			`config.yaml:1:18: outbound.deny: has 65 entries; allowed at most 64 (merge neighbouring ranges into wider CIDRs)`}},
		{"mesh", "mesh: linkerd\n", []string{`config.yaml:1:7: mesh: "linkerd" is not auto, istio or gateway-api (auto, the default, picks per Service)`}},
		{"cluster domain", "clusterDomain: Cluster.Local.\n", []string{`config.yaml:1:16: clusterDomain: "Cluster.Local." is not a DNS domain; want the cluster's DNS domain as kubelet's --cluster-domain has it, e.g. cluster.local (leave it out for that default)`}},
		{"pool zero", "poolSize: 0\n", []string{"config.yaml:1:11: poolSize: 0 is out of range; allowed 1-16 tunnel sessions per sandbox (default 2)"}},
		{"pool big", "poolSize: 17\n", []string{"config.yaml:1:11: poolSize: 17 is out of range; allowed 1-16 tunnel sessions per sandbox (default 2)"}},
		{"pool text", "poolSize: many\n", []string{`config.yaml:1:11: poolSize: must be an integer (1-16), not "many"`}},
		{"max streams zero", "relayMaxStreams: 0\n", []string{"config.yaml:1:18: relayMaxStreams: 0 is out of range; allowed 1-4096 streams the relay serves at once, each adding ~1 MiB to the relay pod's memory (leave it out for the default 128)"}},
		{"max streams negative", "relayMaxStreams: -5\n", []string{"config.yaml:1:18: relayMaxStreams: -5 is out of range; allowed 1-4096"}},
		{"max streams big", "relayMaxStreams: 4097\n", []string{"config.yaml:1:18: relayMaxStreams: 4097 is out of range; allowed 1-4096"}},
		{"max streams text", "relayMaxStreams: lots\n", []string{`config.yaml:1:18: relayMaxStreams: must be an integer (1-4096), not "lots"`}},
		{"max streams float", "relayMaxStreams: 256.5\n", []string{`config.yaml:1:18: relayMaxStreams: must be an integer (1-4096), not "256.5"`}},
		{"max streams list", "relayMaxStreams: [256]\n", []string{`config.yaml:1:18: relayMaxStreams: must be an integer (1-4096)`}},
		{"baggage key space", "baggageKey: my key\n", []string{`config.yaml:1:13: baggageKey: baggage key "my key" has ' ' at position 3: a baggage key is an HTTP token`}},
		{"baggage key equals", "baggageKey: 'a=b'\n", []string{`baggageKey: baggage key "a=b" has '=' at position 2`}},
		{"baggage key empty", "baggageKey: ''\n", []string{`baggageKey: must not be empty; leave it out for the default "sbx-routing-key"`}},
		{"mode typo", "outbound: {mode: host}\n", []string{`config.yaml:1:18: outbound.mode: unknown mode "host"; did you mean "hosts"? (allowed: auto, hosts, proxy, off; auto = hosts when the hosts file is writable, else proxy)`}},
		{"range outside loopback", "outbound: {hostsRange: 10.0.0.0/16}\n", []string{`outbound.hostsRange: "10.0.0.0/16" is not inside 127.0.0.0/8`}},
		{"range too wide", "outbound: {hostsRange: 127.0.0.0/7}\n", []string{`"127.0.0.0/7" is not inside 127.0.0.0/8`}},
		{"range has 127.0.0.1", "outbound: {hostsRange: 127.0.0.0/16}\n", []string{`"127.0.0.0/16" contains 127.0.0.1`}},
		{"range ipv6", "outbound: {hostsRange: '::1/128'}\n", []string{`"::1/128" is not inside 127.0.0.0/8`}},
		{"range tiny", "outbound: {hostsRange: 127.5.5.5/32}\n", []string{`"127.5.5.5/32" holds fewer than 4 addresses`}},
		{"range garbage", "outbound: {hostsRange: lots}\n", []string{`"lots" is not a CIDR range`}},
		{"hosts file relative", "outbound: {hostsFile: hosts}\n", []string{`outbound.hostsFile: "hosts" is not an absolute path`}},
		{"proxy on all interfaces", "outbound: {proxyListen: ':1080'}\n", []string{`outbound.proxyListen: ":1080" is not a loopback address`}},
		{"proxy public", "outbound: {proxyListen: '0.0.0.0:1080'}\n", []string{`"0.0.0.0:1080" is not a loopback address`}},
		{"proxy bad port", "outbound: {proxyListen: '127.0.0.1:99999'}\n", []string{`port "99999" is not a number 0-65535`}},
		{"proxy no port", "outbound: {proxyListen: 127.0.0.1}\n", []string{`"127.0.0.1" is not host:port`}},
		{"inject not bool", "outbound: {injectBaggage: sometimes}\n", []string{`outbound.injectBaggage: must be true or false, not "sometimes"`}},
		{"namespaces invalid and dup", "outbound:\n  namespaces: [Shared, a, a]\n", []string{
			`config.yaml:2:16: outbound.namespaces[0]: "Shared" is not a valid namespace`,
			`config.yaml:2:27: outbound.namespaces[2]: namespace "a" is already listed at outbound.namespaces[1]`}},
		{"namespaces not list", "outbound: {namespaces: shared}\n", []string{`outbound.namespaces: must be a list, not the string "shared"`}},
		{"contexts not map", "contexts: [a]\n", []string{`contexts: must be a mapping of names to values, not a list`}},
		{"context empty", "contexts: {staging: ''}\n", []string{`contexts.staging: "" is not a kube context name`}},
		{"relay image bad", "relayImage: 'Not An Image'\n", []string{`relayImage: "Not An Image" is not a container image reference`}},
		{"relay image uppercase repo", "relayImage: ghcr.io/Sbx/sbx:v1\n", []string{`relayImage: "ghcr.io/Sbx/sbx:v1" is not a container image reference`}},
		{"not a mapping", "- a\n", []string{"config.yaml:1:1: must be a mapping with the fields relayImage, relayMaxStreams, baggageKey, poolSize, outbound, contexts, clusterDomain, mesh, not a list"}},
		{"syntax", "outbound: {mode: [\n", []string{"config.yaml:1: invalid YAML: did not find expected node content"}},
		{"several collected", "poolSize: 99\nbaggageKey: 'a b'\noutbound: {mode: nope}\n", []string{
			"config.yaml:1:11: poolSize:", "config.yaml:2:13: baggageKey:", "config.yaml:3:18: outbound.mode:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("config.yaml", []byte(tc.data))
			require.Error(t, err)
			require.Nil(t, c)
			var list strictyaml.ErrorList
			require.True(t, errors.As(err, &list))
			require.Len(t, list, len(tc.want), err.Error())
			for i, w := range tc.want {
				require.Contains(t, list[i].Error(), w)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	require.ErrorContains(t, err, "is a directory")

	p := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte("poolSize: 0\n"), 0o600))
	_, err = Load(p)
	require.ErrorContains(t, err, p+":1:11: poolSize: 0 is out of range")
}

func TestClone(t *testing.T) {
	c := Default()
	c.Contexts = map[string]string{"a": "b"}
	c.Outbound.Namespaces = []string{"x"}
	c.Outbound.Deny = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	d := c.Clone()
	d.Contexts["a"] = "changed"
	d.Outbound.Namespaces[0] = "changed"
	d.Outbound.Deny[0] = netip.MustParsePrefix("10.1.0.0/16")
	require.Equal(t, "b", c.Contexts["a"])
	require.Equal(t, "x", c.Outbound.Namespaces[0])
	require.Equal(t, netip.MustParsePrefix("10.0.0.0/8"), c.Outbound.Deny[0])
}

// FuzzParse: the config decoder never panics, fails only with located
// errors, and every accepted config is within its documented bounds.
func FuzzParse(f *testing.F) {
	f.Add([]byte("poolSize: 3\noutbound: {mode: proxy, namespaces: [a], hostsRange: 127.2.0.0/16}\ncontexts: {a: b}\n"))
	f.Add([]byte("baggageKey: 'k'\nrelayImage: a/b:c\nrelayMaxStreams: 300\n"))
	f.Add([]byte("outbound: {proxyListen: '[::1]:0', injectBaggage: 'true'}\n"))
	f.Add([]byte("outbound: {deny: [10.0.0.0/8, '::ffff:1.2.3.4', fd00::/8, 10.1.2.3/8]}\n"))
	f.Add([]byte("- x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			var list strictyaml.ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("not an ErrorList: %T %v", err, err)
			}
			return
		}
		if c.PoolSize < 1 || c.PoolSize > MaxPoolSize || c.BaggageKey == "" ||
			c.RelayMaxStreams < 0 || c.RelayMaxStreams > relayargs.MaxStreamsLimit ||
			!loopback8.Contains(c.Outbound.HostsRange.Addr()) || (c.Outbound.HostsFile != "" && !filepath.IsAbs(c.Outbound.HostsFile)) ||
			checkProxyListen(c.Outbound.ProxyListen) != "" || len(c.Outbound.Deny) > relayargs.MaxDeny {
			t.Fatalf("accepted config out of bounds: %+v", c)
		}
		seen := map[netip.Prefix]bool{}
		for _, p := range c.Outbound.Deny {
			if !p.IsValid() || p != p.Masked() || (p.Addr().Is4In6() && p.Bits() >= 96) || seen[p] {
				t.Fatalf("accepted deny entry %s is not canonical or repeated: %v", p, c.Outbound.Deny)
			}
			seen[p] = true
		}
	})
}

// TestExampleConfig keeps the documented example valid.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../../testdata/config/config.yaml")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"staging-1": "gke_acme_europe-west1_staging-1"}, c.Contexts)
	require.Equal(t, []string{"shared", "observability"}, c.Outbound.Namespaces)
	require.Equal(t, "ghcr.io/sbx-dev/sbx:v0.1.0", c.RelayImage)
	require.Equal(t, relayargs.DefaultMaxStreams, c.RelayMaxStreams)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("100.64.0.7/32")}, c.Outbound.Deny)
}
