package sim

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istiov1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const keyRegex = `(.*,)?\s*sbx-routing-key\s*=\s*k3x9\s*(;[^,]*)?(,.*)?`

func keyedRoute(name, dest string) *networking.HTTPRoute {
	return &networking.HTTPRoute{
		Name:  name,
		Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"baggage": regex(keyRegex)}}},
		Route: routeTo(dest),
	}
}

func newVS(ns, name string, hosts []string, routes ...*networking.HTTPRoute) *istiov1.VirtualService {
	return &istiov1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       networking.VirtualService{Hosts: hosts, Http: routes},
	}
}

// meshCluster is a cluster with an extra "route-v2" workload to route to.
func meshCluster(t *testing.T) (*Cluster, *http.Client) {
	c := startCluster(t, Options{WithoutBaselineVirtualService: true})
	ctx := context.Background()
	_, err := c.RunApp(ctx, AppNamespace, AppService{Name: "route-v2", Port: 8083}, "v2")
	require.NoError(t, err)
	client := c.HTTPClient(AppNamespace)
	t.Cleanup(client.CloseIdleConnections)
	// The mesh learns about route-v2 through its Service informer; a test
	// whose first check needs no route-v2 would otherwise race it.
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://route-v2:8083/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond, "the mesh routes to route-v2")
	return c, client
}

// path returns the rendered path of a frontend request, polling until it
// equals want (the mesh learns about API changes through informers).
func eventuallyPath(t *testing.T, client *http.Client, baggage, want string) {
	t.Helper()
	var last string
	require.Eventually(t, func() bool {
		_, hop, body := get(t, client, "http://frontend:8080/dispatch", baggage)
		last = hop.String() + " " + body
		return hop.String() == want
	}, 10*time.Second, 10*time.Millisecond, "want %s, last %s", want, last)
}

func TestMeshBaggageRouting(t *testing.T) {
	c, client := meshCluster(t)
	ctx := context.Background()
	vsAPI := c.Clients.Istio.NetworkingV1().VirtualServices(AppNamespace)
	const base = "frontend@baseline(route@baseline, driver@baseline)"
	const keyed = "frontend@baseline(route-v2@v2, driver@baseline)"

	eventuallyPath(t, client, "sbx-routing-key=k3x9", base) // no VirtualService yet

	vs, err := vsAPI.Create(ctx, newVS(AppNamespace, "route", []string{"route"},
		keyedRoute("sbx-k3x9-route", "route-v2"),
		&networking.HTTPRoute{Name: "default", Route: routeTo("route")}), metav1.CreateOptions{})
	require.NoError(t, err)
	eventuallyPath(t, client, "sbx-routing-key=k3x9", keyed)
	for _, b := range []string{"", "sbx-routing-key=k3x99", "other=k3x9", "sbx-routing-key=k3x"} {
		_, hop, body := get(t, client, "http://frontend:8080/dispatch", b)
		require.Equal(t, base, hop.String(), "baggage %q: %s", b, body)
	}
	for _, b := range []string{"a=1,sbx-routing-key=k3x9", "sbx-routing-key = k3x9 ;p=1, z=2"} {
		_, hop, body := get(t, client, "http://frontend:8080/dispatch", b)
		require.Equal(t, keyed, hop.String(), "baggage %q: %s", b, body)
	}

	// Routes are evaluated in order: a catch-all first hides the keyed route.
	vs.Spec.Http = append([]*networking.HTTPRoute{{Name: "all", Route: routeTo("route")}}, vs.Spec.Http...)
	vs, err = vsAPI.Update(ctx, vs, metav1.UpdateOptions{})
	require.NoError(t, err)
	eventuallyPath(t, client, "sbx-routing-key=k3x9", base)

	// A stale update is a conflict, as with a real API server.
	stale := vs.DeepCopy()
	vs.Spec.Http = vs.Spec.Http[1:]
	_, err = vsAPI.Update(ctx, vs, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = vsAPI.Update(ctx, stale, metav1.UpdateOptions{})
	require.ErrorContains(t, err, "the object has been modified")
	eventuallyPath(t, client, "sbx-routing-key=k3x9", keyed)

	require.NoError(t, vsAPI.Delete(ctx, "route", metav1.DeleteOptions{}))
	eventuallyPath(t, client, "sbx-routing-key=k3x9", base)

	// The same VirtualService written through the v1alpha3 API applies too.
	_, err = c.Clients.Istio.NetworkingV1alpha3().VirtualServices(AppNamespace).Create(ctx, &istiov1alpha3.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "route", Namespace: AppNamespace},
		Spec: networking.VirtualService{Hosts: []string{"route.hotrod.svc.cluster.local"}, Http: []*networking.HTTPRoute{
			keyedRoute("keyed", "route-v2.hotrod.svc.cluster.local"), {Route: routeTo("route")}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	eventuallyPath(t, client, "sbx-routing-key=k3x9", keyed)
}

func TestMeshRouteActions(t *testing.T) {
	c, client := meshCluster(t)
	ctx := context.Background()
	vsAPI := c.Clients.Istio.NetworkingV1().VirtualServices(AppNamespace)

	// A VirtualService without a default route: unmatched requests get 404.
	_, err := vsAPI.Create(ctx, newVS(AppNamespace, "route", []string{"route"},
		keyedRoute("keyed", "route-v2"),
		&networking.HTTPRoute{
			Name:  "teapot",
			Match: []*networking.HTTPMatchRequest{{Uri: prefix("/tea")}},
			DirectResponse: &networking.HTTPDirectResponse{Status: 418,
				Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_String_{String_: "short and stout"}}},
		},
		&networking.HTTPRoute{
			Name:    "rewrite",
			Match:   []*networking.HTTPMatchRequest{{Uri: prefix("/old/")}},
			Rewrite: &networking.HTTPRewrite{Uri: "/new/"},
			Headers: &networking.Headers{Response: &networking.Headers_HeaderOperations{Set: map[string]string{"x-rewritten": "yes"}}},
			Route:   routeTo("route-v2"),
		},
		&networking.HTTPRoute{
			Name:     "moved",
			Match:    []*networking.HTTPMatchRequest{{Uri: exact("/moved")}},
			Redirect: &networking.HTTPRedirect{Uri: "/here", RedirectCode: 302},
		},
		&networking.HTTPRoute{
			Name:  "nowhere",
			Match: []*networking.HTTPMatchRequest{{Uri: exact("/nowhere")}},
			Route: routeTo("no-such-service"),
		},
		&networking.HTTPRoute{
			Name:  "weighted",
			Match: []*networking.HTTPMatchRequest{{Uri: exact("/weighted")}},
			Route: []*networking.HTTPRouteDestination{
				{Destination: &networking.Destination{Host: "route"}, Weight: 0},
				{Destination: &networking.Destination{Host: "route-v2", Port: &networking.PortSelector{Number: 8083}}, Weight: 100},
			},
			Timeout: durationpb.New(5 * time.Second),
		},
	), metav1.CreateOptions{})
	require.NoError(t, err)

	do := func(path string) (*http.Response, string) {
		t.Helper()
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := client.Get("http://route:8083" + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	require.Eventually(t, func() bool {
		resp, _ := do("/tea")
		return resp.StatusCode == 418
	}, 10*time.Second, 10*time.Millisecond)

	resp, body := do("/tea/pot")
	require.Equal(t, 418, resp.StatusCode)
	require.Equal(t, "short and stout", body)

	resp, body = do("/route")
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "no route matches: %s", body)

	resp, body = do("/old/x")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "yes", resp.Header.Get("x-rewritten"))
	require.Contains(t, body, `"path":"/new/x"`)
	require.Contains(t, body, `"version":"v2"`)

	resp, _ = do("/moved")
	require.Equal(t, http.StatusFound, resp.StatusCode)
	require.Equal(t, "http://route:8083/here", resp.Header.Get("Location"))

	resp, body = do("/nowhere")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, body, "no healthy upstream")

	for range 10 {
		resp, body = do("/weighted")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		require.Contains(t, body, `"version":"v2"`)
	}

	// Istio's webhook rejects a regex that is not RE2.
	_, err = vsAPI.Create(ctx, newVS(AppNamespace, "bad", []string{"driver"}, &networking.HTTPRoute{
		Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"baggage": regex(`(?=lookahead)`)}}},
		Route: routeTo("driver"),
	}), metav1.CreateOptions{})
	require.ErrorContains(t, err, "validation.istio.io")
}

