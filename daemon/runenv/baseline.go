package runenv

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
)

// BaselineOptions select the baseline container whose environment a local
// process should get.
type BaselineOptions struct {
	Kube kubernetes.Interface
	// Dynamic reads Argo Rollouts; nil means Rollouts are not supported.
	Dynamic  dynamic.Interface
	Workload spec.Workload
	// Container names the container; empty means the pod's default
	// container (annotation kubectl.kubernetes.io/default-container), else
	// the first one.
	Container string
	// IncludeSecrets copies Secret values; without it they are left out
	// and listed in the notes.
	IncludeSecrets bool
}

// defaultContainerAnnotation is what kubectl exec/logs use to pick a
// container.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// localOnly are variables a container may set that would break the local
// process if copied (they describe the container's filesystem and user).
var localOnly = []string{"PATH", "HOME", "HOSTNAME", "PWD", "SHELL", "USER", "TMPDIR"}

// FromBaseline reads the baseline workload's pod template and returns its
// container's environment as Kubernetes would give it: envFrom sources in
// order (later ones win), then env entries (which win over envFrom), with
// $(VAR) references expanded. ConfigMap values are resolved; Secret
// values only with IncludeSecrets; fieldRef and resourceFieldRef values
// exist only in a running pod and are skipped (except metadata.namespace,
// which is known). Everything left out is explained in Env.Notes.
func FromBaseline(ctx context.Context, o BaselineOptions) (*Env, error) {
	w := o.Workload
	tmpl, err := podTemplate(ctx, o.Kube, o.Dynamic, w)
	if err != nil {
		return nil, err
	}
	c, err := pickContainer(tmpl, o.Container, w)
	if err != nil {
		return nil, err
	}
	r := &resolver{ctx: ctx, kube: o.Kube, ns: w.Namespace, secrets: o.IncludeSecrets,
		cms: map[string]*corev1.ConfigMap{}, secs: map[string]*corev1.Secret{}, env: &Env{}}
	where := fmt.Sprintf("%s %s/%s container %s", w.Kind, w.Namespace, w.Name, c.Name)

	for _, src := range c.EnvFrom {
		r.envFrom(src, where)
	}
	for _, ev := range c.Env {
		r.envVar(ev, where)
	}
	return r.env, nil
}

func podTemplate(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface, w spec.Workload) (*corev1.PodTemplateSpec, error) {
	switch w.Kind {
	case spec.KindDeployment:
		d, err := kube.AppsV1().Deployments(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return nil, readError(w, err)
		}
		return &d.Spec.Template, nil
	case spec.KindStatefulSet:
		s, err := kube.AppsV1().StatefulSets(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return nil, readError(w, err)
		}
		return &s.Spec.Template, nil
	case spec.KindRollout:
		if dyn == nil {
			return nil, fmt.Errorf("Rollout %s/%s: reading Argo Rollouts needs a dynamic client", w.Namespace, w.Name)
		}
		u, err := dyn.Resource(cluster.RolloutGVR).Namespace(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return nil, readError(w, err)
		}
		specMap, _ := u.Object["spec"].(map[string]any)
		if raw, ok := specMap["template"].(map[string]any); ok {
			var t corev1.PodTemplateSpec
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &t); err != nil {
				return nil, fmt.Errorf("Rollout %s/%s: reading its pod template: %w", w.Namespace, w.Name, err)
			}
			if len(t.Spec.Containers) > 0 {
				return &t, nil
			}
		}
		if ref, ok := specMap["workloadRef"].(map[string]any); ok {
			kind, _ := ref["kind"].(string)
			name, _ := ref["name"].(string)
			if kind == spec.KindDeployment && name != "" {
				return podTemplate(ctx, kube, dyn, spec.Workload{Kind: kind, Namespace: w.Namespace, Name: name})
			}
			return nil, fmt.Errorf("Rollout %s/%s: workloadRef to %s %q is not supported; only Deployments", w.Namespace, w.Name, kind, name)
		}
		return nil, fmt.Errorf("Rollout %s/%s has no pod template", w.Namespace, w.Name)
	}
	return nil, fmt.Errorf("%s %s/%s: unsupported kind; use Deployment, StatefulSet or Rollout", w.Kind, w.Namespace, w.Name)
}

