// Package spec is the sandbox spec: its YAML shape, templating and
// validation. It has no Kubernetes client dependencies so that the CLI can
// validate a spec offline.
package spec

// Workload kinds a local entry may replace.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindRollout     = "Rollout" // Argo Rollouts
)

// Sandbox is one sandbox spec file, after templating.
type Sandbox struct {
	// Name is the sandbox name, a DNS-1123 label.
	Name string `json:"name"`
	Spec Spec   `json:"spec"`
}

// Spec is the body of a sandbox.
type Spec struct {
	Description string `json:"description,omitempty"`
	// Cluster optionally selects the kube context: a context name, or a
	// name mapped to a context in the sbx config.
	Cluster string            `json:"cluster,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Local lists the workloads whose traffic comes to the laptop.
	Local []Local `json:"local"`
}

// Local is one baseline workload replaced, for keyed requests, by a process
// on the laptop.
type Local struct {
	// Name identifies the workload inside the sandbox (unique, DNS-1123).
	Name     string    `json:"name"`
	From     Workload  `json:"from"`
	Mappings []Mapping `json:"mappings"`
}

// Workload names the baseline workload.
type Workload struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Mapping sends one baseline Service port to a local address.
type Mapping struct {
	// Port is the baseline Service port.
	Port int32 `json:"port"`
	// ToLocal is the host:port on the laptop that serves it.
	ToLocal string `json:"toLocal"`
}

// Namespaces returns the distinct namespaces of the sandbox's workloads, in
// first-seen order.
func (s *Sandbox) Namespaces() []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range s.Spec.Local {
		if !seen[l.From.Namespace] {
			seen[l.From.Namespace] = true
			out = append(out, l.From.Namespace)
		}
	}
	return out
}