func TestMeshSourceMatchAndEndpoints(t *testing.T) {
	c, client := meshCluster(t)
	ctx := context.Background()
	// Only calls made by the frontend pod go to v2.
	_, err := c.Clients.Istio.NetworkingV1().VirtualServices(AppNamespace).Create(ctx, newVS(AppNamespace, "route", []string{"route"},
		&networking.HTTPRoute{
			Match: []*networking.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "frontend"}}},
			Route: routeTo("route-v2"),
		},
		&networking.HTTPRoute{Route: routeTo("route")},
	), metav1.CreateOptions{})
	require.NoError(t, err)
	eventuallyPath(t, client, "", "frontend@baseline(route-v2@v2, driver@baseline)")
	_, hop, body := get(t, client, "http://route:8083/", "")
	require.Equal(t, "route@baseline", hop.String(), body)

	// A Service whose pods are not ready has no endpoints.
	pods, err := c.Clients.Kube.CoreV1().Pods(AppNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=driver"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	p := pods.Items[0]
	for i := range p.Status.Conditions {
		p.Status.Conditions[i].Status = "False"
	}
	_, err = c.Clients.Kube.CoreV1().Pods(AppNamespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _, _ := get(t, client, "http://driver:8082/", "")
		return code == http.StatusServiceUnavailable
	}, 10*time.Second, 10*time.Millisecond)
	code, hop, body := get(t, client, "http://frontend:8080/", "")
	require.Equal(t, http.StatusBadGateway, code, body)
	require.Equal(t, 503, hop.Find("driver").Status)
	require.Equal(t, "no healthy upstream", hop.Find("driver").Error)

	// Deleting a Service removes its name from cluster DNS.
	require.NoError(t, c.Clients.Kube.CoreV1().Services(AppNamespace).Delete(ctx, "driver", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := client.Get("http://driver:8082/")
		return err != nil
	}, 10*time.Second, 10*time.Millisecond)
}
