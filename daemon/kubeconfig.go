package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/live"
	"github.com/sbx-dev/sbx/daemon/api"
)

// The edge between the daemon's requests and state, which name a
// kubeconfig source (api.KubeconfigSource) and a context, and the
// clusters they select.

// LiveClusters is the ClusterProvider of real clusters, opened through k
// (see live.Clusters.Open for what it caches and which failures are
// permanent).
func LiveClusters(k *live.Clusters) ClusterProvider {
	return func(_ context.Context, src api.KubeconfigSource, kubeContext string) (Cluster, error) {
		c, err := k.Open(LiveSource(src), kubeContext)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return c, nil
	}
}

// LiveSource is s as package live opens it.
func LiveSource(s api.KubeconfigSource) live.Source {
	return live.Source{Key: s.Key(), Options: SourceOptions(s), Name: describeSource(s)}
}

// SourceOptions are the kube.Options that load s's kubeconfig, as
// kubectl with the CLI's flag and environment would.
func SourceOptions(s api.KubeconfigSource) kube.Options {
	env := strings.Join(s.KubeconfigEnv, string(filepath.ListSeparator))
	return kube.Options{
		Kubeconfig: s.KubeconfigFile,
		// Only KUBECONFIG is read through Getenv; the daemon's own is not
		// the user's shell's.
		Getenv: func(k string) string {
			if k == kube.EnvVar {
				return env
			}
			return os.Getenv(k)
		},
	}
}

// describeSource names s for logs.
func describeSource(s api.KubeconfigSource) string {
	switch {
	case s.KubeconfigFile != "":
		return "--kubeconfig " + s.KubeconfigFile
	case len(s.KubeconfigEnv) > 0:
		return "KUBECONFIG=" + strings.Join(s.KubeconfigEnv, string(filepath.ListSeparator))
	}
	return kube.HomeFile
}

// sameCluster reports whether a sandbox saved with src and kubeContext
// lives in the cluster creq selects. Sources are compared as Open's cache
// keys compare them and contexts once resolved: a sandbox is saved with the
// context it was connected to, and a request without --context means the
// current one. current is currentContext(creq.KubeconfigSource), which an
// empty context on either side resolves to; a named context resolves to
// itself, so gc reads the kubeconfig once for all its sandboxes.
func sameCluster(src api.KubeconfigSource, kubeContext string, creq api.ClusterRequest, current string) bool {
	if src.Key() != creq.KubeconfigSource.Key() {
		return false
	}
	resolve := func(kctx string) string {
		if kctx == "" {
			return current
		}
		return kctx
	}
	return kubeContext == creq.Context || resolve(kubeContext) == resolve(creq.Context)
}

// specContext resolves the spec.cluster of a connect without --context to
// the kube context it names, through the user config's contexts mapping
// (read from configPath), as package cluster/kube does. An unknown name is
// the user's to fix, so it is refused at once (400) rather than becoming a
// sandbox that fails in the background.
func specContext(req api.ConnectRequest, contexts map[string]string, configPath string) (string, error) {
	opts := SourceOptions(req.KubeconfigSource)
	opts.Cluster, opts.ClusterContexts, opts.ConfigFile = req.Spec.Spec.Cluster, contexts, configPath
	name, _, err := kube.ChooseContext(opts)
	if err != nil {
		return "", badRequest("sandbox %s: %v", req.Spec.Name, err)
	}
	return name, nil
}

// currentContext is the kubeconfig's current context, which a sandbox
// connected without --context or spec.cluster is pinned to, so that a
// later `kubectl config use-context` does not move it (its objects stay
// where they were applied, and disconnect must find them there). It is ""
// when the kubeconfig cannot be read: opening the cluster then reports
// why, in the background, as before.
func currentContext(src api.KubeconfigSource) string {
	name, _, err := kube.ChooseContext(SourceOptions(src))
	if err != nil {
		return ""
	}
	return name
}
