package podstate_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sbx-dev/sbx/cluster/podstate"
)

func TestReady(t *testing.T) {
	readyCond := func(s corev1.ConditionStatus) []corev1.PodCondition {
		return []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.ContainersReady, Status: s},
			{Type: corev1.PodReady, Status: s},
		}
	}
	deleting := metav1.Now()
	tests := []struct {
		name       string
		phase      corev1.PodPhase
		conditions []corev1.PodCondition
		deleting   bool
		want       bool
	}{
		{name: "ready", phase: corev1.PodRunning, conditions: readyCond(corev1.ConditionTrue), want: true},
		{name: "pending", phase: corev1.PodPending, conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse}}},
		{name: "no phase yet", conditions: nil},
		{name: "running not ready", phase: corev1.PodRunning, conditions: readyCond(corev1.ConditionFalse)},
		{name: "running ready unknown", phase: corev1.PodRunning, conditions: readyCond(corev1.ConditionUnknown)},
		{name: "running no conditions", phase: corev1.PodRunning},
		{name: "running only scheduled", phase: corev1.PodRunning, conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}},
		{name: "ready but deleting", phase: corev1.PodRunning, conditions: readyCond(corev1.ConditionTrue), deleting: true},
		{name: "succeeded with stale ready", phase: corev1.PodSucceeded, conditions: readyCond(corev1.ConditionTrue)},
		{name: "failed with stale ready", phase: corev1.PodFailed, conditions: readyCond(corev1.ConditionTrue)},
		{name: "unknown phase", phase: corev1.PodUnknown, conditions: readyCond(corev1.ConditionTrue)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Pod{Status: corev1.PodStatus{Phase: tt.phase, Conditions: tt.conditions}}
			if tt.deleting {
				p.DeletionTimestamp = &deleting
			}
			require.Equal(t, tt.want, podstate.Ready(p))
		})
	}
}
