package sim

import (
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// TestResolveEnvMissingKey: a missing key of an existing Secret or
// ConfigMap fails the container unless the reference is optional, in which
// case the kubelet leaves the variable unset (not empty).
func TestResolveEnvMissingKey(t *testing.T) {
	kube := kubefake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"k": []byte("sv")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"k": "cv"}},
	)
	p := &relayPod{c: &controller{clients: &Clients{Kube: kube}}, ns: "ns", name: "pod"}
	yes := true
	secretRef := func(key string, opt *bool) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: key, Optional: opt}}
	}
	configMapRef := func(key string, opt *bool) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: key, Optional: opt}}
	}
	tests := []struct {
		name    string
		from    *corev1.EnvVarSource
		want    map[string]string
		wantErr string
	}{
		{"secret key", secretRef("k", nil), map[string]string{"V": "sv"}, ""},
		{"secret key missing", secretRef("x", nil), nil, "couldn't find key x in Secret ns/s"},
		{"optional secret key missing", secretRef("x", &yes), map[string]string{}, ""},
		{"configmap key", configMapRef("k", nil), map[string]string{"V": "cv"}, ""},
		{"configmap key missing", configMapRef("x", nil), nil, "couldn't find key x in ConfigMap ns/cm"},
		{"optional configmap key missing", configMapRef("x", &yes), map[string]string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := p.resolveEnv(corev1.Container{Env: []corev1.EnvVar{{Name: "V", ValueFrom: tt.from}}})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, env)
		})
	}
}
