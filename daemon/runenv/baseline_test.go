package runenv

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
)

func ptr[T any](v T) *T { return &v }

func driverContainer() corev1.Container {
	return corev1.Container{
		Name: "driver",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "driver-config"}}},
			{Prefix: "DB_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent-optional"}, Optional: ptr(true)}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent-required"}}},
		},
		Env: []corev1.EnvVar{
			{Name: "LOG_LEVEL", Value: "debug"}, // overrides the ConfigMap's
			{Name: "GREETING", Value: "hello $(USER_NAME) at $(REGION), $$(literal) $(UNDEFINED)"},
			{Name: "FEATURE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "flags"}, Key: "feature"}}},
			{Name: "MISSING_KEY", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "flags"}, Key: "nope"}}},
			{Name: "API_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "api"}, Key: "token"}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "PATH", Value: "/app/bin:/usr/bin"},
		},
	}
}

func objects() []runtime.Object {
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "driver"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{driverContainer(), {Name: "sidecar", Env: []corev1.EnvVar{{Name: "SIDE", Value: "car"}}}}},
	}
	sideFirst := *tmpl.DeepCopy()
	sideFirst.Annotations = map[string]string{defaultContainerAnnotation: "sidecar"}
	return []runtime.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "driver"}, Spec: appsv1.DeploymentSpec{Template: tmpl}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "db"}, Spec: appsv1.StatefulSetSpec{Template: sideFirst}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "driver-config"},
			Data: map[string]string{"LOG_LEVEL": "info", "USER_NAME": "alice", "REGION": "eu", "bad-key!": "x", "1STARTS_WITH_DIGIT": "y", "HOME": "/root"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "flags"}, Data: map[string]string{"feature": "on"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "db"}, Data: map[string][]byte{"PASSWORD": []byte("s3cr3t"), "USER": []byte("app")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hotrod", Name: "api"}, Data: map[string][]byte{"token": []byte("tok-123")}},
	}
}

func notesContain(t *testing.T, e *Env, parts ...string) {
	t.Helper()
	for _, n := range e.Notes {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(n, p)
		}
		if ok {
			return
		}
	}
	t.Fatalf("no note with %q in:\n%s", parts, strings.Join(e.Notes, "\n"))
}

func TestFromBaselineDeployment(t *testing.T) {
	kube := fake.NewClientset(objects()...)
	w := spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "driver"}

	e, err := FromBaseline(context.Background(), BaselineOptions{Kube: kube, Workload: w})
	require.NoError(t, err)
	get := func(n string) (string, bool) { return e.Get(n) }
	for name, want := range map[string]string{
		"LOG_LEVEL":     "debug",
		"USER_NAME":     "alice",
		"REGION":        "eu",
		"GREETING":      "hello alice at eu, $(literal) $(UNDEFINED)",
		"FEATURE":       "on",
		"POD_NAMESPACE": "hotrod",
	} {
		v, ok := get(name)
		require.True(t, ok, name)
		require.Equal(t, want, v, name)
	}
	for _, name := range []string{"DB_PASSWORD", "DB_USER", "API_TOKEN", "POD_NAME", "MEM_LIMIT", "MISSING_KEY", "PATH", "HOME", "1STARTS_WITH_DIGIT", "SIDE"} {
		_, ok := get(name)
		require.False(t, ok, name)
	}
	notesContain(t, e, "Secret hotrod/db", "--include-secrets")
	notesContain(t, e, "API_TOKEN", "--include-secrets")
	notesContain(t, e, "POD_NAME", "fieldRef metadata.name", "skipped")
	notesContain(t, e, "MEM_LIMIT", "resourceFieldRef limits.memory", "skipped")
	notesContain(t, e, "MISSING_KEY", `no key "nope"`)
	notesContain(t, e, "absent-required", "does not exist")
	notesContain(t, e, "PATH", "not copied")
	notesContain(t, e, "1STARTS_WITH_DIGIT", "not a valid")
	v, _ := get("bad-key!")
	require.Equal(t, "x", v, "any printable name without '=' is kept (Kubernetes' relaxed rule); dotenv/shell formats skip it")
	for _, n := range e.Notes {
		require.NotContains(t, n, "absent-optional", "optional sources that are missing are fine")
		require.NotContains(t, n, "s3cr3t")
		require.NotContains(t, n, "tok-123")
	}

	e, err = FromBaseline(context.Background(), BaselineOptions{Kube: kube, Workload: w, IncludeSecrets: true})
	require.NoError(t, err)
	for name, want := range map[string]string{"DB_PASSWORD": "s3cr3t", "DB_USER": "app", "API_TOKEN": "tok-123"} {
		v, ok := e.Get(name)
		require.True(t, ok, name)
		require.Equal(t, want, v)
	}

	e, err = FromBaseline(context.Background(), BaselineOptions{Kube: kube, Workload: w, Container: "sidecar"})
	require.NoError(t, err)
	require.Equal(t, []Var{{Name: "SIDE", Value: "car", Source: SourceBaseline}}, e.Vars)

	_, err = FromBaseline(context.Background(), BaselineOptions{Kube: kube, Workload: w, Container: "nope"})
	require.ErrorContains(t, err, `has no container "nope"; its containers are driver, sidecar`)
	var ce *ContainerError
	require.ErrorAs(t, err, &ce)

	_, err = FromBaseline(context.Background(), BaselineOptions{Kube: kube, Workload: spec.Workload{Kind: spec.KindDeployment, Namespace: "hotrod", Name: "ghost"}})
	require.EqualError(t, err, "baseline Deployment hotrod/ghost not found")
	var nf *NotFoundError
	require.ErrorAs(t, err, &nf)
}

func TestFromBaselineStatefulSetDefaultContainer(t *testing.T) {
	kube := fake.NewClientset(objects()...)
	e, err := FromBaseline(context.Background(), BaselineOptions{Kube: kube,
		Workload: spec.Workload{Kind: spec.KindStatefulSet, Namespace: "hotrod", Name: "db"}})
	require.NoError(t, err)
	v, _ := e.Get("SIDE")
	require.Equal(t, "car", v, "the default-container annotation picks the container")
}

func TestFromBaselineRollout(t *testing.T) {
	kube := fake.NewClientset(objects()...)
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Env: []corev1.EnvVar{{Name: "FROM_ROLLOUT", Value: "yes"}}}}},
	})
	require.NoError(t, err)
	withTemplate := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"namespace": "hotrod", "name": "route"},
		"spec":     map[string]any{"template": tmpl},
	}}
	withRef := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"namespace": "hotrod", "name": "driver-rollout"},
		"spec":     map[string]any{"workloadRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "driver"}},
	}}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{cluster.RolloutGVR: "RolloutList"}, withTemplate, withRef)

	e, err := FromBaseline(context.Background(), BaselineOptions{Kube: kube, Dynamic: dyn,
		Workload: spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "route"}})
	require.NoError(t, err)
	v, _ := e.Get("FROM_ROLLOUT")
	require.Equal(t, "yes", v)

	e, err = FromBaseline(context.Background(), BaselineOptions{Kube: kube, Dynamic: dyn,
		Workload: spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "driver-rollout"}})
	require.NoError(t, err)
	v, _ = e.Get("LOG_LEVEL")
	require.Equal(t, "debug", v, "workloadRef followed to the Deployment")

	_, err = FromBaseline(context.Background(), BaselineOptions{Kube: kube,
		Workload: spec.Workload{Kind: spec.KindRollout, Namespace: "hotrod", Name: "route"}})
	require.ErrorContains(t, err, "dynamic client")
}
