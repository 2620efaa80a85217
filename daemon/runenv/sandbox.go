package runenv

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
)

// LocalWorkload is one local workload of a sandbox, as its status shows
// it.
type LocalWorkload struct {
	Name, Namespace string
	// From is the baseline workload it stands in for, when the status
	// says (the spec's local[].from).
	From *spec.Workload
}

// LocalWorkloads lists the sandbox's local workloads from its mappings,
// each once, with the baseline workload it stands in for.
func LocalWorkloads(st api.SandboxStatus) []LocalWorkload {
	var out []LocalWorkload
	for _, m := range st.Mappings {
		if slices.ContainsFunc(out, func(w LocalWorkload) bool { return w.Name == m.Workload }) {
			continue
		}
		out = append(out, LocalWorkload{Name: m.Workload, Namespace: m.Namespace, From: m.From})
	}
	return out
}

// LocalWorkloadError is FromSandbox's error when it cannot tell which
// local workload is meant: Name (asked for) is not one of the sandbox's
// Workloads, or none was asked for and the sandbox has none, or several.
type LocalWorkloadError struct {
	Sandbox   string
	Name      string
	Workloads []string
}

func (e *LocalWorkloadError) Error() string {
	switch {
	case e.Name != "":
		return fmt.Sprintf("sandbox %s has no local workload %q", e.Sandbox, e.Name)
	case len(e.Workloads) == 0:
		return fmt.Sprintf("sandbox %s has no local workloads", e.Sandbox)
	}
	return fmt.Sprintf("sandbox %s has several local workloads", e.Sandbox)
}

// UnnamedBaselineError is FromSandbox's error when nothing names the
// baseline workload and none of the kinds it looks for has the local
// workload's name.
type UnnamedBaselineError struct{ Local LocalWorkload }

func (e *UnnamedBaselineError) Error() string {
	return fmt.Sprintf("no Deployment, StatefulSet or Rollout named %s in namespace %s", e.Local.Name, e.Local.Namespace)
}

// FromSandbox is FromBaseline for a local workload of the sandbox st:
// local names it (empty: the sandbox's only one). The baseline workload is
// o.Workload when its Name is set (an empty Namespace is the local
// workload's), else the one the sandbox says the local workload replaces
// (the spec's local[].from), else the Deployment, StatefulSet or Rollout
// named like the local workload (the usual case: a spec's local name is
// the baseline's name). Its errors include *LocalWorkloadError,
// *UnnamedBaselineError and FromBaseline's.
func FromSandbox(ctx context.Context, st api.SandboxStatus, local string, o BaselineOptions) (*Env, error) {
	lw, err := pickLocal(st, local)
	if err != nil {
		return nil, err
	}
	switch {
	case o.Workload.Name != "":
		if o.Workload.Namespace == "" {
			o.Workload.Namespace = lw.Namespace
		}
	case lw.From != nil && lw.From.Name != "":
		o.Workload = *lw.From
	default:
		if o.Workload, err = baselineNamed(ctx, o, lw); err != nil {
			return nil, err
		}
	}
	return FromBaseline(ctx, o)
}

// pickLocal is the sandbox's local workload named name, or its only one.
func pickLocal(st api.SandboxStatus, name string) (LocalWorkload, error) {
	locals := LocalWorkloads(st)
	names := make([]string, len(locals))
	for i, w := range locals {
		names[i] = w.Name
	}
	switch i := slices.Index(names, name); {
	case name != "" && i >= 0:
		return locals[i], nil
	case name == "" && len(locals) == 1:
		return locals[0], nil
	}
	return LocalWorkload{}, &LocalWorkloadError{Sandbox: st.Name, Name: name, Workloads: names}
}

// baselineNamed finds the Deployment, StatefulSet or Rollout (in that
// order) named like lw.
func baselineNamed(ctx context.Context, o BaselineOptions, lw LocalWorkload) (spec.Workload, error) {
	found := func(err error) (bool, error) {
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsNotFound(err):
			return false, nil
		}
		return false, err
	}
	_, err := o.Kube.AppsV1().Deployments(lw.Namespace).Get(ctx, lw.Name, metav1.GetOptions{})
	if ok, err := found(err); ok || err != nil {
		return spec.Workload{Kind: spec.KindDeployment, Namespace: lw.Namespace, Name: lw.Name}, err
	}
	_, err = o.Kube.AppsV1().StatefulSets(lw.Namespace).Get(ctx, lw.Name, metav1.GetOptions{})
	if ok, err := found(err); ok || err != nil {
		return spec.Workload{Kind: spec.KindStatefulSet, Namespace: lw.Namespace, Name: lw.Name}, err
	}
	if o.Dynamic != nil {
		_, err = o.Dynamic.Resource(cluster.RolloutGVR).Namespace(lw.Namespace).Get(ctx, lw.Name, metav1.GetOptions{})
		if ok, _ := found(err); ok {
			return spec.Workload{Kind: spec.KindRollout, Namespace: lw.Namespace, Name: lw.Name}, nil
		}
	}
	return spec.Workload{}, &UnnamedBaselineError{Local: lw}
}
