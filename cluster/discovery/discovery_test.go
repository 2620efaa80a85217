package discovery_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/sbx-dev/sbx/cluster/discovery"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.1", Ports: ports},
	}
}

func port(name string, p int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: p, Protocol: corev1.ProtocolTCP}
}

// start runs a Watcher over client and returns its events; it waits until
// every namespace's watch is established, so live changes are not missed
// (the fake clientset has no resourceVersion to resume from).
func start(t *testing.T, client *fake.Clientset, opts discovery.Options) (*discovery.Watcher, <-chan discovery.Event) {
	t.Helper()
	var watches atomic.Int32
	client.PrependWatchReactor("services", func(action clienttesting.Action) (bool, watch.Interface, error) {
		gvr, ns := action.GetResource(), action.GetNamespace()
		w, err := client.Tracker().Watch(gvr, ns)
		if err != nil {
			return false, nil, err
		}
		watches.Add(1)
		return true, w, nil
	})
	events := make(chan discovery.Event, 100)
	opts.Client = client
	opts.OnEvent = func(ev discovery.Event) { events <- ev }
	w, err := discovery.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-w.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("service discovery did not sync")
	}
	require.Eventually(t, func() bool { return int(watches.Load()) == len(opts.Namespaces) }, 30*time.Second, 5*time.Millisecond)
	return w, events
}

func next(t *testing.T, events <-chan discovery.Event) discovery.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
		return discovery.Event{}
	}
}

