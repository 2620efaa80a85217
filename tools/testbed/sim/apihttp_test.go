package sim

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/stretchr/testify/require"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
)

// TestAPIOverHTTP uses the simulated cluster the way a separate process
// does: a kubeconfig, client-go's real clientsets, informers (streaming
// lists), and a port-forward through the API server URL.
func TestAPIOverHTTP(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, c.WriteKubeconfig(path))
	kc, err := kube.Load(kube.Options{Kubeconfig: path, Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	require.Equal(t, AppNamespace, kc.Namespace)
	require.Equal(t, "sim", kc.Context)

	dep, err := kc.Kube.AppsV1().Deployments(AppNamespace).Get(ctx, "route", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "route", dep.Spec.Template.Labels["app"])
	require.NotEmpty(t, dep.UID)
	_, err = kc.Kube.AppsV1().Deployments(AppNamespace).Get(ctx, "nope", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "%v", err)

	pods, err := kc.Kube.CoreV1().Pods(AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=driver"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	all, err := kc.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, all.Items, 3)

	cms := kc.Kube.CoreV1().ConfigMaps(AppNamespace)
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Data: map[string]string{"a": "1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	stale := cm.DeepCopy()
	cm.Data["a"] = "2"
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = cms.Update(ctx, stale, metav1.UpdateOptions{})
	require.True(t, apierrors.IsConflict(err), "%v", err)
	_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	require.True(t, apierrors.IsAlreadyExists(err), "%v", err)
	require.NoError(t, cms.Delete(ctx, "x", metav1.DeleteOptions{}))

	vss, err := kc.Istio.NetworkingV1().VirtualServices(AppNamespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, vss.Items, 1)
	require.Equal(t, "default", vss.Items[0].Spec.Http[0].Name)

	// Informers sync over HTTP and see later changes.
	stop := make(chan struct{})
	kf := informers.NewSharedInformerFactoryWithOptions(kc.Kube, 0, informers.WithNamespace(AppNamespace))
	cmInf := kf.Core().V1().ConfigMaps()
	cmLister := cmInf.Lister()
	istF := istioinformers.NewSharedInformerFactory(kc.Istio, 0)
	vsLister := istF.Networking().V1().VirtualServices().Lister()
	kf.Start(stop)
	istF.Start(stop)
	defer func() {
		close(stop)
		kf.Shutdown()
		istF.Shutdown()
	}()
	for typ, ok := range kf.WaitForCacheSync(ctx.Done()) {
		require.True(t, ok, "%v", typ)
	}
	for typ, ok := range istF.WaitForCacheSync(ctx.Done()) {
		require.True(t, ok, "%v", typ)
	}
	_, err = vsLister.VirtualServices(AppNamespace).Get("route")
	require.NoError(t, err)
	_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "later"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := cmLister.ConfigMaps(AppNamespace).Get("later")
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	// Port-forward through the API server URL to a baseline pod.
	d, err := portforward.New(portforward.Config{REST: kc.REST, Client: kc.Kube, Namespace: AppNamespace,
		Selector: "app=driver", Port: 8082, Logger: testLogger(t)})
	require.NoError(t, err)
	defer d.Close()
	conn, err := d.Dial(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /direct HTTP/1.1\r\nHost: driver\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
