package daemon

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/stretchr/testify/require"
)

// TestProxyCredential: the proxy's credential is made once, kept 0600 in
// the state directory across restarts, served on the socket, and never
// part of the status or the log.
func TestProxyCredential(t *testing.T) {
	paths := testPaths(t)
	logger, logs := capturingLogger(t)
	ctx := context.Background()
	td := startDaemon(t, Options{Paths: paths, Logger: logger, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	pc, err := td.client.ProxyCredential(ctx)
	require.NoError(t, err)
	require.Equal(t, "sbx", pc.Username)
	require.True(t, validProxyCredential(pc.Password), pc.Password)
	require.Len(t, pc.Password, 43, "32 random bytes, base64url")

	file := filepath.Join(paths.StateDir, proxyCredentialFile)
	fi, err := os.Stat(file)
	require.NoError(t, err)
	if runtime.GOOS != "windows" {
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, pc.Password+"\n", string(b))

	again, err := td.client.ProxyCredential(ctx)
	require.NoError(t, err)
	require.Equal(t, pc, again)
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1")}, nil)
	require.NoError(t, err)
	st, err := td.client.Status(ctx)
	require.NoError(t, err)
	raw, err := json.Marshal(st)
	require.NoError(t, err)
	require.NotContains(t, string(raw), pc.Password, "never in the status")
	td.stop()

	// A restarted daemon serves the same one: .env files keep working.
	td = startDaemon(t, Options{Paths: paths, Logger: logger, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
	again, err = td.client.ProxyCredential(ctx)
	require.NoError(t, err)
	require.Equal(t, pc, again)
	td.stop()
	require.NotContains(t, logs.String(), pc.Password, "never logged")

	// One that other users could read, or that is not one of ours, is
	// replaced.
	replaced := func(prepare func()) string {
		t.Helper()
		prepare()
		td := startDaemon(t, Options{Paths: paths, Logger: logger, Clusters: (&fakeCluster{}).provider(), link: (&fakeLinker{}).link})
		defer td.stop()
		got, err := td.client.ProxyCredential(ctx)
		require.NoError(t, err)
		require.NotEqual(t, pc.Password, got.Password)
		fi, err := os.Stat(file)
		require.NoError(t, err)
		if runtime.GOOS != "windows" {
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		}
		return got.Password
	}
	if runtime.GOOS != "windows" {
		pc.Password = replaced(func() { require.NoError(t, os.Chmod(file, 0o644)) })
	}
	replaced(func() { require.NoError(t, os.WriteFile(file, []byte("short\n"), 0o600)) })
	require.Contains(t, logs.String(), "created the outbound proxy's credential")
}
