// Package kube loads the cluster connection the way kubectl does.
//
// --kubeconfig names one file; otherwise KUBECONFIG (a path list, merged:
// the first file to set a value wins) or ~/.kube/config is read. --context
// picks a context; otherwise a sandbox spec's `cluster` field does
// (directly as a context name, or through a name→context map from sbx's
// config); otherwise the kubeconfig's current-context. -n overrides the
// context's namespace, which defaults to "default".
package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	istio "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options say which cluster to talk to. All fields are optional.
type Options struct {
	// Kubeconfig is the --kubeconfig flag: the only file read when set.
	Kubeconfig string
	// Context is the --context flag. It wins over Cluster.
	Context string
	// Namespace is the -n flag.
	Namespace string
	// Cluster is a sandbox spec's `cluster` field: a key of ClusterContexts
	// or, failing that, a context name.
	Cluster string
	// ClusterContexts maps cluster names used in specs to kubeconfig
	// contexts (from sbx's config file).
	ClusterContexts map[string]string
	// ConfigFile is the sbx config file ClusterContexts came from; errors
	// name it so that the user knows where to add a mapping.
	ConfigFile string
	// Getenv reads KUBECONFIG; nil means os.Getenv.
	Getenv func(string) string
	// UserAgent is sent to the API server; empty keeps client-go's default.
	UserAgent string
}

// Cluster is a loaded cluster connection.
type Cluster struct {
	// REST is the client configuration for the chosen context.
	REST *rest.Config
	// Kube, Istio and Dynamic (Argo Rollouts) are clients built from REST.
	Kube    kubernetes.Interface
	Istio   istio.Interface
	Dynamic dynamic.Interface
	// Namespace is the effective namespace; NamespaceExplicit is true when
	// it came from -n or the context rather than the "default" fallback.
	Namespace         string
	NamespaceExplicit bool
	// Context is the chosen context's name and ContextSource why it was
	// chosen ("--context", `spec cluster "staging-1"`, "current-context").
	Context, ContextSource string
	// Files are the kubeconfig files that were consulted.
	Files []string
}

// EnvVar is the environment variable with kubectl's kubeconfig path list.
const EnvVar = clientcmd.RecommendedConfigPathEnvVar

// HomeFile is the kubeconfig read when neither --kubeconfig nor EnvVar
// names one (~/.kube/config).
var HomeFile = clientcmd.RecommendedHomeFile

// ErrNoKubeconfig means none of the kubeconfig files exists.
var ErrNoKubeconfig = errors.New("no kubeconfig found")

// ErrUnknownContext means the requested context is not in the kubeconfig.
var ErrUnknownContext = errors.New("context not found in kubeconfig")

