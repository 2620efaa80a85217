package main

import (
	"testing"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/stretchr/testify/require"
)

// TestClassifyDaemonAnswers: the daemon's error answers reach the user
// intact, in the right category, and without a hint that could contradict
// the next step the daemon's message already names.
func TestClassifyDaemonAnswers(t *testing.T) {
	cases := []struct {
		name     string
		err      *api.APIError
		kind     errorKind
		hint     string // "" = none
		wantBody string
	}{
		{"cluster refused (502)", &api.APIError{StatusCode: 502, Kind: api.KindCluster, Message: "collect expired sandboxes: forbidden (your credentials may not list leases: check with `kubectl auth can-i list leases --all-namespaces`)"},
			kindConfig, "", "your credentials may not list leases"},
		{"daemon stopping (503)", &api.APIError{StatusCode: 503, Kind: api.KindStopping, Message: "the sbx daemon is stopping, so sandbox alice was not disconnected and its cluster objects may remain: run `sbx disconnect alice` again (it starts a new daemon), or let `sbx gc` collect them once the lease expired"},
			kindUser, "", "sbx: the sbx daemon is stopping, so sandbox alice was not disconnected and its cluster objects may remain: run `sbx disconnect alice` again (it starts a new daemon), or let `sbx gc` collect them once the lease expired"},
		{"cluster timeout (504)", &api.APIError{StatusCode: 504, Kind: api.KindClusterTimeout, Message: "context deadline exceeded"},
			kindConfig, "check --kubeconfig/--context and that the cluster is reachable (`kubectl get pods`)", "context deadline exceeded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := classify(tc.err, "some 4xx hint")
			var ce *cliError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.kind, ce.kind)
			require.Equal(t, tc.hint, ce.hint)
			out := formatError(err)
			require.Contains(t, out, tc.wantBody)
			require.NotContains(t, out, "looks like a bug")
		})
	}
}

// TestClassifyByKindNotStatus: the category comes from the kind the
// daemon gave the answer, not from its status code.
func TestClassifyByKindNotStatus(t *testing.T) {
	for _, tc := range []struct {
		err  *api.APIError
		kind errorKind
		hint string
	}{
		{&api.APIError{StatusCode: 409, Kind: api.KindUser, Message: "sandbox alice is connected by this daemon"}, kindUser, "some 4xx hint"},
		{&api.APIError{StatusCode: 502, Kind: api.KindUser, Message: "a user's mistake the daemon answered with 502"}, kindUser, "some 4xx hint"},
		{&api.APIError{StatusCode: 400, Kind: api.KindInternal, Message: "a daemon bug the daemon answered with 400"}, kindBug, ""},
		{&api.APIError{StatusCode: 500, Kind: api.KindInternal, Message: "boom"}, kindBug, ""},
	} {
		err := classify(tc.err, "some 4xx hint")
		var ce *cliError
		require.ErrorAs(t, err, &ce, tc.err.Message)
		require.Equal(t, tc.kind, ce.kind, tc.err.Message)
		require.Equal(t, tc.hint, ce.hint, tc.err.Message)
	}
}
