//go:build unix

package hostsfile

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Crash tests: a child process (this test binary, re-executed) owns a
// hosts file, writes a block, then rewrites it and SIGKILLs itself at one
// step of that rewrite (crashHook), so it dies between two system calls
// exactly where a kill would. The parent then checks what it left, and
// what the next daemon start makes of it.

const crashEnv = "SBX_HOSTSFILE_CRASH_HELPER"

// bindMount bind mounts src on dst and returns how to undo it; set on
// Linux (bindmount_linux_test.go), nil elsewhere.
var bindMount func(src, dst string) (undo func(), err error)

func oneEntry() []Entry { return entriesAB()[:1] }

// crashOps are the rewrites killed: what the block held before, and what
// the rewrite makes of it (nil with close: the block is removed).
var crashOps = map[string]struct {
	before, after func() []Entry
	close         bool
}{
	"shrink": {before: bigEntries, after: oneEntry},
	"grow":   {before: oneEntry, after: bigEntries},
	"close":  {before: bigEntries, close: true},
}

// TestHelperCrashWriter is not a test: run as a subprocess (crashEnv=1) it
// acquires HOSTS with LOCK (APPEND: then adds lines after the block),
// writes the OP's "before" block, and then either rewrites it killing
// itself at STEP, or (LOOP=1, an OP with an "after") says "ready" and
// alternates between the two blocks until it is killed.
func TestHelperCrashWriter(t *testing.T) {
	if os.Getenv(crashEnv) != "1" {
		t.Skip("helper process only")
	}
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	op := crashOps[os.Getenv("OP")]
	o, err := Acquire(Options{Path: os.Getenv("HOSTS"), LockPath: os.Getenv("LOCK")})
	if err != nil {
		fail(err)
	}
	if os.Getenv("FORCE_INPLACE") == "1" {
		o.rename = func(oldpath, newpath string) error {
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EBUSY}
		}
	}
	if add := os.Getenv("APPEND"); add != "" {
		// The user adds lines after the block: it is in the middle now.
		f, err := os.OpenFile(os.Getenv("HOSTS"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			fail(err)
		}
		_, err = f.WriteString(add)
		if err = errors.Join(err, f.Close()); err != nil {
			fail(err)
		}
	}
	if err := o.Set(op.before()); err != nil {
		fail(err)
	}
	if os.Getenv("LOOP") == "1" {
		fmt.Println("ready")
		for i := 0; ; i++ {
			entries := op.after()
			if i%2 == 1 {
				entries = op.before()
			}
			if err := o.Set(entries); err != nil {
				fail(err)
			}
		}
	}
	target := os.Getenv("STEP")
	crashHook = func(s string) {
		if s == target {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	if op.close {
		err = o.Close()
	} else {
		err = o.Set(op.after())
	}
	if err != nil {
		fail(err)
	}
	fmt.Println("finished without reaching step", target)
	os.Exit(4)
}

// crashLayout is a hosts file the block is written into: initial, plus
// appended after the helper's Acquire (so the block is in the middle).
type crashLayout struct{ initial, appended string }

// user is the file without any block.
func (l crashLayout) user() string { return l.initial + l.appended }

// base is the file with an empty placeholder block where the helper's
// block is (for withEntries).
func (l crashLayout) base() string {
	if l.appended == "" {
		return l.initial
	}
	return l.initial + "# BEGIN sbx\n# END sbx\n" + l.appended
}

var crashLayouts = map[string]crashLayout{
	"end":          {initial: "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"},
	"middle":       {initial: "127.0.0.1 localhost\n", appended: "10.0.0.5 after-the-block\n# the user's comment\n"},
	"unterminated": {initial: "127.0.0.1 localhost\n10.0.0.1 db"},
}

// withEntries is the file the helper with pid and lock writes for entries
// into orig (nil entries and noBlock: no block at all).
func withEntries(t *testing.T, orig string, pid int, lock string, entries []Entry, noBlock bool) string {
	t.Helper()
	blocks, err := findBlocks([]byte(orig))
	require.NoError(t, err)
	clean, pos := removeBlocks([]byte(orig), blocks)
	if noBlock {
		return string(clean)
	}
	eol := lineEnding(clean)
	return string(withBlock(clean, pos, func(term bool) []byte { return renderBlock(pid, lock, entries, eol, term) }, eol))
}

func litter(t *testing.T, hosts string) []string {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(filepath.Dir(hosts), tempPrefix(hosts)+"*"))
	require.NoError(t, err)
	return left
}

type crashMode struct {
	name    string
	force   bool     // rename fails with EBUSY (in the helper)
	bind    bool     // the hosts file is a real bind mount
	steps   []string // steps of a rewrite, in order
	renamed string   // the first step at which the new contents are in place
}

var (
	atomicSteps  = []string{stepBegin, stepTempCreated, stepTempWritten, stepTempSynced, stepRenamed, stepDone}
	inPlaceSteps = []string{stepBegin, stepTempCreated, stepTempWritten, stepTempSynced, stepRenameFailed,
		stepInPlaceOpen, stepInPlaceWrite, stepInPlaceSynced, stepInPlaceTrunc, stepDone}
	crashModes = []crashMode{
		{name: "rename", steps: atomicSteps, renamed: stepRenamed},
		{name: "forced-in-place", force: true, steps: inPlaceSteps, renamed: stepInPlaceWrite},
		{name: "bind-mount", bind: true, steps: inPlaceSteps, renamed: stepInPlaceWrite},
	}
)

// crashTempDir is a directory for a crash test's files, on tmpfs
// (/dev/shm) when there is one: the kills stand for a process dying, which
// fsync has no part in, and ext4's fsyncs made the tests three times
// slower.
func crashTempDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "sbx-hostsfile-crash-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// setUpMode returns the hosts file to use in mode m, in a directory from
// tempDir, or skips.
func setUpMode(t *testing.T, m crashMode, tempDir func(*testing.T) string) string {
	t.Helper()
	dir := tempDir(t)
	hosts := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(hosts, nil, 0o644))
	if !m.bind {
		return hosts
	}
	if bindMount == nil {
		t.Skip("no bind mounts on this system")
	}
	src := filepath.Join(tempDir(t), "hosts.src")
	require.NoError(t, os.WriteFile(src, nil, 0o644))
	undo, err := bindMount(src, hosts)
	if err != nil {
		t.Skipf("cannot bind mount here (%v)", err)
	}
	t.Cleanup(undo)
	return hosts
}

