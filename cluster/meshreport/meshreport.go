// Package meshreport holds what sbx reports about a sandbox's mesh routes:
// per port and client namespace, which VirtualService applies and whether
// keyed requests reach the sandbox, and the leftovers gc removes. It is
// free of Kubernetes and Istio imports, so that the daemon's wire types
// (daemon/api), and through them the tray, can carry these reports without
// the Istio API in their dependency closure; cluster/istiovs fills them.
package meshreport

// Leftover is a VirtualService holding routes no live sandbox owns.
type Leftover struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// What is "dead routes" (routes of sandboxes whose Lease is gone) or
	// "ownerless VirtualService" (sbx's own, no live sandbox's routes).
	What string `json:"what"`
}

// PortReport says, for one mapped Service port, what each group of
// clients gets.
type PortReport struct {
	Namespace string       `json:"namespace"`
	Service   string       `json:"service"`
	Port      int32        `json:"port"`
	Workload  string       `json:"workload"`
	Views     []ViewReport `json:"views"`
}

// Keyed states of a view.
const (
	KeyedSandbox  = "sandbox"  // keyed requests reach the sandbox
	KeyedPartial  = "partial"  // some do (Reason says which do not)
	KeyedBaseline = "baseline" // none do (Reason says why)
)

// ViewReport is what the clients of one namespace get.
type ViewReport struct {
	// Clients is a namespace, or "" for every namespace no VirtualService
	// of the host names.
	Clients string `json:"clients"`
	// Chain lists the VirtualServices Istio considers, in order
	// ("namespace/name (public)"); sbx's own last when it is used.
	Chain []string `json:"chain,omitempty"`
	// Applies is the VirtualService (namespace/name) whose routes clients
	// without source-specific routes get, or "default route".
	Applies string `json:"applies"`
	Keyed   string `json:"keyed"`
	Reason  string `json:"reason,omitempty"`
}
