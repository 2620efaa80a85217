package hostsfile

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	ipA = netip.MustParseAddr("127.241.0.7")
	ipB = netip.MustParseAddr("127.241.0.8")
)

func entriesAB() []Entry {
	return []Entry{
		{IP: ipA, Names: []string{"driver", "driver.hotrod", "driver.hotrod.svc", "driver.hotrod.svc.cluster.local"}},
		{IP: ipB, Names: []string{"redis.shared", "redis.shared.svc", "redis.shared.svc.cluster.local"}},
	}
}

// oddContents are hosts files with everything a careless editor breaks.
var oddContents = []struct {
	name    string
	content string
}{
	{"empty", ""},
	{"typical", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"},
	{"no trailing newline", "127.0.0.1 localhost\n# a comment\n10.0.0.1 db"},
	{"crlf", "127.0.0.1 localhost\r\n# windows-ish\r\n10.0.0.2 files\r\n"},
	{"crlf no trailing newline", "127.0.0.1 localhost\r\n10.0.0.2 files"},
	{"comments and blanks", "# managed by hand\n\n\n   # indented comment\n127.0.0.1 localhost   # trailing comment\n\n"},
	{"tabs and spaces at end", "127.0.0.1 localhost \t \n\t\n"},
	{"only a comment no newline", "# nothing"},
	{"mentions sbx", "# sbx was here\n10.1.1.1 sbx.example # BEGIN sbx is not at line start\n"},
}

func newHosts(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

func lockIn(t *testing.T) string { return filepath.Join(t.TempDir(), "state", "hosts.lock") }

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// outside returns the file with the sbx block cut out the way Close does.
func outside(t *testing.T, content string) string {
	t.Helper()
	blocks, err := findBlocks([]byte(content))
	require.NoError(t, err)
	clean, _ := removeBlocks([]byte(content), blocks)
	return string(clean)
}

func TestSetAndCloseKeepOutsideBytes(t *testing.T) {
	for _, tc := range oddContents {
		t.Run(tc.name, func(t *testing.T) {
			p := newHosts(t, tc.content, 0o640)
			o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
			require.NoError(t, err)
			require.Equal(t, tc.content, outside(t, read(t, p)), "acquiring writes only an empty block")
			require.Contains(t, read(t, p), "# BEGIN sbx")

			require.NoError(t, o.Set(entriesAB()))
			got := read(t, p)
			require.Contains(t, got, fmt.Sprintf("# BEGIN sbx (pid %d, do not edit)", os.Getpid()))
			require.Contains(t, got, "127.241.0.7\tdriver driver.hotrod driver.hotrod.svc driver.hotrod.svc.cluster.local")
			require.Contains(t, got, "127.241.0.8\tredis.shared redis.shared.svc redis.shared.svc.cluster.local")
			require.Contains(t, got, "# END sbx")
			require.True(t, strings.HasPrefix(got, tc.content) || tc.content != "" && !strings.HasSuffix(tc.content, "\n"),
				"the block is appended after the original bytes")
			require.Equal(t, tc.content, outside(t, got))
			if strings.Contains(tc.content, "\r\n") {
				require.NotRegexp(t, `[^\r]\n`, got, "a CRLF file gets a CRLF block")
			}

			// Update: one service gone, one name list changed.
			require.NoError(t, o.Set([]Entry{{IP: ipB, Names: []string{"redis.shared"}}}))
			got = read(t, p)
			require.NotContains(t, got, "driver")
			require.Contains(t, got, "127.241.0.8\tredis.shared")
			require.Equal(t, tc.content, outside(t, got))

			fi, err := os.Stat(p)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o640), fi.Mode().Perm(), "mode kept across atomic replace")

			require.NoError(t, o.Close())
			require.Equal(t, tc.content, read(t, p), "Close restores the file byte for byte")
			require.NoError(t, o.Close(), "Close is idempotent")
		})
	}
}

