package sim

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSimulatedAPIServerSemantics(t *testing.T) {
	ctx := context.Background()
	n := NewNetwork("")
	c := NewClients(n, nil)
	deps := c.Kube.AppsV1().Deployments("ns")
	dep, _ := appObjects("ns", AppService{Name: "web", Port: 80}, "v1")

	created, err := deps.Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, created.UID)
	require.NotEmpty(t, created.ResourceVersion)
	require.Equal(t, int64(1), created.Generation)
	require.False(t, created.CreationTimestamp.IsZero())

	// A spec change bumps the generation; the uid stays.
	created.Spec.Template.Labels["extra"] = "1"
	updated, err := deps.Update(ctx, created, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), updated.Generation)
	require.Equal(t, created.UID, updated.UID)
	require.NotEqual(t, created.ResourceVersion, updated.ResourceVersion)

	// A stale resourceVersion is a conflict.
	_, err = deps.Update(ctx, created, metav1.UpdateOptions{})
	require.True(t, apierrors.IsConflict(err), "%v", err)

	// The status subresource changes only the status; a main update keeps
	// the stored status.
	st := updated.DeepCopy()
	st.Status.ReadyReplicas = 1
	st.Spec.Template.Labels["sneaky"] = "1"
	afterStatus, err := deps.UpdateStatus(ctx, st, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(1), afterStatus.Status.ReadyReplicas)
	require.NotContains(t, afterStatus.Spec.Template.Labels, "sneaky")
	main := afterStatus.DeepCopy()
	main.Status.ReadyReplicas = 7
	afterMain, err := deps.Update(ctx, main, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Equal(t, int32(1), afterMain.Status.ReadyReplicas)
	require.Equal(t, int64(2), afterMain.Generation, "no spec change, no new generation")

	// generateName, and a Service gets a ClusterIP from the network.
	gen, err := deps.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{GenerateName: "job-"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Regexp(t, `^job-[a-z0-9]{5}$`, gen.Name)
	svc, err := c.Kube.CoreV1().Services("ns").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	ip, ok := n.ServiceIP("ns", "web")
	require.True(t, ok)
	require.Equal(t, ip.String(), svc.Spec.ClusterIP)
	require.Equal(t, int32(80), svc.Spec.Ports[0].TargetPort.IntVal)

	// stringData is merged into data on create and update.
	secrets := c.Kube.CoreV1().Secrets("ns")
	s, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tok"}, StringData: map[string]string{"token": "a"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Equal(t, "a", string(s.Data["token"]))
	require.Empty(t, s.StringData)
	s.StringData = map[string]string{"token": "b"}
	s, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Equal(t, "b", string(s.Data["token"]))
}
