package controlplane

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A server that loses its port to another process between freePorts and
// its bind is started again on other ports; Close stops it, and what it
// started in its process group.
func TestStartServerRetriesTakenPort(t *testing.T) {
	dir := t.TempDir()
	c := &ControlPlane{dir: dir, logf: t.Logf, logs: map[string]string{}}
	t.Cleanup(c.Close)
	attempts := 0
	var last *process
	ports, err := c.startServer(t.Context(), "fake", 1, 10*time.Second,
		func(ports []int) (*process, error) {
			attempts++
			script := `echo "listen tcp 127.0.0.1:1: bind: address already in use" >&2; exit 1`
			if attempts > 1 {
				script = `sleep 300 & wait` // a child in the group, like a server's helper
			}
			p, err := startProcess("fake", "/bin/sh", []string{"-c", script}, filepath.Join(dir, "fake.log"))
			last = p
			return p, err
		},
		func(ctx context.Context, _ []int) error {
			if attempts == 1 {
				return context.DeadlineExceeded // never ready: it exits
			}
			return nil
		})
	if err != nil {
		t.Fatalf("startServer: %v", err)
	}
	if attempts != 2 || len(ports) != 1 {
		t.Fatalf("attempts = %d, ports = %v; want a second attempt on one port", attempts, ports)
	}
	pgid := last.cmd.Process.Pid
	c.Close()
	select {
	case <-last.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the server still runs after Close")
	}
	// The whole group is gone (signal 0 only checks).
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a process of the server's group survived Close")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A server that exits while starting fails the start with its log's end.
func TestStartServerReportsExit(t *testing.T) {
	dir := t.TempDir()
	c := &ControlPlane{dir: dir, logf: t.Logf, logs: map[string]string{}}
	t.Cleanup(c.Close)
	_, err := c.startServer(t.Context(), "fake", 1, 10*time.Second,
		func([]int) (*process, error) {
			return startProcess("fake", "/bin/sh", []string{"-c", `echo "Error: unknown flag: --bogus" >&2; exit 3`}, filepath.Join(dir, "fake.log"))
		},
		func(context.Context, []int) error { return context.DeadlineExceeded })
	if err == nil || !strings.Contains(err.Error(), "fake exited while starting (exit status 3)") || !strings.Contains(err.Error(), "unknown flag: --bogus") {
		t.Fatalf("err = %v, want the exit and the log's last lines", err)
	}
}