// NotFoundError is FromBaseline's error when the baseline workload does
// not exist. Which fix to suggest depends on how the caller chose it (a
// spec's local[].from, a flag), so the message names only the workload.
type NotFoundError struct{ Workload spec.Workload }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("baseline %s %s/%s not found", e.Workload.Kind, e.Workload.Namespace, e.Workload.Name)
}

// ContainerError is FromBaseline's error when the pod template has no
// container of the name asked for.
type ContainerError struct {
	Workload   spec.Workload
	Name       string
	Containers []string
}

func (e *ContainerError) Error() string {
	return fmt.Sprintf("%s %s/%s has no container %q; its containers are %s",
		e.Workload.Kind, e.Workload.Namespace, e.Workload.Name, e.Name, strings.Join(e.Containers, ", "))
}

func readError(w spec.Workload, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return &NotFoundError{Workload: w}
	case apierrors.IsForbidden(err):
		return fmt.Errorf("reading baseline %s %s/%s: %w (your kube credentials may not read workloads there)", w.Kind, w.Namespace, w.Name, err)
	}
	return fmt.Errorf("reading baseline %s %s/%s: %w", w.Kind, w.Namespace, w.Name, err)
}

func pickContainer(t *corev1.PodTemplateSpec, name string, w spec.Workload) (*corev1.Container, error) {
	names := make([]string, len(t.Spec.Containers))
	for i, c := range t.Spec.Containers {
		names[i] = c.Name
	}
	if name == "" {
		name = t.Annotations[defaultContainerAnnotation]
	}
	if name == "" {
		if len(t.Spec.Containers) == 0 {
			return nil, fmt.Errorf("%s %s/%s has no containers", w.Kind, w.Namespace, w.Name)
		}
		return &t.Spec.Containers[0], nil
	}
	i := slices.Index(names, name)
	if i < 0 {
		return nil, &ContainerError{Workload: w, Name: name, Containers: names}
	}
	return &t.Spec.Containers[i], nil
}

type resolver struct {
	ctx     context.Context
	kube    kubernetes.Interface
	ns      string
	secrets bool
	cms     map[string]*corev1.ConfigMap // nil value: missing
	secs    map[string]*corev1.Secret
	env     *Env
}

func (r *resolver) set(name, value, where string) {
	if slices.Contains(localOnly, name) {
		r.env.Note(fmt.Sprintf("%s: set by %s but not copied (it describes the container, not this machine)", name, where))
		return
	}
	r.env.Set(name, value, SourceBaseline)
}

// remove drops a variable an earlier source set, for an env entry that
// cannot be resolved here (leaving the envFrom value would be wrong).
func (r *resolver) remove(name string) {
	r.env.Vars = slices.DeleteFunc(r.env.Vars, func(v Var) bool { return v.Name == name })
}

