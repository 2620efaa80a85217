package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sbx-dev/sbx/cluster/podstate"
	"github.com/sbx-dev/sbx/relay/relayargs"
)

// WaitOptions say which relay to wait for.
type WaitOptions struct {
	// Ref is the relay's sandbox: its Name, Namespace and RoutingKey. Its
	// TokenVerifier, when set, is the verifier the daemon applied: only a
	// pod whose relay checks Hellos against it will do. Pods of an earlier
	// token, still ready while a rotation rolls the relay, are passed over
	// rather than handed to a daemon that would be refused; a Deployment
	// that now carries another verifier fails the wait with a
	// *VerifierMismatchError.
	Ref
	// Interval is the longest pause between polls (default 1s). The first
	// polls come sooner, from Interval/8 doubling up to it: a relay pod is
	// often ready within half a second, and polling once a second made
	// every connect that starts a relay take ~1.1 s (sbx bench connect).
	Interval time.Duration
	// RelayImage is named in image errors when the pod does not say which
	// image its container runs.
	RelayImage string
}

// imageHint is what to do when the relay image cannot be pulled. sbx
// connect has no image flag: the user config is the one place to set it.
const imageHint = "set relayImage in the sbx config (~/.config/sbx/config.yaml) to an image the cluster can pull"

// fatalWaiting are container waiting reasons that do not fix themselves.
var fatalWaiting = map[string]string{
	"ImagePullBackOff":           imageHint,
	"ErrImagePull":               imageHint,
	"InvalidImageName":           imageHint,
	"ErrImageNeverPull":          imageHint,
	"CreateContainerConfigError": "the kubelet cannot create the relay container as configured (a relayImage that runs as root fails the pod's runAsNonRoot); fix the image or its config and run sbx connect again",
	"CrashLoopBackOff":           "the relay keeps exiting; see kubectl logs",
}

// WaitRelay waits until a ready relay pod of the sandbox (with the current
// routing key, not being deleted) exists and returns it. It reports
// progress while waiting and fails fast, naming the pod, the reason and
// what to do, when the pod cannot start (image pull errors, a crash loop,
// a container configuration the kubelet refuses). The caller bounds the wait with ctx; on expiry the
// error says what the pod was last waiting for.
func WaitRelay(ctx context.Context, c Clients, o WaitOptions, progress func(Event)) (*corev1.Pod, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	sel := labels.Set(relaySelector(o.Name))
	if o.RoutingKey != "" {
		sel[LabelRoutingKey] = o.RoutingKey
	}
	start := time.Now()
	last := ""
	pause := max(o.Interval/8, time.Millisecond)
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		pod, status, err := relayStatus(ctx, c, o, sel.String())
		if err != nil && (ctx.Err() != nil || deadlineWithin(ctx, o.Interval)) {
			// A call cut short by the deadline (client-go's rate
			// limiter refuses one that would end after it) says
			// nothing about the relay: what it last waited for does.
			return nil, waitEnded(ctx, c, o, sel.String(), time.Since(start), last)
		}
		if err != nil {
			return nil, err
		}
		if pod != nil {
			progress(Event{Action: ActionReady, Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name})
			return pod, nil
		}
		if status != last {
			progress(Event{Action: ActionWaiting, Kind: "Deployment", Namespace: o.Namespace, Name: RelayName(o.Name), Message: status})
			last = status
		}
		select {
		case <-ctx.Done():
			return nil, waitEnded(ctx, c, o, sel.String(), time.Since(start), last)
		case <-t.C:
		}
		pause = min(2*pause, o.Interval)
		t.Reset(pause)
	}
}

// deadlineWithin reports whether ctx ends within d.
func deadlineWithin(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < d
}

// waitEnded is WaitRelay's error when ctx ended: cancelled, it wraps
// ctx.Err(); at the deadline it is a *RelayTimeoutError.
func waitEnded(ctx context.Context, c Clients, o WaitOptions, sel string, waited time.Duration, last string) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("relay of sandbox %s in namespace %s not ready after %s: %s: %w",
			o.Name, o.Namespace, waited.Round(time.Second), last, ctx.Err())
	}
	e := &RelayTimeoutError{Namespace: o.Namespace, Sandbox: o.Name, Waited: waited, Last: last}
	if e.Last == "" {
		e.Last = "no relay pod seen"
	}
	// The deadline has passed: a short call of its own reads the
	// newest pod's warnings (a failing probe, scheduling, mounts).
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	pods, err := c.Kube.CoreV1().Pods(o.Namespace).List(ectx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return e
	}
	var newest *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && (newest == nil || newest.CreationTimestamp.Before(&p.CreationTimestamp)) {
			newest = p
		}
	}
	if newest == nil {
		return e
	}
	e.Pod = newest.Name
	evs, err := c.Kube.CoreV1().Events(o.Namespace).List(ectx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "Pod", "involvedObject.name": newest.Name}.String(),
	})
	if err != nil { // the Role may not allow it: the status says enough
		return e
	}
	items := evs.Items
	sort.SliceStable(items, func(a, b int) bool { return eventTime(&items[a]).Before(eventTime(&items[b])) })
	seen := map[string]bool{}
	for i := len(items) - 1; i >= 0 && len(e.Events) < 3; i-- {
		ev := &items[i]
		msg := ev.Reason + ": " + strings.TrimSpace(ev.Message)
		if ev.Type != corev1.EventTypeWarning || seen[msg] {
			continue
		}
		seen[msg] = true
		e.Events = append(e.Events, msg)
	}
	return e
}

