package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster"
	"github.com/sbx-dev/sbx/cluster/spec"
	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/tunnel"
)

// TestRotateTokenKeepsTheTunnel: `sbx connect NAME --rotate-token` on a
// connected sandbox mints a new token, saves it, and applies its verifier
// while the tunnel stays up (no reconnect, no new link): new sessions use
// the new token, and the connect answers once the relay for the new token
// is ready.
func TestRotateTokenKeepsTheTunnel(t *testing.T) {
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	paths := testPaths(t)
	td := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: fl.link, newToken: tokenSeq("tok-one", "tok-two")})
	ctx := context.Background()
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	require.Equal(t, "tok-one", fl.lastParams().Token())

	var steps []string
	st2, err := td.client.Connect(ctx, api.ConnectRequest{Spec: spec.Sandbox{Name: "alice"}, RotateToken: true, Wait: true, Timeout: time.Minute},
		func(p api.Progress) { steps = append(steps, p.Message) })
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st2.Phase)
	require.Equal(t, st.RoutingKey, st2.RoutingKey, "the key stays")
	require.Zero(t, st2.Reconnects, "a rotation is not a reconnect")
	require.Equal(t, 1, fl.count(), "the tunnel stayed up")
	require.Equal(t, "tok-two", fl.lastParams().Token(), "sessions dialed from now on use the new token")
	require.Contains(t, strings.Join(steps, "\n"), "rotating the tunnel token of sandbox alice")
	require.Contains(t, strings.Join(steps, "\n"), "token rotated")

	opts := fc.appliedOptions()
	require.Len(t, opts, 2)
	require.Equal(t, tunnel.VerifierOf("tok-one").String(), opts[0].TokenVerifier)
	require.Equal(t, tunnel.VerifierOf("tok-two").String(), opts[1].TokenVerifier)
	require.False(t, opts[1].RefuseOtherVerifier, "the user asked for the new token here")
	fc.mu.Lock()
	waits := append([]cluster.Ref(nil), fc.waits...)
	fc.mu.Unlock()
	require.Equal(t, opts[1].TokenVerifier, waits[len(waits)-1].TokenVerifier, "it waits for the relay of the new token")

	b, err := os.ReadFile(paths.State())
	require.NoError(t, err)
	require.Contains(t, string(b), "tok-two")
	require.NotContains(t, string(b), "tok-one", "the old token is gone for good")

	// Rotating a sandbox the daemon does not have says so.
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: spec.Sandbox{Name: "bob"}, RotateToken: true, Wait: true}, nil)
	var ae *api.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusNotFound, ae.StatusCode)
	require.Contains(t, err.Error(), `sandbox "bob" is not connected`)
}

// TestRotateTokenOfAnUnreadySandbox: a sandbox that failed (or is still
// connecting) takes the new token on its next attempt, at once.
func TestRotateTokenOfAnUnreadySandbox(t *testing.T) {
	fc := &fakeCluster{applyErr: &PermanentError{errors.New("Deployment hotrod/route not found")}}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, newToken: tokenSeq("tok-one", "tok-two")})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.Error(t, err)
	fc.mu.Lock()
	fc.applyErr = nil
	fc.mu.Unlock()
	st, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), RotateToken: true, Wait: true, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	require.Equal(t, api.PhaseReady, st.Phase)
	opts := fc.appliedOptions()
	require.Len(t, opts, 2)
	require.Equal(t, tunnel.VerifierOf("tok-two").String(), opts[1].TokenVerifier)
	require.Equal(t, "tok-two", fl.lastParams().Token())
}

// TestOwnReapplyDoesNotTakeOver: after a lost tunnel the daemon re-applies
// with its token but refuses to replace another daemon's verifier; when it
// finds one it stops (PhaseFailed) naming the sandbox, the cause and how to
// take the sandbox back, and connecting again does.
func TestOwnReapplyDoesNotTakeOver(t *testing.T) {
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Clusters: fc.provider(), link: fl.link, newToken: fixedToken})
	ctx := context.Background()
	_, err := td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, nil)
	require.NoError(t, err)
	fl.last().kill(errors.New("port-forward closed"))
	require.Eventually(t, func() bool { return len(fc.appliedOptions()) == 2 }, 10*time.Second, 5*time.Millisecond)
	waitPhase(t, td.client, "alice", api.PhaseReady)
	require.True(t, fc.appliedOptions()[1].RefuseOtherVerifier, "a reconnect keeps its hands off another daemon's relay")

	// Another daemon connected alice with its token meanwhile.
	mismatch := &cluster.VerifierMismatchError{Namespace: "hotrod", Deployment: "sbx-alice-relay",
		Relay: tunnel.VerifierOf("theirs").String(), Want: tunnel.VerifierOf(testToken).String()}
	fc.mu.Lock()
	fc.applyErr = verifierConflict("alice", fmt.Errorf("sandbox alice: %w", mismatch))
	fc.mu.Unlock()
	fl.last().kill(errors.New("relay draining"))
	st := waitPhase(t, td.client, "alice", api.PhaseFailed)
	for _, want := range []string{"sandbox alice", "the relay's verifier does not match this daemon's token: the relay was re-created by another daemon or its Deployment was edited",
		"this daemon stopped reconnecting", "sbx connect alice --rotate-token"} {
		require.Contains(t, st.LastError, want)
	}
	require.NotContains(t, st.LastError, testToken)

	// The user takes it back.
	fc.mu.Lock()
	fc.applyErr = nil
	fc.mu.Unlock()
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	opts := fc.appliedOptions()
	require.False(t, opts[len(opts)-1].RefuseOtherVerifier, "connecting again takes the sandbox")
}