// Load resolves opts to a cluster connection and builds its clientsets. It
// does not contact the cluster.
func Load(opts Options) (*Cluster, error) {
	cfg, err := Resolve(opts)
	if err != nil {
		return nil, err
	}
	if err := cfg.BuildClients(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// BuildClients sets Kube, Istio and Dynamic from REST: what Load adds to
// Resolve. A caller that resolved first (to decide whether it already has
// a connection for this context) builds from the very configuration it
// looked at, rather than reading the kubeconfig again, which may have
// changed in between. It does not contact the cluster.
func (c *Cluster) BuildClients() error {
	var err error
	c.Kube, err = kubernetes.NewForConfig(c.REST)
	if err != nil {
		return fmt.Errorf("kubernetes client for context %q: %w", c.Context, err)
	}
	c.Istio, err = istio.NewForConfig(c.REST)
	if err != nil {
		return fmt.Errorf("istio client for context %q: %w", c.Context, err)
	}
	c.Dynamic, err = dynamic.NewForConfig(c.REST)
	if err != nil {
		return fmt.Errorf("dynamic client for context %q: %w", c.Context, err)
	}
	return nil
}

// Resolve is Load without building clientsets.
func Resolve(opts Options) (*Cluster, error) {
	k, err := load(opts)
	if err != nil {
		return nil, err
	}
	raw, where := k.raw, k.where
	name, source, err := chooseContext(opts, raw, where)
	if err != nil {
		return nil, err
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: name}
	overrides.Context.Namespace = opts.Namespace
	cc := clientcmd.NewNonInteractiveClientConfig(*raw, name, overrides, k.rules)
	restCfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("context %q in %s: %w", name, where, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("namespace of context %q in %s: %w", name, where, err)
	}
	explicit := opts.Namespace != "" || raw.Contexts[name].Namespace != ""
	if opts.UserAgent != "" {
		restCfg.UserAgent = opts.UserAgent
	}
	// Informers and apply bursts need more than client-go's 5 QPS.
	if restCfg.QPS == 0 {
		restCfg.QPS, restCfg.Burst = 50, 100
	}
	return &Cluster{
		REST:              restCfg,
		Namespace:         ns,
		NamespaceExplicit: explicit,
		Context:           name,
		ContextSource:     source,
		Files:             k.files,
	}, nil
}

// ChooseContext returns the context Resolve would pick for opts, and why
// ("--context", `spec cluster "staging-1" → context gke_…`,
// "current-context"). It reads the kubeconfig but builds no client
// configuration, so a caller can settle which cluster a spec means (and
// report an unknown one) before anything else.
func ChooseContext(opts Options) (name, source string, err error) {
	k, err := load(opts)
	if err != nil {
		return "", "", err
	}
	return chooseContext(opts, k.raw, k.where)
}

// loaded is a merged kubeconfig and where it came from.
type loaded struct {
	rules *clientcmd.ClientConfigLoadingRules
	raw   *clientcmdapi.Config
	files []string // the files that exist and were read
	where string   // the files, for errors
}

// load reads the kubeconfig files opts select, as kubectl does.
func load(opts Options) (*loaded, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: opts.Kubeconfig}
	files := []string{opts.Kubeconfig}
	if opts.Kubeconfig == "" {
		if env := getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
			rules.Precedence = dedupe(filepath.SplitList(env))
		} else {
			rules.Precedence = []string{clientcmd.RecommendedHomeFile}
		}
		files = existing(rules.Precedence)
		if len(files) == 0 {
			return nil, fmt.Errorf("%w: looked in %s (set KUBECONFIG or pass --kubeconfig)",
				ErrNoKubeconfig, strings.Join(rules.Precedence, string(filepath.ListSeparator)))
		}
	}
	where := "kubeconfig " + strings.Join(files, string(filepath.ListSeparator))
	raw, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", where, err)
	}
	return &loaded{rules: rules, raw: raw, files: files, where: where}, nil
}

// chooseContext applies --context > spec cluster > current-context.
func chooseContext(opts Options, raw *clientcmdapi.Config, where string) (name, source string, err error) {
	available := contextNames(raw)
	switch {
	case opts.Context != "":
		if _, ok := raw.Contexts[opts.Context]; !ok {
			return "", "", fmt.Errorf("%w: --context %q is not in %s (available: %s)",
				ErrUnknownContext, opts.Context, where, available)
		}
		return opts.Context, "--context", nil
	case opts.Cluster != "":
		source = fmt.Sprintf("spec cluster %q", opts.Cluster)
		if mapped, ok := opts.ClusterContexts[opts.Cluster]; ok {
			if _, ok := raw.Contexts[mapped]; !ok {
				return "", "", fmt.Errorf("%w: spec cluster %q maps to context %q (contexts: in %s), which is not in %s (available: %s); fix the mapping or pass --context",
					ErrUnknownContext, opts.Cluster, mapped, sbxConfig(opts), where, available)
			}
			return mapped, source + " → context " + mapped, nil
		}
		if _, ok := raw.Contexts[opts.Cluster]; !ok {
			return "", "", fmt.Errorf("%w: spec cluster %q is neither a context in %s (available: %s) nor a cluster name under contexts: in %s (known: %s); set spec.cluster to one of those, map %q to a context under contexts: in %s, or pass --context",
				ErrUnknownContext, opts.Cluster, where, available, sbxConfig(opts), mapNames(opts.ClusterContexts), opts.Cluster, sbxConfig(opts))
		}
		return opts.Cluster, source, nil
	case raw.CurrentContext != "":
		if _, ok := raw.Contexts[raw.CurrentContext]; !ok {
			return "", "", fmt.Errorf("%w: current-context %q is not in %s (available: %s); pass --context or run kubectl config use-context",
				ErrUnknownContext, raw.CurrentContext, where, available)
		}
		return raw.CurrentContext, "current-context", nil
	default:
		return "", "", fmt.Errorf("%w: %s sets no current-context; pass --context (available: %s)",
			ErrUnknownContext, where, available)
	}
}

// sbxConfig names the sbx config file in errors.
func sbxConfig(opts Options) string {
	if opts.ConfigFile == "" {
		return "sbx's config"
	}
	return "sbx config " + opts.ConfigFile
}

func contextNames(raw *clientcmdapi.Config) string {
	names := make([]string, 0, len(raw.Contexts))
	for n := range raw.Contexts {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "none"
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func mapNames(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// dedupe drops empty and repeated paths, as kubectl does.
func dedupe(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}