func crashHelperCmd(hosts, lock, op string, force bool, extra ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"=1", "HOSTS="+hosts, "LOCK="+lock, "OP="+op,
		"GORACE=atexit_sleep_ms=0")
	if force {
		cmd.Env = append(cmd.Env, "FORCE_INPLACE=1")
	}
	cmd.Env = append(cmd.Env, extra...)
	return cmd
}

// requireKilled fails unless err says the process died of SIGKILL.
func requireKilled(t *testing.T, err error, out []byte) {
	t.Helper()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "helper: %v\n%s", err, out)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "helper was not killed: %v\n%s", err, out)
}

// checkNextStart is the next daemon's start after a kill: its Acquire
// must leave the user's file with only its own empty block and no temp
// files, and its Close the user's file byte for byte.
func checkNextStart(t *testing.T, hosts, lock, user string) {
	t.Helper()
	o, err := Acquire(Options{Path: hosts, LockPath: lock})
	require.NoError(t, err)
	require.Empty(t, litter(t, hosts), "temp files swept on start")
	require.Equal(t, withEntries(t, user, os.Getpid(), lock, nil, false), read(t, hosts))
	require.NoError(t, o.Close())
	require.Equal(t, user, read(t, hosts))
}

// TestCrashAtEveryStep kills a writer at every step of a rewrite, for
// every layout, rewrite and write path (rename, in place after a refused
// rename, in place on a real bind mount), and checks: the hosts file is
// valid, holds exactly the old or the new file (plus, at most, the
// in-place padding), and the next start leaves neither padding, fragment
// nor temp file.
func TestCrashAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	start := time.Now()
	kills := 0
	for _, m := range crashModes {
		t.Run(m.name, func(t *testing.T) {
			hosts := setUpMode(t, m, crashTempDir)
			lock := filepath.Join(crashTempDir(t), "state", "hosts.lock")
			for lname, l := range crashLayouts {
				user, orig := l.user(), l.base()
				for opName, op := range crashOps {
					newFrom := false
					for _, st := range m.steps {
						newFrom = newFrom || st == m.renamed
						name := fmt.Sprintf("%s/%s/%s", lname, opName, st)
						require.NoError(t, os.WriteFile(hosts, []byte(l.initial), 0o644))
						cmd := crashHelperCmd(hosts, lock, opName, m.force, "STEP="+st, "APPEND="+l.appended)
						out, err := cmd.CombinedOutput()
						requireKilled(t, err, out)
						kills++
						pid := cmd.Process.Pid
						before := withEntries(t, orig, pid, lock, op.before(), false)
						var after string
						if op.close {
							after = user
						} else {
							after = withEntries(t, orig, pid, lock, op.after(), false)
						}

						raw := read(t, hosts)
						requireValidHosts(t, raw)
						content, padded := stripPadding([]byte(raw))
						want := before
						if newFrom {
							want = after
						}
						require.Equal(t, want, string(content), "%s: the old or the new file, nothing else", name)
						wantPad := len(after) < len(before) && (st == stepInPlaceWrite || st == stepInPlaceSynced)
						require.Equal(t, wantPad, padded, "%s: padding\n%q", name, raw)
						switch st {
						case stepTempCreated, stepTempWritten, stepTempSynced, stepRenameFailed:
							require.Len(t, litter(t, hosts), 1, "%s: the killed writer left its temp file", name)
						default:
							require.Empty(t, litter(t, hosts), name)
						}
						checkNextStart(t, hosts, lock, user)
					}
				}
			}
		})
	}
	t.Logf("%d kills in %v", kills, time.Since(start).Round(time.Millisecond))
}

