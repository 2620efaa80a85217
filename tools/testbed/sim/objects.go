package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"time"

	dynamicfake "k8s.io/client-go/dynamic/fake"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istiov1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	istiov1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
)

// AppNamespace is the namespace of the sample app.
const AppNamespace = "hotrod"

// BaselineVersion is the version every baseline service reports.
const BaselineVersion = "baseline"

// AppService describes one service of the sample app ("HotROD" style):
// frontend calls route and driver by their cluster names.
type AppService struct {
	Name  string
	Port  int32
	Calls []string
}

// BaselineApp is the sample app the simulated cluster runs.
func BaselineApp() []AppService {
	return []AppService{
		{Name: "frontend", Port: 8080, Calls: []string{"http://route:8083/route", "http://driver:8082/driver"}},
		{Name: "driver", Port: 8082},
		{Name: "route", Port: 8083},
	}
}

// Clients are the simulated API: client-go's and Istio's fake clientsets
// behind one simulated API server (uids, resource versions, optimistic
// concurrency, ClusterIPs, Istio's VirtualService validation).
type Clients struct {
	Kube  *kubefake.Clientset
	Istio *istiofake.Clientset
	// Dynamic serves Gateway API routes (Options.GatewayAPI); nil when
	// the cluster has no Gateway API CRDs.
	Dynamic *dynamicfake.FakeDynamicClient
}

// NewDynamic is a dynamic client that serves HTTPRoutes and GRPCRoutes.
func NewDynamic() *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		HTTPRouteGVR: "HTTPRouteList", GRPCRouteGVR: "GRPCRouteList",
	})
}

// NewClients returns empty fake clientsets wired to network (Services get a
// ClusterIP from it). now may be nil (time.Now).
func NewClients(network *Network, now func() time.Time) *Clients {
	api := newAPIServer(now)
	api.onCreat["services"] = func(obj runtime.Object) error {
		svc, ok := obj.(*corev1.Service)
		if !ok || svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.Type == corev1.ServiceTypeExternalName {
			return nil
		}
		ip, err := network.AllocateServiceIP(svc.Namespace, svc.Name)
		if err != nil {
			return err
		}
		svc.Spec.ClusterIP = ip.String()
		svc.Spec.ClusterIPs = []string{ip.String()}
		if svc.Spec.Type == "" {
			svc.Spec.Type = corev1.ServiceTypeClusterIP
		}
		for i := range svc.Spec.Ports {
			if svc.Spec.Ports[i].Protocol == "" {
				svc.Spec.Ports[i].Protocol = corev1.ProtocolTCP
			}
			if svc.Spec.Ports[i].TargetPort == (intstr.IntOrString{}) {
				svc.Spec.Ports[i].TargetPort = intstr.FromInt32(svc.Spec.Ports[i].Port)
			}
		}
		return nil
	}
	kube := kubefake.NewClientset()
	api.install(&kube.Fake, kube.Tracker())
	ist := istiofake.NewSimpleClientset()
	api.install(&ist.Fake, ist.Tracker())
	ist.PrependReactor("*", "virtualservices", validateVSReactor)
	// Let watches honour their ListOptions (resourceVersion) as the
	// Kubernetes fake does, so an informer's list and watch leave no gap.
	ist.PrependWatchReactor("*", func(action clienttesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if wa, ok := action.(clienttesting.WatchActionImpl); ok {
			opts = wa.ListOptions
		}
		w, err := ist.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		return true, w, err
	})
	return &Clients{Kube: kube, Istio: ist}
}

// validateVSReactor plays Istio's validating webhook for VirtualServices.
func validateVSReactor(action clienttesting.Action) (bool, runtime.Object, error) {
	var obj runtime.Object
	switch a := action.(type) {
	case clienttesting.CreateActionImpl:
		obj = a.GetObject()
	case clienttesting.UpdateActionImpl:
		obj = a.GetObject()
	default:
		return false, nil, nil
	}
	var err error
	switch vs := obj.(type) {
	case *istiov1.VirtualService:
		err = validateVirtualService(&vs.Spec)
	case *istiov1beta1.VirtualService:
		err = validateVirtualService(&vs.Spec)
	case *istiov1alpha3.VirtualService:
		err = validateVirtualService(&vs.Spec)
	}
	if err != nil {
		return true, nil, apierrors.NewBadRequest(
			`admission webhook "validation.istio.io" denied the request: configuration is invalid: ` + err.Error())
	}
	return false, nil, nil
}

// appLabels are the labels of one sample app service's pods.
func appLabels(name, version string) map[string]string {
	return map[string]string{"app": name, "app.kubernetes.io/name": name, "version": version}
}

// templateHash is a stable short hash of a pod template, as the Deployment
// controller uses in ReplicaSet and pod names.
func templateHash(t *corev1.PodTemplateSpec) string {
	h := fnv.New64a()
	b, _ := json.Marshal(t)
	_, _ = h.Write(b)
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	v := h.Sum64()
	out := make([]byte, 10)
	for i := range out {
		out[i] = alphabet[v%uint64(len(alphabet))]
		v /= uint64(len(alphabet))
	}
	return string(out)
}

