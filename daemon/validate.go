package daemon

import (
	"reflect"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
)

// validateRequestSpec re-checks a connect request. The CLI validated the
// spec with cluster/spec already; the daemon does not trust its clients to
// have done so, and runs the same validation.
func validateRequestSpec(req *api.ConnectRequest) error {
	if req.Timeout < 0 {
		return badRequest("timeout must not be negative")
	}
	if req.RotateOnly() {
		// Only a name: the sandbox keeps the spec it has.
		if !spec.IsDNS1123Label(req.Spec.Name) || !reflect.DeepEqual(req.Spec, spec.Sandbox{Name: req.Spec.Name}) {
			return badRequest("a token rotation without a spec names the sandbox and nothing else (got %q)", req.Spec.Name)
		}
		return nil
	}
	if err := req.Spec.Validate(); err != nil {
		return badRequest("sandbox spec %q is invalid: %v (check it with `sbx validate -f FILE`)", req.Spec.Name, err)
	}
	return nil
}