func (r *resolver) configMap(name string) (*corev1.ConfigMap, error) {
	if cm, ok := r.cms[name]; ok {
		return cm, nil
	}
	cm, err := r.kube.CoreV1().ConfigMaps(r.ns).Get(r.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		r.cms[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r.cms[name] = cm
	return cm, nil
}

func (r *resolver) secret(name string) (*corev1.Secret, error) {
	if s, ok := r.secs[name]; ok {
		return s, nil
	}
	s, err := r.kube.CoreV1().Secrets(r.ns).Get(r.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		r.secs[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r.secs[name] = s
	return s, nil
}

func (r *resolver) envFrom(src corev1.EnvFromSource, where string) {
	switch {
	case src.ConfigMapRef != nil:
		ref := src.ConfigMapRef
		cm, err := r.configMap(ref.Name)
		if err != nil {
			r.env.Note(fmt.Sprintf("envFrom ConfigMap %s/%s: %v; its variables are missing", r.ns, ref.Name, err))
			return
		}
		if cm == nil {
			if ref.Optional == nil || !*ref.Optional {
				r.env.Note(fmt.Sprintf("envFrom ConfigMap %s/%s does not exist (the pod could not start either)", r.ns, ref.Name))
			}
			return
		}
		for _, k := range sortedKeys(cm.Data) {
			r.setFrom(src.Prefix+k, cm.Data[k], where)
		}
	case src.SecretRef != nil:
		ref := src.SecretRef
		if !r.secrets {
			r.env.Note(fmt.Sprintf("envFrom Secret %s/%s: values left out (pass --include-secrets to copy them)", r.ns, ref.Name))
			return
		}
		s, err := r.secret(ref.Name)
		if err != nil {
			r.env.Note(fmt.Sprintf("envFrom Secret %s/%s: %v; its variables are missing", r.ns, ref.Name, err))
			return
		}
		if s == nil {
			if ref.Optional == nil || !*ref.Optional {
				r.env.Note(fmt.Sprintf("envFrom Secret %s/%s does not exist (the pod could not start either)", r.ns, ref.Name))
			}
			return
		}
		keys := make([]string, 0, len(s.Data))
		for k := range s.Data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			r.setFrom(src.Prefix+k, string(s.Data[k]), where)
		}
	}
}

// setFrom sets an envFrom variable; Kubernetes skips keys that are not
// valid variable names, and so does this.
func (r *resolver) setFrom(name, value, where string) {
	if !envName(name) {
		r.env.Note(fmt.Sprintf("%s: skipped, not a valid environment variable name (Kubernetes skips it too)", name))
		return
	}
	r.set(name, value, where)
}

func (r *resolver) envVar(ev corev1.EnvVar, where string) {
	if ev.ValueFrom == nil {
		r.set(ev.Name, expand(ev.Value, r.lookup), where)
		return
	}
	vf := ev.ValueFrom
	switch {
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := r.configMap(ref.Name)
		if err != nil {
			r.remove(ev.Name)
			r.env.Note(fmt.Sprintf("%s: ConfigMap %s/%s: %v; left out", ev.Name, r.ns, ref.Name, err))
			return
		}
		v, ok := "", false
		if cm != nil {
			v, ok = cm.Data[ref.Key]
			if !ok {
				if b, found := cm.BinaryData[ref.Key]; found {
					v, ok = string(b), true
				}
			}
		}
		if !ok {
			r.remove(ev.Name)
			if ref.Optional == nil || !*ref.Optional {
				r.env.Note(fmt.Sprintf("%s: ConfigMap %s/%s has no key %q; left out", ev.Name, r.ns, ref.Name, ref.Key))
			}
			return
		}
		r.set(ev.Name, v, where)
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		if !r.secrets {
			r.remove(ev.Name)
			r.env.Note(fmt.Sprintf("%s: from Secret %s/%s key %q, left out (pass --include-secrets to copy it)", ev.Name, r.ns, ref.Name, ref.Key))
			return
		}
		s, err := r.secret(ref.Name)
		if err != nil {
			r.remove(ev.Name)
			r.env.Note(fmt.Sprintf("%s: Secret %s/%s: %v; left out", ev.Name, r.ns, ref.Name, err))
			return
		}
		var b []byte
		ok := false
		if s != nil {
			b, ok = s.Data[ref.Key]
		}
		if !ok {
			r.remove(ev.Name)
			if ref.Optional == nil || !*ref.Optional {
				r.env.Note(fmt.Sprintf("%s: Secret %s/%s has no key %q; left out", ev.Name, r.ns, ref.Name, ref.Key))
			}
			return
		}
		r.set(ev.Name, string(b), where)
	case vf.FieldRef != nil:
		if vf.FieldRef.FieldPath == "metadata.namespace" {
			r.set(ev.Name, r.ns, where)
			return
		}
		r.remove(ev.Name)
		r.env.Note(fmt.Sprintf("%s: skipped, fieldRef %s exists only in a running pod", ev.Name, vf.FieldRef.FieldPath))
	case vf.ResourceFieldRef != nil:
		r.remove(ev.Name)
		r.env.Note(fmt.Sprintf("%s: skipped, resourceFieldRef %s exists only in a running pod", ev.Name, vf.ResourceFieldRef.Resource))
	default:
		r.remove(ev.Name)
		r.env.Note(fmt.Sprintf("%s: skipped, unsupported valueFrom", ev.Name))
	}
}

func (r *resolver) lookup(name string) (string, bool) { return r.env.Get(name) }

// expand does Kubernetes' $(VAR) expansion: $(NAME) becomes the value of
// a variable defined earlier, an undefined reference stays as written, and
// $$ is a literal $.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envName is Kubernetes' rule for envFrom keys: printable ASCII without
// '=', not starting with a digit.
func envName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == '=' {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
