// Package cluster holds everything sbx does through the Kubernetes API: the
// sandbox spec, the objects sbx renders and applies, mesh routes, leases,
// the port-forward dialer and service discovery.
package cluster
