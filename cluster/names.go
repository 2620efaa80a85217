package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Label and annotation keys sbx puts on the objects it writes.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedByValue  = "sbx"
	LabelSandbox    = "sbx.dev/sandbox"
	LabelRoutingKey = "sbx.dev/routing-key"
	// LabelComponent tells the relay pods apart from other sbx objects.
	LabelComponent = "sbx.dev/component"
	// AnnotationIgnore on a VirtualService makes sbx refuse to touch it.
	AnnotationIgnore = "sbx.dev/ignore"
	// AnnotationSpecHash holds a digest of what sbx last wrote, so a second
	// apply can tell "unchanged" without comparing server-defaulted fields.
	AnnotationSpecHash = "sbx.dev/spec-hash"
	// AnnotationNamespaces on the home Lease lists every namespace the
	// sandbox has objects in, so apply can prune a namespace the spec
	// dropped and delete can find everything.
	AnnotationNamespaces = "sbx.dev/namespaces"
	// AnnotationDescription carries the spec's description.
	AnnotationDescription = "sbx.dev/description"
)

// maxLabel is the longest DNS-1123/1035 label.
const maxLabel = 63

// shorten returns s if it fits in max characters, otherwise a prefix of s
// followed by "-" and 8 hex digits of its SHA-256, so two long names that
// share a prefix still differ. Trailing dashes of the prefix are dropped.
func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:4])
	prefix := strings.TrimRight(s[:max-len(h)-1], "-")
	return prefix + "-" + h
}

// dns1035 makes a DNS-1123 label also a DNS-1035 label (starting with a
// letter) by prefixing digits with "w".
func dns1035(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return "w" + s
	}
	return s
}

// LeaseName is the name of the sandbox's Lease, in every namespace it uses.
func LeaseName(sandbox string) string { return shorten("sbx-"+sandbox, maxLabel) }

// RelayName is the name of the relay Deployment.
func RelayName(sandbox string) string { return shorten("sbx-"+sandbox+"-relay", maxLabel) }

// ServiceName is the name of the sandbox Service for one local workload:
// "<workload>-sbx-<key>", a DNS-1035 label of at most 63 characters. The key
// is never shortened, so names of different sandboxes never collide.
func ServiceName(workload, key string) string {
	suffix := "-sbx-" + key
	return shorten(dns1035(workload), maxLabel-len(suffix)) + suffix
}

// OwnedVirtualServiceName is the name of a VirtualService sbx creates for a
// baseline Service that had none.
func OwnedVirtualServiceName(service string) string { return shorten(service+"-sbx", maxLabel) }

// RouteNamePrefix is the prefix of every route a sandbox with key k puts
// into a VirtualService.
func RouteNamePrefix(key string) string { return "sbx-" + key + "-" }

// routeName names one sandbox route: the key, the workload and the port, so
// a reader of a shared VirtualService knows whose route it is.
func routeName(key, workload string, port int32) string {
	return RouteNamePrefix(key) + workload + "-" + strconv.Itoa(int(port))
}
