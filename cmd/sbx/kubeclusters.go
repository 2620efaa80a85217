package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/sbx-dev/sbx/daemon"
)

// kubeClusters opens real clusters for the daemon.
// TODO(daemon): wire package cluster (objects, port-forward) once merged.
func kubeClusters(logger *slog.Logger) daemon.ClusterProvider {
	return func(ctx context.Context, kubeconfig, kctx string) (daemon.Cluster, error) {
		return nil, errors.New("cluster access is not available in this build")
	}
}