// eventTime is when an event last happened, whichever field its source
// filled.
func eventTime(ev *corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}

// RelayTimeoutError: the relay pod was not ready by the deadline. The API
// server answered every call; the pod is what waits, and the error says
// for what (its status, and its latest warning events).
type RelayTimeoutError struct {
	Namespace, Sandbox string
	Waited             time.Duration
	// Last is what the relay was last waiting for; Pod the newest relay
	// pod ("" if none) and Events its latest warnings, newest first.
	Last   string
	Pod    string
	Events []string
}

func (e *RelayTimeoutError) Error() string {
	msg := fmt.Sprintf("relay of sandbox %s in namespace %s not ready after %s: %s", e.Sandbox, e.Namespace, e.Waited.Round(time.Second), e.Last)
	if len(e.Events) > 0 {
		msg += "; its latest warnings: " + strings.Join(e.Events, "; ")
	}
	if e.Pod != "" {
		return msg + fmt.Sprintf(" (the API server answers: the pod is what waits; see `kubectl describe pod -n %s %s`)", e.Namespace, e.Pod)
	}
	return msg + fmt.Sprintf(" (the API server answers: see `kubectl describe deployment -n %s %s` for why no pod starts)", e.Namespace, RelayName(e.Sandbox))
}

// relayStatus returns a ready pod, or a description of what the relay is
// waiting for, or an error when it cannot become ready by itself.
func relayStatus(ctx context.Context, c Clients, o WaitOptions, sel string) (*corev1.Pod, string, error) {
	pods, err := c.Kube.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, "", fmt.Errorf("list relay pods in %s: %w", o.Namespace, err)
	}
	items := pods.Items
	// Newest first: after a rollout the new pod is the one to use.
	sort.Slice(items, func(a, b int) bool {
		return items[b].CreationTimestamp.Before(&items[a].CreationTimestamp)
	})
	var waiting []string
	for i := range items {
		p := &items[i]
		if p.DeletionTimestamp != nil {
			// Never ready, and not worth a waiting message: it is going away.
			continue
		}
		if o.TokenVerifier != "" && relayVerifier(&p.Spec) != o.TokenVerifier {
			// Another token's relay: the one a rotation replaces, or
			// another daemon's (the Deployment check below tells).
			continue
		}
		if podstate.Ready(p) {
			return p, "", nil
		}
		msg, fatal := podWaiting(p, o.RelayImage)
		if fatal != nil {
			return nil, "", fatal
		}
		waiting = append(waiting, fmt.Sprintf("pod %s: %s", p.Name, msg))
	}
	if len(waiting) > 0 {
		return nil, strings.Join(waiting, "; "), nil
	}
	d, err := c.Kube.AppsV1().Deployments(o.Namespace).Get(ctx, RelayName(o.Name), metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("relay Deployment %s/%s: %w (run sbx connect again to recreate it)", o.Namespace, RelayName(o.Name), err)
	}
	if v := relayVerifier(&d.Spec.Template.Spec); o.TokenVerifier != "" && v != o.TokenVerifier {
		return nil, "", &VerifierMismatchError{Namespace: o.Namespace, Deployment: d.Name, Relay: v, Want: o.TokenVerifier}
	}
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentReplicaFailure && cond.Status == corev1.ConditionTrue {
			// Typically Pod Security admission or a quota refusing the pod.
			return nil, fmt.Sprintf("no relay pod: %s: %s", cond.Reason, cond.Message), nil
		}
	}
	return nil, "no relay pod yet", nil
}

// podWaiting describes why a pod is not ready, and returns an error when
// the reason will not go away by waiting.
func podWaiting(p *corev1.Pod, image string) (string, error) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("not scheduled: %s %s", c.Reason, c.Message), nil
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			if hint, ok := fatalWaiting[w.Reason]; ok {
				if hint == imageHint {
					// Name the image the pod really runs: the user config's
					// relayImage may differ from the caller's default.
					img := image
					for _, c := range p.Spec.Containers {
						if c.Name == cs.Name && c.Image != "" {
							img = c.Image
						}
					}
					if img != "" {
						hint = fmt.Sprintf("cannot pull %s: %s", img, hint)
					}
					// The kubelet retries a pull only every few minutes:
					// an image pushed meanwhile needs a new pod.
					hint += fmt.Sprintf("; if the image exists by now, `kubectl delete pod -n %s %s` makes the kubelet pull it again", p.Namespace, p.Name)
				}
				if w.Reason == "CrashLoopBackOff" {
					hint += fmt.Sprintf(" -n %s %s", p.Namespace, p.Name)
				}
				msg := w.Message
				if msg != "" {
					msg = " (" + msg + ")"
				}
				return "", &RelayError{Namespace: p.Namespace, Pod: p.Name, Reason: w.Reason, Message: w.Reason + msg + " — " + hint}
			}
			return "container " + cs.Name + " waiting: " + w.Reason, nil
		}
		if !cs.Ready {
			return "container " + cs.Name + " not ready (probe /readyz on port " + fmt.Sprint(relayargs.HealthPort) + ")", nil
		}
	}
	return "pod " + string(p.Status.Phase), nil
}

// RelayError says why a relay pod cannot become ready.
type RelayError struct {
	Namespace, Pod, Reason string
	Message                string
}

func (e *RelayError) Error() string {
	return fmt.Sprintf("relay pod %s/%s not ready: %s", e.Namespace, e.Pod, e.Message)
}
