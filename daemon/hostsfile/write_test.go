package hostsfile

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireValidHosts fails unless every line of content is blank, a
// comment, or an address followed by valid names.
func requireValidHosts(t *testing.T, content string) {
	t.Helper()
	for i, line := range strings.Split(content, "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		_, err := netip.ParseAddr(f[0])
		require.NoError(t, err, "line %d of\n%s", i+1, content)
		require.GreaterOrEqual(t, len(f), 2, "line %d of\n%s", i+1, content)
		for _, n := range f[1:] {
			require.True(t, validName(n), "line %d of\n%s", i+1, content)
		}
	}
}

func TestPadToAndStripPadding(t *testing.T) {
	for _, data := range []string{
		"",
		"127.0.0.1 localhost\n",
		"127.0.0.1 localhost\n10.0.0.1 db",
		"10.0.0.2 files\r\n",
		"127.0.0.1 localhost\n# BEGIN sbx (pid 1, do not edit)\n# END sbx",
		"10.0.0.1 db\t",
		"10.0.0.1 db\t" + padMark, // padMark not followed by a newline is not padding
	} {
		for _, n := range []int{0, len(data), len(data) + 1, len(data) + len(padMark), len(data) + len(padMark) + 1, len(data) + 500} {
			out := padTo([]byte(data), n)
			require.GreaterOrEqual(t, len(out), n)
			require.True(t, strings.HasPrefix(string(out), data))
			requireValidHosts(t, string(out))
			got, padded := stripPadding(out)
			require.Equal(t, len(out) > len(data), padded, "%q", out)
			if padded {
				require.Equal(t, data, string(got))
				blocks, err := findBlocks(got)
				require.NoError(t, err)
				require.Len(t, blocks, strings.Count(data, "# END sbx"))
			}
		}
	}
	// The one ambiguity: a file whose own last line ends in the marker and
	// newlines loses them. Nobody writes "\t# sbx padding" but sbx.
	got, padded := stripPadding([]byte("10.0.0.1 db\t# sbx padding\n\n"))
	require.True(t, padded)
	require.Equal(t, "10.0.0.1 db", string(got))

	for _, s := range []string{
		"# sbx padding\n", "\t# sbx padding", "\t# sbx padding\nx\n", "\t# sbx padding \n", "a\t# sbx padding\n\nb",
		"\t# sbx padding\r\n",
	} {
		got, padded := stripPadding([]byte(s))
		require.False(t, padded, "%q", s)
		require.Equal(t, s, string(got))
	}
}

// An in-place rewrite stopped after its write (a panic here; a kill in
// crash_test.go) leaves the new contents plus padding; the next write
// and Close remove it.
func TestInPlaceInterruptedBeforeTruncate(t *testing.T) {
	orig := "127.0.0.1 localhost\n10.0.0.1 db"
	p := newHosts(t, orig, 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	o.rename = func(oldpath, newpath string) error {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EBUSY}
	}
	require.NoError(t, o.Set(entriesAB()))
	full := read(t, p)

	crashHook = func(s string) {
		if s == stepInPlaceSynced {
			panic("stop")
		}
	}
	require.PanicsWithValue(t, "stop", func() { _ = o.Set(entriesAB()[:1]) })
	crashHook = nil
	got := read(t, p)
	require.Len(t, got, len(full), "padded to the old length")
	requireValidHosts(t, got)
	content, padded := stripPadding([]byte(got))
	require.True(t, padded)
	require.Equal(t, orig, outside(t, string(content)))
	require.NotContains(t, string(content), "redis")

	require.NoError(t, o.Set(entriesAB()[:1]), "the same block: only the padding goes")
	require.NotContains(t, read(t, p), padMark)
	require.Equal(t, orig, outside(t, read(t, p)))
	require.NoError(t, o.Close())
	require.Equal(t, orig, read(t, p))
}

// What an in-place rewrite killed before its truncate leaves (the new
// contents, padded to the old length) is taken for the new contents by
// the next owner, even where the padding follows an END line without a
// line break, and removed.
func TestOwnerRemovesPadding(t *testing.T) {
	orig := "127.0.0.1 localhost\n10.0.0.1 db" // the block goes last, unterminated
	p := newHosts(t, orig, 0o644)
	deadLock := lockIn(t)
	eol := "\n"
	full := orig + eol + string(renderBlock(999999, deadLock, entriesAB(), eol, false))
	short := orig + eol + string(renderBlock(999999, deadLock, entriesAB()[:1], eol, false))
	left := string(padTo([]byte(short), len(full)))
	require.Len(t, left, len(full))
	require.Contains(t, left, "# END sbx\t# sbx padding\n")
	requireValidHosts(t, left)
	require.NoError(t, os.WriteFile(p, []byte(left), 0o644))

	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err, "the padding is not taken for part of the END line")
	require.NotContains(t, read(t, p), "padding")
	require.NotContains(t, read(t, p), "redis")
	require.Equal(t, orig, outside(t, read(t, p)))

	// The owner's own write removes padding that appears meanwhile.
	require.NoError(t, o.Set(entriesAB()))
	cur := read(t, p)
	require.NoError(t, os.WriteFile(p, padTo([]byte(cur), len(cur)+100), 0o644))
	require.NoError(t, o.Set(entriesAB()), "the same entries: written anyway")
	require.Equal(t, cur, read(t, p))
	require.NoError(t, o.Close())
	require.Equal(t, orig, read(t, p))
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	require.NoError(t, cmd.Run())
	require.False(t, pidAlive(cmd.Process.Pid))
	return cmd.Process.Pid
}