// appObjects returns the Deployment and Service of one sample app service.
func appObjects(ns string, s AppService, version string) (*appsv1.Deployment, *corev1.Service) {
	one := int32(1)
	http := "http"
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: ns, Labels: appLabels(s.Name, version)},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": s.Name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: appLabels(s.Name, version)},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  s.Name,
					Image: "ghcr.io/sbx-dev/hotrod-" + s.Name + ":" + version,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: s.Port, Protocol: corev1.ProtocolTCP}},
				}}},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: ns, Labels: map[string]string{"app": s.Name}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": s.Name},
			Ports: []corev1.ServicePort{{
				Name: "http", Port: s.Port, TargetPort: intstr.FromString("http"),
				Protocol: corev1.ProtocolTCP, AppProtocol: &http,
			}},
		},
	}
	return dep, svc
}

// podName names a new pod of dep as the Deployment controller does.
func podName(dep *appsv1.Deployment) string {
	return dep.Name + "-" + templateHash(&dep.Spec.Template) + "-" + randSuffix(5)
}

// runningPod returns the Pod object of a running, ready pod of dep.
func runningPod(dep *appsv1.Deployment, name, podIP string, now time.Time) *corev1.Pod {
	hash := templateHash(&dep.Spec.Template)
	lbl := map[string]string{"pod-template-hash": hash}
	for k, v := range dep.Spec.Template.Labels {
		lbl[k] = v
	}
	yes := true
	start := metav1.NewTime(now.Truncate(time.Second))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: dep.Namespace, Labels: lbl,
			Annotations: dep.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID,
				Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: *dep.Spec.Template.Spec.DeepCopy(),
		Status: corev1.PodStatus{
			Phase:     corev1.PodRunning,
			PodIP:     podIP,
			PodIPs:    []corev1.PodIP{{IP: podIP}},
			HostIP:    "10.0.0.10",
			StartTime: &start,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: start},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: start},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: start},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: start},
			},
		},
	}
	pod.Spec.NodeName = "sim-node"
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: &yes,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}},
		})
	}
	return pod
}

// setDeploymentAvailable records in dep's status that its one replica is
// up to date, ready and available.
func setDeploymentAvailable(ctx context.Context, c *Clients, dep *appsv1.Deployment, ready bool, now time.Time) error {
	d := dep.DeepCopy()
	var n int32
	status := corev1.ConditionFalse
	reason := "MinimumReplicasUnavailable"
	if ready {
		n, status, reason = 1, corev1.ConditionTrue, "MinimumReplicasAvailable"
	}
	t := metav1.NewTime(now)
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		Replicas:           1,
		UpdatedReplicas:    1,
		ReadyReplicas:      n,
		AvailableReplicas:  n,
		UnavailableReplicas: func() int32 {
			if ready {
				return 0
			}
			return 1
		}(),
		Conditions: []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentAvailable, Status: status, Reason: reason,
			LastUpdateTime: t, LastTransitionTime: t,
		}},
	}
	_, err := c.Kube.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	return err
}

// BaselineVirtualService is the VirtualService a CD system owns for route
// in the baseline: a default route with a timeout and retries. sbx must
// insert its routes into it and later leave it exactly as it was.
func BaselineVirtualService() *istiov1.VirtualService {
	return &istiov1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{
			Name: "route", Namespace: AppNamespace,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "argocd"},
			Annotations: map[string]string{"argocd.argoproj.io/tracking-id": "hotrod:networking.istio.io/VirtualService:hotrod/route"},
		},
		Spec: networking.VirtualService{
			Hosts: []string{"route"},
			Http: []*networking.HTTPRoute{{
				Name:    "default",
				Route:   []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "route", Port: &networking.PortSelector{Number: 8083}}}},
				Timeout: durationpb.New(5 * time.Second),
				Retries: &networking.HTTPRetry{Attempts: 2, PerTryTimeout: durationpb.New(2 * time.Second)},
			}},
		},
	}
}

// BaselineHTTPRoute is CD's route for route where CD routes with Gateway
// API: every request to port 8083 to route, with BaselineVirtualService's
// timeout (retries are an experimental field the standard CRDs prune).
func BaselineHTTPRoute() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "route", "namespace": AppNamespace,
			"labels": map[string]any{"app.kubernetes.io/managed-by": "argocd"}},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "route", "port": int64(8083)}},
			"rules": []any{map[string]any{
				"name":        "default",
				"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}},
				"timeouts":    map[string]any{"request": "5s"},
				"backendRefs": []any{map[string]any{"name": "route", "port": int64(8083)}},
			}},
		},
	}}
}

// createMeshConfig writes Istio's mesh config, ConfigMap istio-system/istio,
// where sbx reads defaultVirtualServiceExportTo.
func createMeshConfig(ctx context.Context, c *Clients, exportTo []string) error {
	mesh := "accessLogFile: /dev/stdout\n"
	if exportTo != nil {
		b, err := json.Marshal(exportTo)
		if err != nil {
			return err
		}
		mesh += "defaultVirtualServiceExportTo: " + string(b) + "\n"
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"},
		Data:       map[string]string{"mesh": mesh},
	}
	if _, err := c.Kube.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Istio's mesh config: %w", err)
	}
	return nil
}
