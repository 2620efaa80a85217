package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/runenv"
)

// envFlags are the flags `sbx run` and `sbx env` share.
type envFlags struct {
	fromBaseline   bool
	includeSecrets bool
	workload       string // local workload name inside the sandbox
	from           string // KIND/NAME of the baseline workload, overriding the lookup
	container      string
}

func (f *envFlags) bind(cmd interface {
	BoolVar(*bool, string, bool, string)
	StringVar(*string, string, string, string)
}) {
	cmd.BoolVar(&f.fromBaseline, "env-from-baseline", false, "also copy the baseline container's environment from the cluster (ConfigMap values resolved)")
	cmd.BoolVar(&f.includeSecrets, "include-secrets", false, "with --env-from-baseline, copy Secret values too (otherwise they are left out with a note)")
	cmd.StringVar(&f.workload, "workload", "", "with --env-from-baseline, which of the sandbox's local workloads (default: the only one)")
	cmd.StringVar(&f.from, "from", "", "with --env-from-baseline, the baseline workload as KIND/NAME (e.g. deployment/driver); default: the one the sandbox replaces")
	cmd.StringVar(&f.container, "container", "", "with --env-from-baseline, the container (default: the pod's default container, else the first)")
}

// sandboxEnv asks the daemon about the sandbox and builds its environment;
// notes (values left out) come back for the caller to print.
func sandboxEnv(ctx context.Context, g *globalOptions, name string, f envFlags) (runenv.Env, error) {
	if (f.includeSecrets || f.workload != "" || f.from != "" || f.container != "") && !f.fromBaseline {
		return runenv.Env{}, userError(errors.New("--include-secrets, --workload, --from and --container only apply with --env-from-baseline"),
			"add --env-from-baseline")
	}
	from, err := parseFrom(f.from)
	if err != nil {
		return runenv.Env{}, err
	}
	// A stopped daemon restores its sandboxes (same routing keys) when it
	// starts, so start it rather than report "not connected".
	c, err := needDaemon(ctx, g)
	if err != nil {
		return runenv.Env{}, err
	}
	defer c.Close()
	st, err := c.Sandbox(ctx, name)
	if err != nil {
		if api.IsNotFound(err) {
			return runenv.Env{}, userError(fmt.Errorf("sandbox %q is not connected", name), "`sbx status` lists the connected sandboxes; connect it with `sbx connect -f FILE`")
		}
		return runenv.Env{}, err
	}
	all, err := c.Status(ctx)
	if err != nil {
		return runenv.Env{}, err
	}
	sb := runenv.Sandbox{Name: st.Name, RoutingKey: st.RoutingKey, BaggageKey: st.BaggageKey, ProxyAddr: proxyAddrOf(all)}
	if sb.ProxyAddr != "" {
		pc, err := c.ProxyCredential(ctx)
		if err != nil {
			return runenv.Env{}, fmt.Errorf("reading the outbound proxy's credential from the daemon: %w", err)
		}
		sb.ProxyUsername, sb.ProxyPassword = pc.Username, pc.Password
	}
	var base *runenv.Env
	if f.fromBaseline {
		kc, err := kube.Load(baselineKubeOptions(g, st))
		if err != nil {
			return runenv.Env{}, userError(fmt.Errorf("--env-from-baseline needs the cluster: %w", err), "check --kubeconfig/--context, or drop --env-from-baseline")
		}
		base, err = baselineEnv(ctx, runenv.BaselineOptions{Kube: kc.Kube, Dynamic: kc.Dynamic, Workload: from, Container: f.container, IncludeSecrets: f.includeSecrets}, st, f)
		if err != nil {
			return runenv.Env{}, err
		}
	}
	env := runenv.Build(sb, base)
	if st.Phase != api.PhaseReady {
		env.Note(fmt.Sprintf("sandbox %s is %s: keyed requests and calls to cluster names work once it is ready (`sbx status %s`)", st.Name, st.Phase, st.Name))
	}
	return env, nil
}

