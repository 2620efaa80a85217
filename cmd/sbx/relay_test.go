package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tunnel"
)

func TestRelayHelpDocumentsEveryFlag(t *testing.T) {
	code, out, errOut := runCLI(t, "relay", "--help")
	require.Equal(t, 0, code, errOut)
	flags := out[strings.Index(out, "\nFlags:\n"):]
	for _, flag := range []string{"--sandbox", "--listen", "--health-listen", "--inbound", "--grace", "--drain-timeout",
		"--dial-timeout", "--max-held", "--max-streams", "--deny", "--token-sha256"} {
		i := strings.Index(flags, "  "+flag+" ")
		require.GreaterOrEqual(t, i, 0, "flag %s missing from help:\n%s", flag, out)
		line := flags[i:]
		line = line[:strings.IndexByte(line, '\n')]
		require.Contains(t, line, "e.g. "+flag, "flag %s has no example: %q", flag, line)
	}
	require.Contains(t, out, "sha256sum", "says how to make a verifier by hand")
	require.NotContains(t, out, "--token-file", "the relay never reads the token itself")
	require.Contains(t, out, "sbx relay --sandbox alice")
	require.Contains(t, out, "containerPort=workload/port[/appProtocol]")
}

func TestRelayFlagErrors(t *testing.T) {
	verifier := tunnel.VerifierOf("cli-secret-token").String()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"relay", "--token-sha256", verifier}, "--sandbox is required"},
		{[]string{"relay", "--sandbox", "alice"}, "--token-sha256 is required"},
		{[]string{"relay", "--sandbox", "alice", "--token-sha256", "cli-secret-token"}, "a token verifier is 64 hex digits"},
		{[]string{"relay", "--sandbox", "alice", "--token-sha256", verifier, "--listen", "0.0.0.0:7000"}, "is not a loopback address"},
		{[]string{"relay", "--sandbox", "alice", "--token-sha256", verifier, "--inbound", "20001=route"}, "want containerPort=workload/port[/appProtocol]"},
		{[]string{"relay", "--sandbox", "alice", "--token-sha256", verifier, "extra"}, `sbx relay takes no arguments, got "extra"`},
	} {
		code, _, errOut := runCLI(t, tt.args...)
		require.NotEqual(t, 0, code)
		require.Contains(t, errOut, tt.want)
		require.NotContains(t, errOut, "cli-secret-token")
	}
	code, _, errOut := runCLI(t, "relay", "--sandbox", "alice", "--listen", "0.0.0.0:7000")
	require.Equal(t, 2, code, "a bad flag value is a user error")
	require.Contains(t, errOut, "hint: see `sbx relay --help`")
}

// TestRelayRunsAndDrains runs `sbx relay` in-process; cancelling the context
// is what SIGTERM does in main. It exits 0 after draining.
func TestRelayRunsAndDrains(t *testing.T) {
	verifier := tunnel.VerifierOf("cli-secret-token").String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"relay", "--sandbox", "alice", "--token-sha256", verifier, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"},
			strings.NewReader(""), &out, &errb)
	}()
	require.Eventually(t, func() bool { return strings.Contains(errb.String(), "relay serving") }, 30*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case c := <-code:
		require.Equal(t, 0, c, errb.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sbx relay did not exit after cancel")
	}
	require.Contains(t, errb.String(), "drained")
	require.NotContains(t, errb.String(), "cli-secret-token")
}