// TestCrashAtRandomMoments kills a writer that alternates between two
// blocks at random moments, which can land inside a system call as well
// as between two.
func TestCrashAtRandomMoments(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	start := time.Now()
	kills, padded := 0, 0
	l := crashLayouts["middle"]
	user, orig := l.user(), l.base()
	for _, m := range crashModes {
		t.Run(m.name, func(t *testing.T) {
			// A disk filesystem here: its fsyncs widen the windows in
			// which a kill leaves padding.
			hosts := setUpMode(t, m, (*testing.T).TempDir)
			lock := filepath.Join(t.TempDir(), "state", "hosts.lock")
			for range 15 {
				require.NoError(t, os.WriteFile(hosts, []byte(l.initial), 0o644))
				cmd := crashHelperCmd(hosts, lock, "shrink", m.force, "LOOP=1", "APPEND="+l.appended)
				stdout, err := cmd.StdoutPipe()
				require.NoError(t, err)
				require.NoError(t, cmd.Start())
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				line, err := bufio.NewReader(stdout).ReadString('\n')
				require.NoError(t, err)
				require.Equal(t, "ready\n", line)
				time.Sleep(time.Duration(rand.IntN(20_000)) * time.Microsecond)
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				requireKilled(t, cmd.Wait(), nil)
				kills++

				pid := cmd.Process.Pid
				raw := read(t, hosts)
				requireValidHosts(t, raw)
				content, pad := stripPadding([]byte(raw))
				if pad {
					padded++
				}
				require.Contains(t, []string{
					withEntries(t, orig, pid, lock, bigEntries(), false),
					withEntries(t, orig, pid, lock, oneEntry(), false),
				}, string(content))
				checkNextStart(t, hosts, lock, user)
			}
		})
	}
	t.Logf("%d kills in %v, %d left padding", kills, time.Since(start).Round(time.Millisecond), padded)
}