func TestSetKeepsEditsOutsideTheBlock(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.NoError(t, o.Set(entriesAB()))

	// Someone adds lines before and after the block.
	cur := read(t, p)
	edited := "10.9.9.9 vpn-host\n" + cur + "10.8.8.8 later\n"
	require.NoError(t, os.WriteFile(p, []byte(edited), 0o644))

	require.NoError(t, o.Set(entriesAB()[:1]))
	got := read(t, p)
	require.True(t, strings.HasPrefix(got, "10.9.9.9 vpn-host\n127.0.0.1 localhost\n# BEGIN sbx"), got)
	require.True(t, strings.HasSuffix(got, "# END sbx\n10.8.8.8 later\n"), "the block stays where it was")
	require.NotContains(t, got, "redis")

	require.NoError(t, o.Close())
	require.Equal(t, "10.9.9.9 vpn-host\n127.0.0.1 localhost\n10.8.8.8 later\n", read(t, p))
}

func TestSetUnchangedDoesNotWrite(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	require.NoError(t, o.Set(entriesAB()))
	fi1, err := os.Stat(p)
	require.NoError(t, err)
	require.NoError(t, o.Set(entriesAB()))
	fi2, err := os.Stat(p)
	require.NoError(t, err)
	require.True(t, os.SameFile(fi1, fi2), "no rename when nothing changed")
	require.Equal(t, entriesAB(), o.Entries())
}