// tempLitter creates, next to the hosts file p, the files a sweep must
// remove and those it must keep.
func tempLitter(t *testing.T, p string) (gone, kept []string) {
	t.Helper()
	dir := filepath.Dir(p)
	old := time.Now().Add(-tempMaxAge - time.Minute)
	dead, live := deadPID(t), os.Getpid()
	file := func(name string, mtime time.Time) string {
		f := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(f, []byte("10.0.0.1 x\n"), 0o600))
		require.NoError(t, os.Chtimes(f, mtime, mtime))
		return name
	}
	gone = []string{
		file(fmt.Sprintf(".hosts.sbx-%d-123456", dead), time.Now()), // writer gone
		file(fmt.Sprintf(".hosts.sbx-%d-42", live), old),            // pid reused, or stuck for minutes
		file(".hosts.sbx-3752248440", old),                          // an older sbx's name, abandoned
	}
	kept = []string{
		file(fmt.Sprintf(".hosts.sbx-%d-123456", live), time.Now()), // a live writer's
		file(".hosts.sbx-3752248440-", old),                         // not sbx's name
		file(".hosts.sbx-3752248441", time.Now()),                   // an older sbx's, maybe live
		file(".hosts.sbx-abc", old),
		file(fmt.Sprintf(".hosts.sbx-%d-1-2", dead), old),
		file(fmt.Sprintf(".hosts.sbx-%d-x", dead), old),
		file(fmt.Sprintf(".other.sbx-%d-1", dead), old), // another file's
		file(fmt.Sprintf("hosts.sbx-%d-1", dead), old),
		file(fmt.Sprintf(".hosts.sbx-%d-1.bak", dead), old),
	}
	d := fmt.Sprintf(".hosts.sbx-%d-77", dead)
	require.NoError(t, os.Mkdir(filepath.Join(dir, d), 0o700))
	kept = append(kept, d)
	return gone, kept
}

func requireSwept(t *testing.T, dir string, gone, kept []string) {
	t.Helper()
	for _, n := range gone {
		require.NoFileExists(t, filepath.Join(dir, n))
	}
	for _, n := range kept {
		_, err := os.Lstat(filepath.Join(dir, n))
		require.NoError(t, err, "%s kept", n)
	}
}

func TestSweepTemps(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	gone, kept := tempLitter(t, p)
	removed, err := sweepTemps(p, time.Now())
	require.NoError(t, err)
	require.ElementsMatch(t, gone, removed)
	requireSwept(t, filepath.Dir(p), gone, kept)

	_, err = sweepTemps(filepath.Join(t.TempDir(), "missing", "hosts"), time.Now())
	require.Error(t, err)
}

func TestParseTempSuffix(t *testing.T) {
	for s, want := range map[string]int{"12-34": 12, "1-0": 1, "34": 0, "0": 0} {
		pid, ok := parseTempSuffix(s)
		require.True(t, ok, s)
		require.Equal(t, want, pid, s)
	}
	for _, s := range []string{"", "-", "12-", "-34", "0-34", "a-1", "1-a", "1-2-3", "12 34", "+1-2",
		strings.Repeat("9", 21), strconv.Itoa(1<<30) + "0000000000000-1"} {
		_, ok := parseTempSuffix(s)
		require.False(t, ok, s)
	}
}

func TestAcquireSweepsTemps(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	gone, kept := tempLitter(t, p)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	requireSwept(t, filepath.Dir(p), gone, kept)
}

func TestFailedRenameSweepsTemps(t *testing.T) {
	p := newHosts(t, "127.0.0.1 localhost\n", 0o644)
	o, err := Acquire(Options{Path: p, LockPath: lockIn(t)})
	require.NoError(t, err)
	defer o.Close()
	o.rename = func(oldpath, newpath string) error {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EBUSY}
	}
	gone, kept := tempLitter(t, p)
	require.NoError(t, o.Set(entriesAB()))
	requireSwept(t, filepath.Dir(p), gone, kept)
	left, err := filepath.Glob(filepath.Join(filepath.Dir(p), fmt.Sprintf(".hosts.sbx-%d-*", os.Getpid())))
	require.NoError(t, err)
	require.Len(t, left, 1, "only the live pid's planted file: the write's own temp file is gone")
}
