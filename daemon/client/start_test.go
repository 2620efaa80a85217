package client

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/sbx-dev/sbx/daemon/service"
)

// TestLastLines: an error message quotes the last lines of the daemon
// log, indented, and nothing when there is no log.
func TestLastLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	require.Empty(t, lastLines(path, 5))
	require.NoError(t, os.WriteFile(path, []byte("one\ntwo\nthree\n"), 0o600))
	require.Equal(t, "two\n  three", lastLines(path, 2))
	require.Equal(t, "one\n  two\n  three", lastLines(path, 5))
}

// TestOpenLogStartsAfresh: a log over MaxLogSize is kept as .1 and a new
// one started, 0600.
func TestOpenLogStartsAfresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	f, err := OpenLog(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(MaxLogSize+1)) // sparse: cheap
	require.NoError(t, f.Close())
	f, err = OpenLog(path)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	require.Zero(t, fi.Size())
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	old, err := os.Stat(path + ".1")
	require.NoError(t, err)
	require.Equal(t, int64(MaxLogSize+1), old.Size())
}

// notRunning is a client whose daemon never answers: nothing listens.
func notRunning() *Client {
	return &Client{Socket: "/nonexistent/sbx.sock", Dial: func(context.Context) (net.Conn, error) {
		return nil, errors.New("connection refused")
	}}
}

// TestWaitAnswerReportsExit: a daemon that exits while Ensure waits for it
// is reported at once, not after StartTimeout.
func TestWaitAnswerReportsExit(t *testing.T) {
	exited := make(chan error, 1)
	exited <- errors.New("exit status 1")
	var progress bytes.Buffer
	err := waitAnswer(context.Background(), notRunning(), &progress, exited)
	var ee *exitedError
	require.ErrorAs(t, err, &ee)
	require.EqualError(t, ee.err, "exit status 1")
	require.Equal(t, "\n", progress.String(), "the progress line is ended")
}

type failingRunner struct{ ran []string }

func (r *failingRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	r.ran = append(r.ran, strings.Join(append([]string{name}, args...), " "))
	return nil, &service.CommandError{Args: append([]string{name}, args...), Err: errors.New("exit status 1"), Output: "Job failed.\n"}
}

// TestEnsureAsksTheServiceManager: where the daemon is installed as a
// service, Ensure asks the manager to start it, and its refusal names the
// service, the cause and where to look, with the hint apart.
func TestEnsureAsksTheServiceManager(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "systemd", "user", service.UnitName)
	require.NoError(t, os.MkdirAll(filepath.Dir(unit), 0o700))
	require.NoError(t, os.WriteFile(unit, nil, 0o600))
	r := &failingRunner{}
	svc := service.Host{GOOS: "linux", Getenv: func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return dir
		}
		return ""
	}, Runner: r}
	var progress bytes.Buffer
	c, err := Ensure(context.Background(), StartOptions{Paths: api.Paths{RuntimeDir: filepath.Join(dir, "run"), StateDir: dir}, Service: svc, Progress: &progress})
	require.Nil(t, c)
	var he *HintError
	require.ErrorAs(t, err, &he)
	require.EqualError(t, err, "systemd did not start the sbx daemon's service sbx-daemon.service: systemctl --user start sbx-daemon.service: exit status 1: Job failed.")
	require.Contains(t, he.Hint, "journalctl --user -u sbx-daemon.service")
	require.Contains(t, he.Hint, "`sbx daemon --uninstall` goes back to starting the daemon on demand")
	require.Equal(t, []string{"systemctl --user start sbx-daemon.service"}, r.ran)
	require.Equal(t, "starting the sbx daemon through systemd (sbx-daemon.service) \n", progress.String())
}

// TestWaitGone: WaitGone returns once nothing listens on the socket, and
// with ctx's error while a daemon still answers there.
func TestWaitGone(t *testing.T) {
	require.NoError(t, notRunning().WaitGone(context.Background()))

	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "sbx.sock"))
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"path":"daemon.log"}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	c := &Client{Socket: ln.Addr().String()}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, c.WaitGone(ctx), context.DeadlineExceeded)

	go func() { time.Sleep(100 * time.Millisecond); _ = srv.Close() }()
	require.NoError(t, c.WaitGone(context.Background()))
}
