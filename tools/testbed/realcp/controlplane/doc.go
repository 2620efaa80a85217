// Package controlplane builds a real Kubernetes control plane for sbx's
// tests: kube-apiserver and kube-controller-manager from the
// k8s.io/kubernetes module (Build).
package controlplane
