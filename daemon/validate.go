package daemon

import (
	"net"
	"regexp"
	"strconv"
)

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validateRequestSpec re-checks what the daemon relies on. The CLI already
// validated the spec with cluster/spec; the daemon does not trust its
// clients to have done so.
func validateRequestSpec(req *ConnectRequest) error {
	sb := &req.Spec
	if len(sb.Name) > 63 || !dns1123Label.MatchString(sb.Name) {
		return badRequest("sandbox name %q is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)", sb.Name)
	}
	if len(sb.Spec.Local) == 0 {
		return badRequest("sandbox %s: spec.local is empty; list at least one workload to run locally", sb.Name)
	}
	if req.Timeout < 0 {
		return badRequest("timeout must not be negative")
	}
	for i, l := range sb.Spec.Local {
		if l.Name == "" || l.From.Namespace == "" || l.From.Name == "" {
			return badRequest("sandbox %s: spec.local[%d] needs name, from.namespace and from.name", sb.Name, i)
		}
		if len(l.Mappings) == 0 {
			return badRequest("sandbox %s: spec.local[%d].mappings is empty", sb.Name, i)
		}
		for j, mp := range l.Mappings {
			if mp.Port < 1 || mp.Port > 65535 {
				return badRequest("sandbox %s: spec.local[%d].mappings[%d].port %d is not in 1-65535", sb.Name, i, j, mp.Port)
			}
			host, port, err := net.SplitHostPort(mp.ToLocal)
			if err != nil {
				return badRequest("sandbox %s: spec.local[%d].mappings[%d].toLocal %q is not host:port", sb.Name, i, j, mp.ToLocal)
			}
			if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
				return badRequest("sandbox %s: spec.local[%d].mappings[%d].toLocal %q needs a host and a port in 1-65535", sb.Name, i, j, mp.ToLocal)
			}
		}
	}
	return nil
}
