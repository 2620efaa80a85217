package outbound

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const crashHelperEnv = "SBX_OUTBOUND_CRASH_HELPER"

// TestHelperHostsDaemon is not a test: run as a subprocess, it serves
// hosts mode for one Service, prints "ready" and waits to be killed.
func TestHelperHostsDaemon(t *testing.T) {
	if os.Getenv(crashHelperEnv) != "1" {
		t.Skip("helper process only")
	}
	cat := NewCatalog("", []string{"hotrod"})
	cat.Apply(added(svc("hotrod", "driver", 8082)))
	h, err := NewHosts(HostsOptions{Catalog: cat, HostsFile: os.Getenv("HOSTS"), LockPath: os.Getenv("LOCK"), StatePath: os.Getenv("STATE"),
		Range: netip.MustParsePrefix("127.246.0.0/16"),
		Dial:  func(ctx context.Context, target string) (net.Conn, error) { return nil, fmt.Errorf("no tunnel") }})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	go func() { _ = h.Run(context.Background()) }()
	for len(h.Status()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("ready")
	select {}
}

// A daemon killed with SIGKILL leaves its hosts block; the next one
// removes it, takes over with the same IPs, and its clean exit restores
// the file.
func TestHostsRecoverAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	e := newHostsEnv(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHostsDaemon$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1", "HOSTS="+e.hosts, "LOCK="+e.lock, "STATE="+e.state)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	crashedIP, ok := resolve(t, e.hosts, "driver")
	require.True(t, ok)
	require.Contains(t, e.read(t), fmt.Sprintf("(pid %d,", cmd.Process.Pid))

	// While it lives, nobody else may take the file.
	_, err = NewHosts(HostsOptions{Catalog: e.cat, Dial: e.si.dial, HostsFile: e.hosts, LockPath: filepath.Join(t.TempDir(), "x.lock"), Range: netip.MustParsePrefix("127.246.0.0/16")})
	require.ErrorContains(t, err, "managed by another sbx daemon")

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Contains(t, e.read(t), "driver.hotrod.svc.cluster.local", "the killed daemon left its block")

	e.cat.Apply(added(svc("hotrod", "driver", 8082)))
	_, cancel, done := e.start(t, "127.246.0.0/16")
	require.Eventually(t, func() bool {
		return strings.Count(e.read(t), "# BEGIN sbx") == 1 && !strings.Contains(e.read(t), fmt.Sprintf("(pid %d,", cmd.Process.Pid))
	}, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { _, ok := resolve(t, e.hosts, "driver"); return ok }, 10*time.Second, 5*time.Millisecond)
	ip, _ := resolve(t, e.hosts, "driver")
	require.Equal(t, crashedIP, ip, "same IP after the restart")
	reply, err := roundTrip(t, e.hosts, "driver", 8082, "after crash")
	require.NoError(t, err)
	require.Equal(t, "driver.hotrod.svc.cluster.local:8082|after crash", reply)
	cancel()
	require.NoError(t, <-done)
	done <- nil
	require.Equal(t, original, e.read(t))
}
