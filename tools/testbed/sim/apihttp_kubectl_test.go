package sim

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbx-dev/sbx/cluster/kube"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/restmapper"
)

// TestAPIForKubectl covers, with client-go, what kubectl needs of the
// simulated API server (the real kubectl runs against it in
// tools/testbed/realcp/kubectlsim): discovery that maps what kubectl
// users type to URLs, namespaces, pod logs, PATCH, field validation and
// SelfSubjectAccessReview.
func TestAPIForKubectl(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, c.WriteKubeconfig(path))
	kc, err := kube.Load(kube.Options{Kubeconfig: path, Getenv: func(string) string { return "" }})
	require.NoError(t, err)

	// Discovery: short names, scopes, one version per group.
	groups, err := restmapper.GetAPIGroupResources(kc.Kube.Discovery())
	require.NoError(t, err)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDiscoveryRESTMapper(groups), kc.Kube.Discovery(), nil)
	for short, want := range map[string]schema.GroupVersionResource{
		"po":     {Version: "v1", Resource: "pods"},
		"deploy": {Group: "apps", Version: "v1", Resource: "deployments"},
		"svc":    {Version: "v1", Resource: "services"},
		"ns":     {Version: "v1", Resource: "namespaces"},
		"vs":     {Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"},
	} {
		got, err := mapper.ResourceFor(schema.GroupVersionResource{Resource: short})
		require.NoError(t, err, short)
		require.Equal(t, want, got, short)
	}
	m, err := mapper.RESTMapping(schema.GroupKind{Kind: "Namespace"})
	require.NoError(t, err)
	require.Equal(t, "root", string(m.Scope.Name()))
	_, err = kc.Kube.Discovery().ServerResourcesForGroupVersion("networking.istio.io/v1beta1")
	require.Error(t, err, "a second version of a group would show objects apart from the first")

	// Namespaces exist.
	nss, err := kc.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var names []string
	for _, ns := range nss.Items {
		names = append(names, ns.Name)
	}
	require.Subset(t, names, []string{"default", AppNamespace, "istio-system"})

	// Pod logs are the container's log lines, not the Pod.
	pods, err := kc.Kube.CoreV1().Pods(AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=driver"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	raw, err := kc.Kube.CoreV1().Pods(AppNamespace).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	require.NoError(t, err)
	require.Contains(t, string(raw), "sample service listening")
	require.NotContains(t, string(raw), "apiVersion")
	_, err = kc.Kube.CoreV1().Pods(AppNamespace).GetLogs("nope", &corev1.PodLogOptions{}).DoRaw(ctx)
	require.True(t, apierrors.IsNotFound(err), "%v", err)

	// PATCH: strategic merge and JSON merge.
	cms := kc.Kube.CoreV1().ConfigMaps(AppNamespace)
	_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Data: map[string]string{"a": "1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cm, err := cms.Patch(ctx, "p", types.StrategicMergePatchType, []byte(`{"data":{"b":"2"}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a": "1", "b": "2"}, cm.Data)
	cm, err = cms.Patch(ctx, "p", types.MergePatchType, []byte(`{"data":{"a":null}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"b": "2"}, cm.Data)

	// fieldValidation=Strict refuses an unknown field and names it.
	_, err = cms.Patch(ctx, "p", types.MergePatchType, []byte(`{"dta":{"c":"3"}}`), metav1.PatchOptions{FieldValidation: "Strict"})
	require.Error(t, err)
	require.Contains(t, err.Error(), `unknown field "dta"`)

	// auth can-i: allowed, and why.
	review, err := kc.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.True(t, review.Status.Allowed)
	require.Contains(t, review.Status.Reason, "no RBAC")

	// OpenAPI v3 announces fieldValidation for kubectl's --validate.
	resp, err := http.Get(c.APIServerURL() + "/openapi/v3/api/v1")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.Contains(string(body), "fieldValidation") && strings.Contains(string(body), "/api/v1/namespaces/{namespace}/configmaps/{name}"), "%s", body)

	// kubectl get's server-side printing: a Table with the pod columns.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.APIServerURL()+"/api/v1/namespaces/"+AppNamespace+"/pods", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	for _, want := range []string{`"kind":"Table"`, `"name":"Status"`, `"Running"`, `"1/1"`, `"PartialObjectMetadata"`} {
		require.Contains(t, string(body), want)
	}
}

// TestPodLogFollow: kubectl logs -f gets what the pod's container logs
// after it started following, and ends when the pod is deleted.
func TestPodLogFollow(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, c.WriteKubeconfig(path))
	kc, err := kube.Load(kube.Options{Kubeconfig: path, Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	pods, err := kc.Kube.CoreV1().Pods(AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=route"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	pod := pods.Items[0].Name

	tail := int64(0)
	stream, err := kc.Kube.CoreV1().Pods(AppNamespace).GetLogs(pod, &corev1.PodLogOptions{Follow: true, TailLines: &tail}).Stream(ctx)
	require.NoError(t, err)
	defer stream.Close()
	lines := make(chan string, 10)
	go func() {
		defer close(lines)
		buf := make([]byte, 4096)
		for {
			n, err := stream.Read(buf)
			if n > 0 {
				lines <- string(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	c.logs.logger(testLogger(t), AppNamespace, pod).Info("a line after following began")
	select {
	case l := <-lines:
		require.Contains(t, l, "a line after following began")
		require.NotContains(t, l, "sample service listening", "tailLines=0 must skip the earlier lines")
	case <-ctx.Done():
		t.Fatal("kubectl logs -f did not get the new line")
	}
	require.NoError(t, kc.Kube.CoreV1().Pods(AppNamespace).Delete(ctx, pod, metav1.DeleteOptions{}))
	for range lines { // ends once the server sees the pod gone
	}
}
