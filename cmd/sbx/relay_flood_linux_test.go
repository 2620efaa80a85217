//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/tools/testbed/figures"
	"github.com/sbx-dev/sbx/tunnel"
	"github.com/sbx-dev/sbx/tunnel/tunneltest"
)

// TestRelayProcessUnderPreAuthFlood is the reproduction against a
// real `sbx relay` process: connections without a token flood its tunnel
// port with yamux stream openings and data (one such connection once made
// a relay grow from 40 to 555 MiB in 2.3 s), and more connections hold
// its pending-handshake slots by saying nothing. The relay's resident
// memory must stay within a small bound, and a daemon with the token must
// get in during the flood. The figures go to the test log.
func TestRelayProcessUnderPreAuthFlood(t *testing.T) {
	bin := buildSbx(t)
	const token = "flood-test-token-0123456789abcdef"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The relay gets only the token's SHA-256, as sbx writes it into the
	// relay Deployment.
	cmd := exec.CommandContext(ctx, bin, "relay", "--sandbox", "alice", "--token-sha256", tunnel.VerifierOf(token).String(),
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	var logMu sync.Mutex
	var logText strings.Builder
	tunnelAddr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`msg="relay serving".* tunnel=(\S+)`)
		for sc.Scan() {
			logMu.Lock()
			logText.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				tunnelAddr <- m[1]
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logMu.Lock()
		defer logMu.Unlock()
		require.NotContains(t, logText.String(), token, "the relay logged its token")
	})
	var addr string
	select {
	case addr = <-tunnelAddr:
	case err := <-exited:
		exited <- err // for the cleanup, which waits for it
		t.Fatalf("sbx relay exited before serving: %v\n%s", err, logText.String())
	case <-ctx.Done():
		t.Fatal("sbx relay did not start serving")
	}

	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		require.NoError(t, err)
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				require.NoError(t, err)
				return kb << 10
			}
		}
		t.Fatal("no VmRSS in /proc/PID/status")
		return 0
	}
	before := rss()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	const flooders, idlers = 4, 64
	for range flooders {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				// The relay hangs up on the garbage: come back.
				tunneltest.PreAuthFlood(conn, stop)
				conn.Close()
			}
		})
	}
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range idlers {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		idle = append(idle, c)
	}

	// Sample the relay's memory for the 2.3 s the old relay needed to
	// reach 555 MiB, then authenticate in the middle of the flood.
	peak := before
	for end := time.Now().Add(2300 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		peak = max(peak, rss())
	}
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	s, _, err := tunnel.Client(hctx, conn, tunnel.DefaultConfig(), tunnel.Hello{
		Version: tunnel.ProtocolVersion, Token: token, ClientID: "flood-test", Sandbox: "alice", User: "dev@laptop"})
	hcancel()
	require.NoError(t, err, "a daemon with the token could not get in during the flood")
	peak = max(peak, rss())
	_ = s.Close()
	close(stop)
	wg.Wait()

	grew := peak - before
	figures.Save(t, "relay under a pre-auth flood", fmt.Sprintf("relay process RSS: %d MiB before, peak %d MiB during a pre-auth flood of %d flooding and %d silent connections (%+d MiB); the handshake with the token succeeded",
		before>>20, peak>>20, flooders, idlers, grew>>20))
	// An unbounded relay grew by ~110 MiB per second per flooding
	// connection; the bound leaves room for the Go runtime's own growth.
	require.Less(t, grew, int64(48<<20), "the relay grew by %d MiB under a pre-auth flood", grew>>20)
}