func TestSymlinkFollowed(t *testing.T) {
	target := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	link := filepath.Join(t.TempDir(), "hosts-link")
	require.NoError(t, os.Symlink(target, link))
	o, err := Acquire(Options{Path: link, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.NoError(t, o.Set(entriesAB()))
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.Equal(t, os.ModeSymlink, fi.Mode()&os.ModeSymlink, "the link stays a link")
	require.Contains(t, read(t, target), "# BEGIN sbx")
	require.NoError(t, o.Close())
	require.Equal(t, "127.0.0.1 localhost\n", read(t, target))
}

func TestInvalidNamesRejected(t *testing.T) {
	p := newHosts(t, "", 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	for _, n := range []string{"", "a b", "evil\n1.2.3.4 bank.com", "x#y", "tab\tname"} {
		require.Error(t, o.Set([]Entry{{IP: ipA, Names: []string{n}}}), "%q", n)
	}
	require.Error(t, o.Set([]Entry{{Names: []string{"x"}}}))
	require.Empty(t, outside(t, read(t, p)))
	require.NotContains(t, read(t, p), "\t", "no entry written")
}

func TestMissingFileAndBrokenBlock(t *testing.T) {
	_, err := Acquire(Options{Path: filepath.Join(t.TempDir(), "nope"), LockPath: lockIn(t)})
	require.ErrorContains(t, err, "does not exist")

	broken := "127.0.0.1 localhost\n# BEGIN sbx (pid 1, do not edit)\n1.2.3.4 x\n"
	p := newHosts(t, broken, 0o644)
	lock := lockIn(t)
	_, err = Acquire(Options{Path: p, LockPath: lock})
	var pe *ParseError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, 2, pe.Line)
	require.Equal(t, broken, read(t, p), "a broken block is never guessed at")
	// The failed Acquire released its lock.
	held, err := lockHeld(lock)
	require.NoError(t, err)
	require.False(t, held)
}

func TestStaleBlockFromDeadOwnerRemoved(t *testing.T) {
	deadLock := filepath.Join(t.TempDir(), "old.lock") // never locked
	content := "127.0.0.1 localhost\n" +
		"# BEGIN sbx (pid 999999, do not edit)\n# lock: " + deadLock + "\n127.241.0.1\told old.ns\n# END sbx\n" +
		"10.0.0.1 after\n"
	p := newHosts(t, content, 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.NotContains(t, read(t, p), "old.ns")
	require.Contains(t, read(t, p), fmt.Sprintf("(pid %d,", os.Getpid()), "the new owner's empty block took its place")
	require.Equal(t, "127.0.0.1 localhost\n10.0.0.1 after\n", outside(t, read(t, p)))
	require.NoError(t, o.Set(entriesAB()[:1]))
	require.NoError(t, o.Close())
	require.Equal(t, "127.0.0.1 localhost\n10.0.0.1 after\n", read(t, p))
}

func TestBlockWithoutLockLineUsesPID(t *testing.T) {
	live := fmt.Sprintf("# BEGIN sbx (pid %d, do not edit)\n# END sbx\n", os.Getppid())
	p := newHosts(t, live, 0o644)
	_, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.ErrorIs(t, err, ErrOwned, "a live pid without a lock line is respected")

	p = newHosts(t, "a\n# BEGIN sbx (pid 999999, do not edit)\n# END sbx\n", 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	require.Equal(t, "a\n", read(t, p))
}

func TestTwoOwnersInOneProcess(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	lock := lockIn(t)
	o1, err := Acquire(Options{Path: p, LockPath: lock})
	require.NoError(t, err)
	require.NoError(t, o1.Set(entriesAB()))

	_, err = Acquire(Options{Path: p, LockPath: lock})
	require.ErrorIs(t, err, ErrOwned, "same lock file")
	var oe *OwnedError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, os.Getpid(), oe.PID)

	_, err = Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.ErrorIs(t, err, ErrOwned, "another state dir: the block's lock is still held")
	require.Contains(t, read(t, p), "driver.hotrod", "the loser did not touch the block")

	require.NoError(t, o1.Close())
	o2, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.NoError(t, o2.Close())
	require.Equal(t, "127.0.0.1 localhost\n", read(t, p))
}

// helperEnv makes the test binary act as a daemon that owns a hosts file.
const helperEnv = "SBX_HOSTSFILE_HELPER"

// TestHelperOwner is not a test: run as a subprocess, it acquires the hosts
// file, writes a block, says "ready", and waits for stdin to close (then
// exits cleanly) or for a signal.
func TestHelperOwner(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process only")
	}
	o, err := Acquire(Options{Path: os.Getenv("HOSTS"), LockPath: os.Getenv("LOCK")})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	if err := o.Set(entriesAB()); err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := o.Close(); err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

type helper struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
}

func startHelper(t *testing.T, hosts, lock string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOwner$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "HOSTS="+hosts, "LOCK="+lock)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	return &helper{cmd: cmd, stdin: stdin}
}

func TestOtherProcessOwnsThenIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	orig := "127.0.0.1 localhost\r\n# keep me\r\n10.0.0.3 db"
	p := newHosts(t, orig, 0o644)
	lock := lockIn(t)
	h := startHelper(t, p, lock)
	require.Contains(t, read(t, p), fmt.Sprintf("(pid %d, do not edit)", h.cmd.Process.Pid))

	for _, l := range []string{lock, lockIn(t)} {
		_, err := Acquire(Options{Path: p, LockPath: l})
		var oe *OwnedError
		require.ErrorAs(t, err, &oe, "a live daemon in another process owns it")
		require.Equal(t, h.cmd.Process.Pid, oe.PID)
	}
	owned, err := Owned(p)
	require.NoError(t, err)
	require.NotNil(t, owned, "Owned sees the live owner, as Acquire does")
	require.Equal(t, h.cmd.Process.Pid, owned.PID)

	// kill -9: no chance to clean up.
	require.NoError(t, h.cmd.Process.Signal(syscall.SIGKILL))
	err = h.cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Contains(t, read(t, p), "# BEGIN sbx", "the crashed owner left its block")
	owned, err = Owned(p)
	require.NoError(t, err)
	require.Nil(t, owned, "a dead owner's block is nobody's")

	// The next daemon (another state dir even) cleans up and takes over.
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	require.Equal(t, orig, outside(t, read(t, p)), "stale block removed, file kept byte for byte")
	require.NotContains(t, read(t, p), "driver")
	require.NoError(t, o.Set(entriesAB()))
	require.NoError(t, o.Close())
	require.Equal(t, orig, read(t, p))
}

func TestOtherProcessCleanExit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	orig := "127.0.0.1 localhost\n"
	p := newHosts(t, orig, 0o600)
	h := startHelper(t, p, lockIn(t))
	require.NoError(t, h.stdin.Close())
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("helper did not exit")
	}
	require.Equal(t, orig, read(t, p))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestWritable(t *testing.T) {
	p := newHosts(t, "", 0o644)
	require.True(t, Writable(p))
	require.False(t, Writable(filepath.Join(t.TempDir(), "missing")))
	if os.Geteuid() != 0 {
		require.NoError(t, os.Chmod(p, 0o444))
		require.False(t, Writable(p))
	}
}

func TestOwnedErrorMessage(t *testing.T) {
	err := error(&OwnedError{Path: "/etc/hosts", PID: 12, LockPath: "/s/hosts.lock"})
	require.True(t, errors.Is(err, ErrOwned))
	require.Contains(t, err.Error(), "pid 12")
	require.Contains(t, err.Error(), "outbound.mode: proxy")
}
