package cluster

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// sandboxService is the Service for one local workload. It lives in the
// relay's namespace (a Service selects pods of its own namespace only) and
// exposes each mapped port under the baseline's number, name and
// appProtocol, so the mesh treats it exactly like the baseline; each port
// targets the relay container port that serves it.
func sandboxService(sandbox, namespace, key string, w ResolvedWorkload) *corev1.Service {
	meta := objectMeta(ServiceName(w.Local.Name, key), namespace, sandbox, key)
	meta.Labels[LabelComponent] = "workload"
	meta.Annotations = map[string]string{"sbx.dev/workload": w.Local.From.Kind + "/" + w.Local.From.Namespace + "/" + w.Local.From.Name}
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP,
			Selector: map[string]string{
				LabelSandbox:    sandbox,
				LabelRoutingKey: key,
				LabelComponent:  "relay",
			},
		},
	}
	used := map[string]bool{}
	for _, p := range w.Ports {
		// A multi-port Service needs unique port names; two baseline
		// Services may both say "http" or nothing. A suffix keeps the
		// protocol prefix Istio reads.
		name := p.Name
		if len(w.Ports) > 1 && (name == "" || used[name]) {
			if name == "" {
				name = "p"
			}
			name += "-" + strconv.Itoa(int(p.Port))
		}
		used[name] = true
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name:        name,
			Protocol:    corev1.ProtocolTCP,
			AppProtocol: p.AppProtocol,
			Port:        p.Port,
			TargetPort:  intstr.FromInt32(p.RelayPort),
		})
	}
	return svc
}
