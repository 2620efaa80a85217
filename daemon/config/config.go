// Package config is the sbx user configuration,
// $XDG_CONFIG_HOME/sbx/config.yaml (default ~/.config/sbx/config.yaml):
// its YAML shape, defaults, strict located validation, and a Watcher that
// applies edits live. A missing file means "all defaults".
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/sbx-dev/sbx/cluster/meshmode"
	"github.com/sbx-dev/sbx/cluster/routingkey"
	"github.com/sbx-dev/sbx/cluster/spec/strictyaml"
)

// OutboundMode selects how local processes reach cluster services.
type OutboundMode string

// Outbound modes.
const (
	// ModeAuto uses hosts when the hosts file is writable, else proxy.
	ModeAuto OutboundMode = "auto"
	// ModeHosts writes cluster names into a marked block of the hosts file
	// and listens on a loopback IP per Service.
	ModeHosts OutboundMode = "hosts"
	// ModeProxy serves SOCKS5 and HTTP proxies on loopback.
	ModeProxy OutboundMode = "proxy"
	// ModeOff disables outbound access.
	ModeOff OutboundMode = "off"
)

var modes = []string{string(ModeAuto), string(ModeHosts), string(ModeProxy), string(ModeOff)}

// Defaults.
const (
	// DefaultClusterDomain is the DNS domain of most clusters.
	DefaultClusterDomain = "cluster.local"
	DefaultPoolSize      = 2
	MaxPoolSize          = 16
	DefaultHostsFile     = "/etc/hosts"
	DefaultProxyListen   = "127.0.0.1:0"
	// MaxSize bounds the config file; it is a few lines in practice.
	MaxSize = 1 << 20
)

// DefaultHostsRange is where hosts mode allocates one loopback IP per
// cluster Service. It avoids 127.0.0.1, which local services listen on.
var DefaultHostsRange = netip.MustParsePrefix("127.241.0.0/16")

// Config is the user configuration. The zero value is not useful; start
// from Default or Load. Treat a *Config you receive as read-only (the
// Watcher hands out clones).
type Config struct {
	// RelayImage overrides the relay container image; empty means the
	// image built into this sbx version.
	RelayImage string `json:"relayImage,omitempty"`
	// RelayMaxStreams raises (or lowers) the relay's cap on streams served
	// at once (1-relayargs.MaxStreamsLimit); 0 means the relay's default,
	// relayargs.DefaultMaxStreams. The relay pod's memory grows with it.
	RelayMaxStreams int `json:"relayMaxStreams,omitempty"`
	// BaggageKey is the W3C baggage key that carries the routing key, as
	// routingkey.ValidateBaggageKey accepts it. It may contain regexp
	// metacharacters (. * + ^ | $): quote it before building a regexp
	// from it.
	BaggageKey string `json:"baggageKey"`
	// PoolSize is the number of tunnel sessions per sandbox (1-16).
	PoolSize int      `json:"poolSize"`
	Outbound Outbound `json:"outbound"`
	// Contexts maps a cluster name (a spec's spec.cluster) to a kube
	// context name; package cluster/kube resolves a spec's cluster with it
	// (kube.Options.ClusterContexts).
	Contexts map[string]string `json:"contexts,omitempty"`
	// ClusterDomain is the clusters' DNS domain (kubelet's
	// --cluster-domain); sbx writes it only where a host must be fully
	// qualified: a VirtualService in one namespace naming the sandbox's
	// Service in another.
	ClusterDomain string `json:"clusterDomain"`
	// Mesh is how keyed requests are routed (meshmode: auto, istio,
	// gateway-api); auto picks per Service.
	Mesh string `json:"mesh"`
}

// Outbound configures how local processes reach cluster services.
type Outbound struct {
	Mode OutboundMode `json:"mode"`
	// Namespaces are extra namespaces whose Services are reachable, beyond
	// the sandbox's own.
	Namespaces []string `json:"namespaces,omitempty"`
	// HostsFile is the hosts file hosts mode edits (absolute path); empty
	// means the machine's (DefaultHostsFile), which only the sbx daemon
	// itself resolves it to (daemon.Options.SystemHostsFile), so a program
	// that embeds the daemon, a test above all, never edits the machine's
	// hosts file unless it names it.
	HostsFile string `json:"hostsFile"`
	// HostsRange is the loopback range hosts mode allocates IPs from; it
	// lies inside 127.0.0.0/8 and never contains 127.0.0.1.
	HostsRange netip.Prefix `json:"hostsRange"`
	// InjectBaggage makes the HTTP proxy add the routing key to plain
	// HTTP requests that carry none.
	InjectBaggage bool `json:"injectBaggage"`
	// ProxyListen is the loopback host:port of the proxies; port 0 picks
	// a free port.
	ProxyListen string `json:"proxyListen"`
	// Deny are addresses and ranges the relay must never dial for this
	// laptop, on top of its built-in list (link-local, cloud metadata,
	// loopback, its own pod): the relay Deployment's --deny arguments, in
	// order, as relayargs.ParseDeny reads them (host bits dropped,
	// IPv4-mapped ranges as IPv4), at most relayargs.MaxDeny. An IPv4
	// range also refuses its IPv6 forms (NAT64, 6to4, IPv4-compatible).
	// Changing it re-applies connected sandboxes.
	Deny []netip.Prefix `json:"deny,omitempty"`
}

// Default returns the configuration used when there is no config file.
func Default() *Config {
	return &Config{
		BaggageKey:    routingkey.DefaultBaggageKey,
		PoolSize:      DefaultPoolSize,
		ClusterDomain: DefaultClusterDomain,
		Mesh:          meshmode.Auto,
		Outbound: Outbound{
			Mode:        ModeAuto,
			HostsRange:  DefaultHostsRange,
			ProxyListen: DefaultProxyListen,
		},
	}
}

// Clone returns a deep copy.
func (c *Config) Clone() *Config {
	out := *c
	out.Contexts = maps.Clone(c.Contexts)
	out.Outbound.Namespaces = slices.Clone(c.Outbound.Namespaces)
	out.Outbound.Deny = slices.Clone(c.Outbound.Deny)
	return &out
}

// DefaultPath returns where the config lives: $XDG_CONFIG_HOME/sbx/config.yaml,
// or ~/.config/sbx/config.yaml when XDG_CONFIG_HOME is unset or relative
// (the XDG spec says to ignore a relative value); on Windows the fallback is
// %APPDATA%\sbx\config.yaml (see defaultDir). getenv is os.Getenv in
// production.
func DefaultPath(getenv func(string) string) (string, error) {
	if x := getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "sbx", "config.yaml"), nil
	}
	dir, err := defaultDir(getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "config.yaml"), nil
}

// Load reads the config file at path. A missing file is not an error: it
// yields Default(), as does an empty file. An invalid file yields a
// strictyaml.ErrorList naming each problem's line and field.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading sbx config: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("sbx config %s is a directory; it must be a YAML file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading sbx config %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("sbx config %s is larger than %d bytes; is it the right file?", path, MaxSize)
	}
	return Parse(path, data)
}

// Parse decodes and validates config data; filename names it in errors.
// Fields left out keep their defaults.
func Parse(filename string, data []byte) (*Config, error) {
	root, errs := strictyaml.ParseDocument(filename, data)
	if errs != nil {
		return nil, errs
	}
	c := Default()
	d := &strictyaml.Decoder{File: filename}
	decode(d, root, c)
	if len(d.Errs) > 0 {
		d.Errs.Sort()
		return nil, d.Errs
	}
	return c, nil
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
