// Package meshmode names how sbx routes keyed requests (the sbx config's
// mesh, render/validate/demo --mesh). It imports nothing, so the config
// (and the tray through it) can validate the setting without the
// Kubernetes client libraries.
package meshmode

import "fmt"

// Modes.
const (
	// Auto picks per Service: Gateway API where CD routes the Service with
	// HTTPRoute/GRPCRoute or the mesh is Linkerd, Istio VirtualServices
	// where CD uses one, and for a Service with neither Gateway API where
	// the mesh serves HTTPRoutes, else VirtualServices.
	Auto = "auto"
	// Istio routes with Istio VirtualServices, adding keyed routes to CD's.
	Istio = "istio"
	// GatewayAPI routes with sbx's own HTTPRoutes next to CD's (the GAMMA
	// mesh profile: Istio, Linkerd).
	GatewayAPI = "gateway-api"
)

// Validate checks a mode ("" is Auto).
func Validate(m string) error {
	switch m {
	case "", Auto, Istio, GatewayAPI:
		return nil
	}
	return fmt.Errorf("mesh %q is not one of auto, istio, gateway-api", m)
}