// baselineKubeOptions selects the cluster to read the baseline from: the
// sandbox's own kubeconfig and context, so that a shell with another
// $KUBECONFIG (or none) still reads the cluster the sandbox is in;
// --kubeconfig and --context override them.
func baselineKubeOptions(g *globalOptions, st api.SandboxStatus) kube.Options {
	src := st.Kubeconfig
	if g.kubeconfig != "" {
		src = kubeconfigSource(g)
	}
	opts := daemon.SourceOptions(src)
	opts.Context, opts.UserAgent = firstNonEmpty(g.context, st.Context), "sbx-env"
	return opts
}

// proxyAddrOf is the outbound proxy's address when outbound access runs
// in proxy mode, else "" (hosts mode needs no variables).
func proxyAddrOf(st api.Status) string {
	if st.Outbound == nil {
		return ""
	}
	return st.Outbound.ProxyAddr
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// baselineEnv reads the environment of the baseline container that o
// and the flags select for the sandbox (runenv.FromSandbox), its errors
// with the flag that fixes them as the hint.
func baselineEnv(ctx context.Context, o runenv.BaselineOptions, st api.SandboxStatus, f envFlags) (*runenv.Env, error) {
	env, err := runenv.FromSandbox(ctx, st, f.workload, o)
	var (
		lw *runenv.LocalWorkloadError
		ub *runenv.UnnamedBaselineError
		nf *runenv.NotFoundError
		ce *runenv.ContainerError
	)
	switch {
	case errors.As(err, &lw) && lw.Name != "":
		return nil, userError(err, "its workloads: "+strings.Join(lw.Workloads, ", "))
	case errors.As(err, &lw) && len(lw.Workloads) == 0:
		return nil, userError(err, "")
	case errors.As(err, &lw):
		return nil, userError(err, "pick one with --workload: "+strings.Join(lw.Workloads, ", "))
	case errors.As(err, &ub):
		return nil, userError(err, "name the baseline workload with --from KIND/NAME")
	case errors.As(err, &nf) && f.from != "":
		return nil, userError(err, fmt.Sprintf("check --from %s (`kubectl get %ss -n %s` lists them)", f.from, strings.ToLower(o.Workload.Kind), nf.Workload.Namespace))
	case errors.As(err, &nf):
		return nil, userError(err, "check the sandbox spec's local[].from, or name the baseline with --from KIND/NAME")
	case errors.As(err, &ce) && f.container != "":
		return nil, userError(err, "pick one with --container")
	}
	return env, err
}

// kindNames maps what users type in --from to spec kinds.
var kindNames = map[string]string{
	"deployment": spec.KindDeployment, "deploy": spec.KindDeployment, "deployments": spec.KindDeployment,
	"statefulset": spec.KindStatefulSet, "sts": spec.KindStatefulSet, "statefulsets": spec.KindStatefulSet,
	"rollout": spec.KindRollout, "ro": spec.KindRollout, "rollouts": spec.KindRollout,
}

// parseFrom reads --from KIND/NAME into the baseline workload's kind and
// name (its namespace is the local workload's); no --from is the zero
// Workload.
func parseFrom(from string) (spec.Workload, error) {
	if from == "" {
		return spec.Workload{}, nil
	}
	kind, name, ok := strings.Cut(from, "/")
	k, known := kindNames[strings.ToLower(kind)]
	if !ok || !known || name == "" {
		return spec.Workload{}, userError(fmt.Errorf("--from %q: want KIND/NAME", from), "e.g. --from deployment/driver (kinds: deployment, statefulset, rollout)")
	}
	return spec.Workload{Kind: k, Name: name}, nil
}

// printNotes tells the user what was left out of the environment.
func printNotes(g *globalOptions, e runenv.Env, skipped []string) {
	for _, n := range e.Notes {
		fmt.Fprintf(g.stderr, "sbx: note: %s\n", n)
	}
	for _, s := range skipped {
		fmt.Fprintf(g.stderr, "sbx: note: %s\n", s)
	}
}
