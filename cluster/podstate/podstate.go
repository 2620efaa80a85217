// Package podstate holds the one rule sbx uses to decide whether a pod can
// take traffic. It imports only the core API types so that cluster,
// cluster/portforward and tools/testbed/sim can all share it without an import
// cycle (cluster/portforward must not import cluster).
package podstate

import corev1 "k8s.io/api/core/v1"

// Ready reports whether p can take traffic or be port-forwarded to: it is
// Running, its Ready condition is True, and it is not being deleted.
//
// The phase is checked as well as the condition because a pod that has
// finished (Succeeded, Failed) may keep a stale Ready=True until the kubelet
// updates it. A terminating pod is refused even while still Ready, as
// Kubernetes drops it from a Service's ready endpoints: a new connection to
// it would be cut when it exits.
func Ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
