package portforward_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/pftest"
)

func TestPodSelection(t *testing.T) {
	notReady := func(p *corev1.Pod) {
		p.Status.Conditions[0].Status = corev1.ConditionFalse
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name:  "relay",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "pull access denied"}},
		}}
	}
	pending := func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending; p.Status.Conditions = nil }
	terminating := func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
	otherSandbox := func(p *corev1.Pod) { p.Labels["sbx.dev/sandbox"] = "bob" }
	type pod struct {
		name   string
		age    time.Duration
		mutate []func(*corev1.Pod)
	}
	tests := []struct {
		name    string
		pods    []pod
		want    string // chosen pod
		wantErr error
		errText []string
	}{
		{name: "none", wantErr: portforward.ErrNoPod, errText: []string{`"sbx.dev/sandbox=alice"`, "namespace hotrod", "kubectl get pods"}},
		{name: "other sandbox only", pods: []pod{{"relay-bob", 0, []func(*corev1.Pod){otherSandbox}}}, wantErr: portforward.ErrNoPod},
		{name: "image pull", pods: []pod{{"relay-1", 0, []func(*corev1.Pod){notReady}}}, wantErr: portforward.ErrPodNotReady,
			errText: []string{"hotrod/relay-1 not ready", "ImagePullBackOff", "pull access denied"}},
		{name: "pending", pods: []pod{{"relay-1", 0, []func(*corev1.Pod){pending}}}, wantErr: portforward.ErrPodNotReady, errText: []string{"phase Pending"}},
		{name: "only terminating", pods: []pod{{"relay-1", 0, []func(*corev1.Pod){terminating}}}, wantErr: portforward.ErrPodNotReady, errText: []string{"terminating"}},
		{name: "single", pods: []pod{{"relay-1", 0, nil}}, want: "relay-1"},
		{name: "newest ready wins", pods: []pod{{"relay-old", time.Hour, nil}, {"relay-new", time.Minute, nil}}, want: "relay-new"},
		{name: "newest not ready is skipped", pods: []pod{{"relay-old", time.Hour, nil}, {"relay-new", 0, []func(*corev1.Pod){notReady}}}, want: "relay-old"},
		{name: "terminating skipped", pods: []pod{{"relay-old", time.Hour, nil}, {"relay-new", 0, []func(*corev1.Pod){terminating}}}, want: "relay-old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pftest.Options{})
			for _, p := range tt.pods {
				e.addPod(p.name, p.age, p.mutate...)
			}
			d := e.dialer(portforward.Config{})
			p, err := d.ReadyPod(ctx(t))
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				for _, s := range tt.errText {
					require.Contains(t, err.Error(), s)
				}
				_, err = d.Dial(ctx(t))
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, p.Name)
		})
	}
}
