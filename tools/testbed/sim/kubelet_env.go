package sim

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// resolveEnv builds the container environment as the kubelet does.
func (p *relayPod) resolveEnv(ct corev1.Container) (map[string]string, error) {
	ctx := context.Background()
	env := map[string]string{}
	core := p.c.clients.Kube.CoreV1()
	for _, from := range ct.EnvFrom {
		switch {
		case from.SecretRef != nil:
			s, err := core.Secrets(p.ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional(from.SecretRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			for k, v := range secretData(s) {
				env[from.Prefix+k] = v
			}
		case from.ConfigMapRef != nil:
			cm, err := core.ConfigMaps(p.ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional(from.ConfigMapRef.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range ct.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			s, err := core.Secrets(p.ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if optional(ref.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			v, ok := secretData(s)[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, p.ns, ref.Name)
			}
			env[e.Name] = v
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm, err := core.ConfigMaps(p.ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if optional(ref.Optional) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, p.ns, ref.Name)
			}
			env[e.Name] = v
		case vf.FieldRef != nil:
			switch vf.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = p.name
			case "metadata.namespace":
				env[e.Name] = p.ns
			case "status.podIP":
				env[e.Name] = p.ip.String()
			case "spec.nodeName":
				env[e.Name] = "sim-node"
			default:
				return nil, fmt.Errorf("env %s: fieldRef %q is not simulated", e.Name, vf.FieldRef.FieldPath)
			}
		default:
			return nil, fmt.Errorf("env %s: valueFrom source is not simulated", e.Name)
		}
	}
	return env, nil
}

func optional(b *bool) bool { return b != nil && *b }

// secretData returns a Secret's decoded values; stringData is included for
// objects written straight into a fake without the API server's merge.
func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}
