package daemon

// validateRequestSpec re-checks a connect request. The CLI validated the
// spec with cluster/spec already; the daemon does not trust its clients to
// have done so, and runs the same validation.
func validateRequestSpec(req *ConnectRequest) error {
	if req.Timeout < 0 {
		return badRequest("timeout must not be negative")
	}
	if err := req.Spec.Validate(); err != nil {
		return badRequest("sandbox spec %q is invalid: %v (check it with `sbx validate -f FILE`)", req.Spec.Name, err)
	}
	return nil
}