func TestWatchReportsServices(t *testing.T) {
	grpc := "grpc"
	driver := service("hotrod", "driver", corev1.ServicePort{Name: "grpc", Port: 8082, AppProtocol: &grpc})
	sbxOwned := service("hotrod", "route-sbx-k3x", port("http", 8083))
	sbxOwned.Labels["app.kubernetes.io/managed-by"] = "sbx"
	client := fake.NewClientset(
		service("hotrod", "route", port("http", 8083)),
		driver,
		service("data", "redis", port("redis", 6379)),
		service("unwatched", "mysql", port("mysql", 3306)),
		sbxOwned,
	)
	w, events := start(t, client, discovery.Options{
		Namespaces: []string{"hotrod", "data"},
		Selector:   "app.kubernetes.io/managed-by!=sbx",
	})

	initial := map[string]discovery.Event{}
	for range 3 {
		ev := next(t, events)
		initial[ev.Service.Key()] = ev
	}
	require.Len(t, initial, 3)
	for _, ev := range initial {
		require.Equal(t, discovery.Added, ev.Type)
	}
	d := initial["hotrod/driver"].Service
	require.Equal(t, []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local"}, d.Hosts)
	require.Equal(t, []discovery.Port{{Name: "grpc", Port: 8082, Protocol: "TCP", AppProtocol: "grpc"}}, d.Ports)
	require.Equal(t, "ClusterIP", d.Type)

	keys := func() []string {
		var out []string
		for _, s := range w.Services() {
			out = append(out, s.Key())
		}
		return out
	}
	require.Equal(t, []string{"data/redis", "hotrod/driver", "hotrod/route"}, keys())

	ctx := context.Background()
	svcs := client.CoreV1().Services("hotrod")

	// Added live.
	_, err := svcs.Create(ctx, service("hotrod", "customer", port("http", 8081)), metav1.CreateOptions{})
	require.NoError(t, err)
	ev := next(t, events)
	require.Equal(t, discovery.Added, ev.Type)
	require.Equal(t, "hotrod/customer", ev.Service.Key())

	// A Service outside the selector is not reported.
	_, err = svcs.Create(ctx, sbxOwnedService("route-sbx-zzz"), metav1.CreateOptions{})
	require.NoError(t, err)

	// A port change is an update.
	cust, err := svcs.Get(ctx, "customer", metav1.GetOptions{})
	require.NoError(t, err)
	cust.Spec.Ports = append(cust.Spec.Ports, port("metrics", 9090))
	_, err = svcs.Update(ctx, cust, metav1.UpdateOptions{})
	require.NoError(t, err)
	ev = next(t, events)
	require.Equal(t, discovery.Updated, ev.Type)
	require.Len(t, ev.Service.Ports, 2)
	require.EqualValues(t, 9090, ev.Service.Ports[1].Port)

	// A change that leaves hosts and ports alone is not reported.
	cust.Annotations = map[string]string{"touched": "yes"}
	_, err = svcs.Update(ctx, cust, metav1.UpdateOptions{})
	require.NoError(t, err)

	// Deleted live.
	require.NoError(t, svcs.Delete(ctx, "customer", metav1.DeleteOptions{}))
	ev = next(t, events)
	require.Equal(t, discovery.Deleted, ev.Type)
	require.Equal(t, "hotrod/customer", ev.Service.Key())

	// Other namespaces are live too.
	_, err = client.CoreV1().Services("data").Create(ctx, service("data", "kafka", port("kafka", 9092)), metav1.CreateOptions{})
	require.NoError(t, err)
	ev = next(t, events)
	require.Equal(t, discovery.Added, ev.Type)
	require.Equal(t, "data/kafka", ev.Service.Key())

	select {
	case ev := <-events:
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
	require.Equal(t, []string{"data/kafka", "data/redis", "hotrod/driver", "hotrod/route"}, keys())
}

func sbxOwnedService(name string) *corev1.Service {
	s := service("hotrod", name, port("http", 8083))
	s.Labels["app.kubernetes.io/managed-by"] = "sbx"
	return s
}

func TestLookup(t *testing.T) {
	client := fake.NewClientset(
		service("hotrod", "route", port("http", 8083)),
		service("hotrod", "redis", port("redis", 6379)),
		service("data", "redis", port("redis", 6380)),
	)
	w, _ := start(t, client, discovery.Options{Namespaces: []string{"hotrod", "data"}, ClusterDomain: "corp.internal"})
	tests := []struct {
		host string
		want string // key, "" for no match
	}{
		{"route", "hotrod/route"},
		{"ROUTE", "hotrod/route"},
		{"route.hotrod", "hotrod/route"},
		{"route.hotrod.svc", "hotrod/route"},
		{"route.hotrod.svc.corp.internal", "hotrod/route"},
		{"route.hotrod.svc.corp.internal.", "hotrod/route"},
		{"route.hotrod.svc.cluster.local", ""}, // not this cluster's domain
		{"route.data", ""},
		{"redis", "hotrod/redis"}, // first namespace wins for short names
		{"redis.data", "data/redis"},
		{"redis.data.svc", "data/redis"},
		{"nope", ""},
		{"route.hotrod.svc.corp", ""},
		{"", ""},
	}
	for _, tt := range tests {
		s, ok := w.Lookup(tt.host)
		if tt.want == "" {
			require.False(t, ok, tt.host)
			continue
		}
		require.True(t, ok, tt.host)
		require.Equal(t, tt.want, s.Key(), tt.host)
	}
}

func TestServiceKinds(t *testing.T) {
	headless := service("hotrod", "db", port("pg", 5432))
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	external := service("hotrod", "payments", port("https", 443))
	external.Spec.Type = corev1.ServiceTypeExternalName
	external.Spec.ExternalName = "payments.example.com"
	external.Spec.ClusterIP = ""
	udp := service("hotrod", "dns", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	client := fake.NewClientset(headless, external, udp)
	w, _ := start(t, client, discovery.Options{Namespaces: []string{"hotrod"}})
	got := map[string]discovery.Service{}
	for _, s := range w.Services() {
		got[s.Name] = s
	}
	require.True(t, got["db"].Headless)
	require.Equal(t, "ExternalName", got["payments"].Type)
	require.Equal(t, "payments.example.com", got["payments"].ExternalName)
	require.Equal(t, "UDP", got["dns"].Ports[0].Protocol)
}

func TestOptionsErrors(t *testing.T) {
	client := fake.NewClientset()
	tests := []struct {
		name string
		opts discovery.Options
		want string
	}{
		{"no client", discovery.Options{Namespaces: []string{"a"}}, "Client"},
		{"no namespaces", discovery.Options{Client: client}, "no namespaces"},
		{"repeated namespace", discovery.Options{Client: client, Namespaces: []string{"a", "a"}}, "repeated"},
		{"bad selector", discovery.Options{Client: client, Namespaces: []string{"a"}, Selector: "a in ("}, "selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := discovery.New(tt.opts)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestRunStopsWhenContextEndsBeforeSync(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "services", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, context.DeadlineExceeded // never lists
	})
	w, err := discovery.New(discovery.Options{Client: client, Namespaces: []string{"hotrod"}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = w.Run(ctx)
	require.ErrorContains(t, err, "namespace hotrod")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
