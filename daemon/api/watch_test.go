package api

import (
	"reflect"
	"testing"
)

func TestStatusApply(t *testing.T) {
	msg := "bad config"
	var st Status
	for _, ev := range []Event{
		{Snapshot: &Status{Version: "v1", Sandboxes: []SandboxStatus{{Name: "a"}, {Name: "b"}}}},
		{Sandbox: &SandboxStatus{Name: "b", Phase: PhaseReady}},
		{Sandbox: &SandboxStatus{Name: "c"}},
		{Removed: "a"},
		{Config: &msg},
		{Outbound: &OutboundStatus{Mode: "proxy"}},
	} {
		st.Apply(ev)
	}
	want := Status{Version: "v1", ConfigError: msg, Outbound: &OutboundStatus{Mode: "proxy"},
		Sandboxes: []SandboxStatus{{Name: "b", Phase: PhaseReady}, {Name: "c"}}}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got %+v, want %+v", st, want)
	}
}
