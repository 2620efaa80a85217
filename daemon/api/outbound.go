package api

import "net/netip"

// OutboundStatus is outbound access as the daemon runs it: the mode in
// effect, the proxy address or hosts file, the hosts-mode Services, and
// what discovery watches. Package daemon/outbound fills the first part,
// the daemon the discovery counts.
type OutboundStatus struct {
	// Mode is the mode in effect (auto resolved to hosts or proxy): one of
	// daemon/config's OutboundMode values, a plain string here so that the
	// API does not import the config's parser.
	Mode string `json:"mode"`
	// ProxyAddr is the SOCKS5/HTTP proxy's host:port in proxy mode; `sbx
	// run` and `sbx env` turn it into HTTP_PROXY and friends, with the
	// credential, which is never part of the status.
	ProxyAddr string `json:"proxyAddr,omitempty"`
	// HostsFile is the edited hosts file in hosts mode.
	HostsFile string `json:"hostsFile,omitempty"`
	// Services are the hosts-mode Services with their IPs and ports.
	Services []HostsEntry `json:"services,omitempty"`
	// Note explains a fallback (auto chose proxy because ...).
	Note string `json:"note,omitempty"`
	// Error says why outbound access is off.
	Error string `json:"error,omitempty"`
	// Namespaces are the namespaces whose Services are discovered: the
	// sandboxes' own, then config outbound.namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// Pending are namespaces whose Services could not be listed yet
	// (missing RBAC, unreachable API server); discovery keeps trying.
	Pending []string `json:"pending,omitempty"`
	// Discovered is the number of cluster Services reachable by name.
	Discovered int `json:"discovered"`
}

// HostsEntry is the state of one Service in hosts mode.
type HostsEntry struct {
	Service string         `json:"service"` // namespace/name
	IP      netip.Addr     `json:"ip"`
	Names   []string       `json:"names"`
	Ports   []OutboundPort `json:"ports"`
}

// OutboundPort says whether a Service port is being listened on.
type OutboundPort struct {
	Port      int32  `json:"port"`
	Target    string `json:"target"`
	Listening bool   `json:"listening"`
	// InjectBaggage is set on HTTP/1.x ports whose requests get the
	// routing key added.
	InjectBaggage bool   `json:"injectBaggage,omitempty"`
	Error         string `json:"error,omitempty"`
}
