package cluster

import (
	"context"
	"fmt"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sbx-dev/sbx/cluster/spec"
)

// Clients are the API clients sbx uses. Tests pass the fake clientsets.
type Clients struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
	// Dynamic reads Argo Rollouts; nil means Rollouts are not supported.
	Dynamic dynamic.Interface
}

// NewClients builds every client sbx needs from one REST config (from the
// kubeconfig), so callers do not forget the dynamic client that reads Argo
// Rollouts.
func NewClients(cfg *rest.Config) (Clients, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	is, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("istio client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("dynamic client: %w", err)
	}
	return Clients{Kube: kube, Istio: is, Dynamic: dyn}, nil
}

// RolloutGVR is the Argo Rollouts resource.
var RolloutGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// LiveBaseline reads the baseline from the cluster.
type LiveBaseline struct{ C Clients }

// PodLabels implements Baseline.
func (l LiveBaseline) PodLabels(ctx context.Context, w spec.Workload) (map[string]string, error) {
	switch w.Kind {
	case spec.KindDeployment:
		d, err := l.C.Kube.AppsV1().Deployments(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return nil, objectNotFound(w.Kind, w.Namespace, w.Name, err)
		}
		return d.Spec.Template.Labels, nil
	case spec.KindStatefulSet:
		s, err := l.C.Kube.AppsV1().StatefulSets(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return nil, objectNotFound(w.Kind, w.Namespace, w.Name, err)
		}
		return s.Spec.Template.Labels, nil
	case spec.KindRollout:
		if l.C.Dynamic == nil {
			return nil, fmt.Errorf("Rollout %s/%s: reading Argo Rollouts needs Clients.Dynamic (build the clients with cluster.NewClients)", w.Namespace, w.Name)
		}
		u, err := l.C.Dynamic.Resource(RolloutGVR).Namespace(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return nil, objectNotFound(w.Kind, w.Namespace, w.Name, err)
		}
		return rolloutPodLabels(ctx, u.Object, w, func(name string) (map[string]string, error) {
			return l.PodLabels(ctx, spec.Workload{Kind: spec.KindDeployment, Namespace: w.Namespace, Name: name})
		})
	}
	return nil, fmt.Errorf("%s %s/%s: unsupported kind; use Deployment, StatefulSet or Rollout", w.Kind, w.Namespace, w.Name)
}

// rolloutPodLabels reads spec.template.metadata.labels of an Argo Rollout,
// following spec.workloadRef to a Deployment when the Rollout has no
// template of its own.
func rolloutPodLabels(_ context.Context, obj map[string]any, w spec.Workload, deployment func(string) (map[string]string, error)) (map[string]string, error) {
	specMap, _ := obj["spec"].(map[string]any)
	if tmpl, ok := specMap["template"].(map[string]any); ok {
		md, _ := tmpl["metadata"].(map[string]any)
		raw, _ := md["labels"].(map[string]any)
		out := map[string]string{}
		for k, v := range raw {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("Rollout %s/%s: pod template label %q is not a string", w.Namespace, w.Name, k)
			}
			out[k] = s
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	if ref, ok := specMap["workloadRef"].(map[string]any); ok {
		kind, _ := ref["kind"].(string)
		name, _ := ref["name"].(string)
		if kind == spec.KindDeployment && name != "" {
			return deployment(name)
		}
		return nil, fmt.Errorf("Rollout %s/%s: workloadRef to %s %q is not supported; only Deployments", w.Namespace, w.Name, kind, name)
	}
	return nil, fmt.Errorf("Rollout %s/%s has no pod template labels", w.Namespace, w.Name)
}

// Services implements Baseline.
func (l LiveBaseline) Services(ctx context.Context, namespace string) ([]*corev1.Service, error) {
	list, err := l.C.Kube.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Service, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}