// TestTokenOnlyInTheStateFile: the tunnel token is in the state file and
// the tunnel handshake, nowhere else the daemon writes: not in status or
// its JSON, the watch stream, connect's progress, errors, or the log.
func TestTokenOnlyInTheStateFile(t *testing.T) {
	logger, logs := capturingLogger(t)
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	paths := testPaths(t)
	td := startDaemon(t, Options{Paths: paths, Logger: logger, Clusters: fc.provider(), link: fl.link, newToken: tokenSeq(testToken, testToken+"-2")})
	ctx := context.Background()
	w, err := td.client.Watch(ctx)
	require.NoError(t, err)
	defer w.Close()
	var seen strings.Builder
	progress := func(p api.Progress) {
		b, _ := json.Marshal(p)
		seen.Write(b)
	}
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: testSpec("alice", "localhost:1"), Wait: true}, progress)
	require.NoError(t, err)
	// An error on the way: apply fails once, the link breaks.
	fc.mu.Lock()
	fc.applyErr = errors.New("the API server is restarting")
	fc.mu.Unlock()
	fl.last().kill(errors.New("port-forward closed"))
	require.Eventually(t, func() bool {
		st, err := td.client.Sandbox(ctx, "alice")
		return err == nil && strings.Contains(st.LastError, "restarting")
	}, 10*time.Second, 5*time.Millisecond)
	fc.mu.Lock()
	fc.applyErr = nil
	fc.mu.Unlock()
	waitPhase(t, td.client, "alice", api.PhaseReady)
	_, err = td.client.Connect(ctx, api.ConnectRequest{Spec: spec.Sandbox{Name: "alice"}, RotateToken: true, Wait: true}, progress)
	require.NoError(t, err)

	st, err := td.client.Status(ctx)
	require.NoError(t, err)
	b, err := json.Marshal(st)
	require.NoError(t, err)
	seen.Write(b)
	for range 3 {
		ev, err := w.Next()
		require.NoError(t, err)
		b, _ := json.Marshal(ev)
		seen.Write(b)
	}
	fc.mu.Lock()
	seen.WriteString(fmt.Sprint(fc.opts, fc.waits))
	fc.mu.Unlock()
	td.stop()
	seen.WriteString(logs.String())
	require.NotEmpty(t, logs.String())
	for _, tok := range []string{testToken, testToken + "-2"} {
		require.NotContains(t, seen.String(), tok)
	}
	state, err := os.ReadFile(paths.State())
	require.NoError(t, err)
	require.Contains(t, string(state), `"token": "`+testToken+`-2"`, "the state file is where it lives")
	fi, err := os.Stat(paths.State())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	// Nothing else the daemon left in its directories holds it.
	for _, dir := range []string{paths.RuntimeDir, filepath.Dir(paths.State())} {
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || p == paths.State() {
				return nil
			}
			b, _ := os.ReadFile(p)
			require.NotContains(t, string(b), testToken, p)
			return nil
		})
	}
}

// TestSavedSandboxNeverPrintsItsToken: the one type that holds the token
// keeps it out of fmt and slog.
func TestSavedSandboxNeverPrintsItsToken(t *testing.T) {
	sv := savedSandbox{Name: "alice", RoutingKey: "k3x9a0b1c2d3e", Token: testToken}
	logger, logs := capturingLogger(t)
	logger.Info("saved", "sandbox", sv)
	for _, s := range []string{fmt.Sprint(sv), fmt.Sprintf("%v %+v %#v %s", sv, sv, sv, sv), logs.String()} {
		require.NotContains(t, s, testToken)
		require.Contains(t, s, "alice")
	}
}

// TestRestoreWithoutTokenMintsOne: a saved sandbox without a token (a
// state file written before the daemon kept tokens) gets a new one, saved
// at once; its first apply may replace the verifier in the cluster, as a
// new token's must, and later ones may not.
func TestRestoreWithoutTokenMintsOne(t *testing.T) {
	paths := testPaths(t)
	sb := testSpec("alice", "localhost:1")
	require.NoError(t, (&stateFile{path: paths.State()}).Save([]savedSandbox{{Name: "alice", RoutingKey: "k3x9a0b1c2d3e", Namespace: "hotrod", Spec: sb}}))
	fc := &fakeCluster{}
	fl := &fakeLinker{}
	td := startDaemon(t, Options{Paths: paths, Clusters: fc.provider(), link: fl.link, newToken: fixedToken})
	waitPhase(t, td.client, "alice", api.PhaseReady)
	saved, err := (&stateFile{path: paths.State()}).Load()
	require.NoError(t, err)
	require.Equal(t, testToken, saved[0].Token)
	opts := fc.appliedOptions()
	require.Equal(t, tunnel.VerifierOf(testToken).String(), opts[0].TokenVerifier)
	require.False(t, opts[0].RefuseOtherVerifier)
	fl.last().kill(errors.New("port-forward closed"))
	require.Eventually(t, func() bool { return len(fc.appliedOptions()) == 2 }, 10*time.Second, 5*time.Millisecond)
	require.True(t, fc.appliedOptions()[1].RefuseOtherVerifier)
}
