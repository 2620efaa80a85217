// Package scenarios holds sbx's tests against a real Kubernetes control
// plane (package controlplane): each scenario is a test, all sharing one
// control plane started by TestMain, with a node stand-in (package node)
// that runs relay pods as real `sbx relay` processes and the baseline's
// apps in process, and the simulator's mesh over the real Services and
// VirtualServices (package meshbridge). The developer's side is sbx's
// daemon in process, talking to the API server as the developer. Build the
// control plane first with `make realcp-build`; `make test-real` does
// both. Linux and root only (network namespaces).
package scenarios
