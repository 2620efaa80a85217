package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/client"
	"github.com/sbx-dev/sbx/tools/testbed/sim"
)

func TestConnectRotateTokenFlag(t *testing.T) {
	code, out, errOut := runCLI(t, "connect", "--help")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "--rotate-token")
	require.Contains(t, out, "mint a new tunnel token")
	require.Contains(t, out, "sbx connect alice --rotate-token")
	require.Contains(t, out, "only the token's SHA-256")

	cliEnv(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"connect", "alice"}, "add --rotate-token to rotate the token of connected sandbox alice"},
		{[]string{"connect", "alice", "--rotate-token", "-f", "x.yaml"}, "give either NAME or -f FILE, not both"},
		{[]string{"connect", "alice", "bob", "--rotate-token"}, "connect takes at most one NAME"},
		{[]string{"connect", "Alice!", "--rotate-token"}, `"Alice!" is not a sandbox name`},
	} {
		code, _, errOut := runCLI(t, tt.args...)
		require.Equal(t, 2, code, "%v: a usage error", tt.args)
		require.Contains(t, errOut, tt.want, tt.args)
	}
}

// TestCLIConnectRotateToken: `sbx connect NAME --rotate-token` on the
// simulated cluster gives the sandbox a new token, kept in the state file
// only, and the relay a new pod that checks it; the sandbox stays ready
// with its key.
func TestCLIConnectRotateToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	dir := cliEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startSimDaemon(ctx, t, sim.Options{}, nil)
	statePath := api.DefaultPaths(os.Getenv).State()
	token := func() string {
		b, err := os.ReadFile(statePath)
		require.NoError(t, err)
		var doc struct {
			Sandboxes []struct{ Token string } `json:"sandboxes"`
		}
		require.NoError(t, json.Unmarshal(b, &doc))
		require.Len(t, doc.Sandboxes, 1)
		return doc.Sandboxes[0].Token
	}

	code, out, errOut := runCLI(t, "connect", "-f", writeSpec(t, dir), "--set", "name=alice")
	require.Equal(t, 0, code, errOut)
	before := token()
	c := &client.Client{}
	defer c.Close()
	st, err := c.Sandbox(ctx, "alice")
	require.NoError(t, err)

	code, out2, errOut2 := runCLI(t, "connect", "alice", "--rotate-token")
	require.Equal(t, 0, code, errOut2)
	require.Contains(t, errOut2, "Rotating the tunnel token of sandbox alice")
	require.Contains(t, errOut2, "rotating the tunnel token of sandbox alice: applying its verifier")
	require.Contains(t, out2, "Rotated the tunnel token of sandbox alice: its relay accepts only the new one.")
	require.Contains(t, out2, "routing key: "+st.RoutingKey)
	after := token()
	require.NotEqual(t, before, after)

	code, status, errOut3 := runCLI(t, "status", "-o", "json")
	require.Equal(t, 0, code, errOut3)
	for _, s := range []string{out, errOut, out2, errOut2, status, errOut3} {
		require.NotContains(t, s, before)
		require.NotContains(t, s, after)
	}
	st2, err := c.Sandbox(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st2.Phase)
	require.Zero(t, st2.Reconnects)

	code, _, errOut = runCLI(t, "connect", "bob", "--rotate-token")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `sandbox "bob" is not connected`)
	require.Contains(t, errOut, "sbx connect -f FILE")

	code, _, errOut = runCLI(t, "disconnect", "--all")
	require.Equal(t, 0, code, errOut)
	require.False(t, strings.Contains(errOut, after))
}
