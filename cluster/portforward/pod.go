package portforward

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster/podstate"
)

// ErrNoPod means no pod matches the Dialer's selector.
var ErrNoPod = errors.New("no pod matches the selector")

// ErrPodNotReady means pods match the selector but none is ready.
var ErrPodNotReady = errors.New("pod not ready")

// PodError explains why no pod could be chosen. errors.Is matches ErrNoPod or
// ErrPodNotReady.
type PodError struct {
	Namespace string
	Selector  string
	// Pod is the newest matching pod ("" when none matched) and Detail what
	// keeps it from being ready (phase, container waiting reasons).
	Pod    string
	Detail string
	kind   error
}

func (e *PodError) Error() string {
	if e.kind == ErrNoPod {
		return fmt.Sprintf("no pod matches %q in namespace %s (is the sandbox applied? check: kubectl get pods -n %s -l %s)",
			e.Selector, e.Namespace, e.Namespace, e.Selector)
	}
	return fmt.Sprintf("pod %s/%s not ready: %s (check: kubectl describe pod -n %s %s)",
		e.Namespace, e.Pod, e.Detail, e.Namespace, e.Pod)
}

// Is matches ErrNoPod or ErrPodNotReady.
func (e *PodError) Is(target error) bool { return target == e.kind }

// ReadyPod returns the newest ready, not terminating pod matching the
// Dialer's selector, or a *PodError.
func (d *Dialer) ReadyPod(ctx context.Context) (*corev1.Pod, error) {
	list, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: d.cfg.Selector})
	if err != nil {
		return nil, fmt.Errorf("list pods %q in namespace %s: %w", d.cfg.Selector, d.cfg.Namespace, err)
	}
	return pickPod(d.cfg.Namespace, d.cfg.Selector, list.Items)
}

func pickPod(namespace, selector string, pods []corev1.Pod) (*corev1.Pod, error) {
	if len(pods) == 0 {
		return nil, &PodError{Namespace: namespace, Selector: selector, kind: ErrNoPod}
	}
	sorted := make([]*corev1.Pod, len(pods))
	for i := range pods {
		sorted[i] = &pods[i]
	}
	// Newest first; the name breaks ties so the choice is stable.
	sort.Slice(sorted, func(i, j int) bool {
		ti, tj := sorted[i].CreationTimestamp, sorted[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return sorted[i].Name > sorted[j].Name
	})
	for _, p := range sorted {
		if podstate.Ready(p) {
			return p, nil
		}
	}
	newest := sorted[0]
	return nil, &PodError{Namespace: namespace, Selector: selector, Pod: newest.Name,
		Detail: notReadyDetail(newest), kind: ErrPodNotReady}
}

// notReadyDetail says what a user would look for in kubectl describe.
func notReadyDetail(p *corev1.Pod) string {
	var parts []string
	if p.DeletionTimestamp != nil {
		parts = append(parts, "terminating")
	}
	parts = append(parts, "phase "+string(p.Status.Phase))
	if p.Status.Phase == "" {
		parts[len(parts)-1] = "phase unknown (not scheduled yet?)"
	}
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			s := fmt.Sprintf("container %s waiting: %s", cs.Name, cs.State.Waiting.Reason)
			if m := cs.State.Waiting.Message; m != "" {
				s += " (" + m + ")"
			}
			parts = append(parts, s)
		case cs.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("container %s terminated: %s", cs.Name, cs.State.Terminated.Reason))
		case !cs.Ready:
			parts = append(parts, fmt.Sprintf("container %s not ready", cs.Name))
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue && c.Message != "" {
			parts = append(parts, "unschedulable: "+c.Message)
		}
	}
	return strings.Join(parts, "; ")
}
