package kube

import (
	"log/slog"

	"k8s.io/klog/v2"
)

// RouteKlog sends klog's output (client-go's port-forward reports broken
// streams through it, and the kubelet-side handler the benchmarks run
// in-process reports every closed stream as an "Unhandled Error") to
// logger instead of raw lines on stderr, until the returned func runs.
// klog is process-wide: call it once per process (each sbx command is
// its own).
func RouteKlog(logger *slog.Logger) (restore func()) {
	klog.SetSlogLogger(logger)
	return klog.ClearLogger
}
