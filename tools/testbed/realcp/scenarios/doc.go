// Package scenarios holds sbx's tests against a real Kubernetes control
// plane (package controlplane): each scenario is a test, all sharing one
// control plane started by TestMain. Build the control plane first with
// `make realcp-build`; `make test-real` does both.
package scenarios
