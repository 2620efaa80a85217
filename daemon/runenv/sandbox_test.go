package runenv

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
)

// TestFromSandboxPicksTheWorkload: the local workload is the one named,
// else the only one; the baseline is the one named, else the one the
// daemon reports, else the workload of the local one's name, of any kind.
func TestFromSandboxPicksTheWorkload(t *testing.T) {
	dep := func(name string, env ...corev1.EnvVar) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: name},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Env: env}}}}}}
	}
	kc := fake.NewClientset(
		dep("route", corev1.EnvVar{Name: "WHO", Value: "route"}),
		dep("route-v2", corev1.EnvVar{Name: "WHO", Value: "route-v2"}),
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "db"},
			Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Env: []corev1.EnvVar{{Name: "WHO", Value: "db"}}}}}}}},
	)
	one := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{
		{Workload: "route", Namespace: "hotrod", Port: 8083}, {Workload: "route", Namespace: "hotrod", Port: 9090}}}
	two := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{
		{Workload: "route", Namespace: "hotrod", Port: 8083}, {Workload: "db", Namespace: "hotrod", Port: 5432}}}
	ghost := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{{Workload: "ghost", Namespace: "hotrod"}}}
	// When the daemon reports the baseline workload (the spec's
	// local[].from), it wins over names.
	from := &spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "route-v2"}
	withFrom := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{
		{Workload: "route", Namespace: "hotrod", Port: 8083, From: from}, {Workload: "route", Namespace: "hotrod", Port: 9090, From: from}}}
	require.Equal(t, []LocalWorkload{{Name: "route", Namespace: "hotrod", From: from}}, LocalWorkloads(withFrom))

	for _, tc := range []struct {
		name      string
		st        api.SandboxStatus
		local     string
		baseline  spec.Workload
		container string
		want      string
		err       string
	}{
		{name: "the only workload, found by name", st: one, want: "route"},
		{name: "a named baseline overrides", st: one, baseline: spec.Workload{Kind: spec.KindDeployment, Name: "route-v2"}, want: "route-v2"},
		{name: "the daemon's baseline overrides the name", st: withFrom, want: "route-v2"},
		{name: "several need a name", st: two, err: "sandbox alice has several local workloads"},
		{name: "a StatefulSet by name", st: two, local: "db", want: "db"},
		{name: "an unknown local workload", st: two, local: "nope", err: `sandbox alice has no local workload "nope"`},
		{name: "no local workloads", st: api.SandboxStatus{Name: "alice"}, err: "sandbox alice has no local workloads"},
		{name: "nothing by that name", st: ghost, err: "no Deployment, StatefulSet or Rollout named ghost in namespace hotrod"},
		{name: "a named baseline that is not there", st: one, baseline: spec.Workload{Kind: spec.KindDeployment, Name: "nosuch"}, err: "baseline Deployment hotrod/nosuch not found"},
		{name: "a container that is not there", st: one, container: "nope", err: `Deployment hotrod/route has no container "nope"; its containers are app`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := FromSandbox(context.Background(), tc.st, tc.local, BaselineOptions{Kube: kc, Workload: tc.baseline, Container: tc.container})
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			got, _ := e.Get("WHO")
			require.Equal(t, tc.want, got)
		})
	}
}

// TestLocalWorkloadError: the error lists the sandbox's workloads, so
// that the caller can say which to pick.
func TestLocalWorkloadError(t *testing.T) {
	st := api.SandboxStatus{Name: "alice", Mappings: []api.MappingStatus{{Workload: "route"}, {Workload: "db"}, {Workload: "route"}}}
	_, err := FromSandbox(context.Background(), st, "", BaselineOptions{})
	var lw *LocalWorkloadError
	require.ErrorAs(t, err, &lw)
	require.Equal(t, &LocalWorkloadError{Sandbox: "alice", Workloads: []string{"route", "db"}}, lw)
}
