package hostsfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// writeFile replaces the contents of path (a resolved, non-symlink path)
// with data.
//
// The normal way is atomic: a temp file in the same directory, written and
// fsynced, given the original's mode and owner, renamed over the original,
// then the directory fsynced. Readers see the old or the new file, never a
// half-written one, and a crash (even a power loss) leaves one of the two,
// plus at worst the temp file, which the next Acquire sweeps (sweepTemps).
//
// Some setups forbid that, and then the file is rewritten in place (see
// writeInPlace for what a kill leaves then):
//   - the hosts file is a bind mount (Docker and Kubernetes mount
//     /etc/hosts into containers): rename fails with EBUSY;
//   - the directory is not writable even though the file is (an admin ran
//     `chmod o+w /etc/hosts` or set an ACL on the file only): creating the
//     temp file fails with EACCES/EPERM/EROFS;
//   - the temp file cannot be given the original's owner (a non-root
//     daemon editing a root-owned file it may write): a rename would change
//     the owner.
//
// It returns whether the in-place fallback was used.
func writeFile(path string, data []byte, rename func(oldpath, newpath string) error) (inPlace bool, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	err = writeAtomic(path, data, fi, rename)
	if err == nil {
		return false, nil
	}
	if !fallbackInPlace(err) {
		return false, err
	}
	if err := writeInPlace(path, data); err != nil {
		return true, err
	}
	return true, nil
}

// errKeepOwner marks a temp file that could not be given the original's
// owner.
var errKeepOwner = errors.New("cannot give the temp file the hosts file's owner")

func fallbackInPlace(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) ||
		errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) ||
		errors.Is(err, errKeepOwner)
}

// Steps of a write, named for the crash tests: crashHook (nil outside
// tests) is called at each, so a test process can kill itself there.
const (
	stepBegin         = "begin"             // nothing done yet
	stepTempCreated   = "temp-created"      // empty temp file exists
	stepTempWritten   = "temp-written"      // temp file holds data, not synced
	stepTempSynced    = "temp-synced"       // temp file synced and closed, before rename
	stepRenamed       = "renamed"           // rename done, directory not synced
	stepRenameFailed  = "rename-failed"     // rename refused, temp file not yet removed
	stepInPlaceOpen   = "inplace-open"      // in place: file opened, nothing written
	stepInPlaceWrite  = "inplace-written"   // in place: padded data written, not synced
	stepInPlaceSynced = "inplace-synced"    // in place: synced, before the truncate
	stepInPlaceTrunc  = "inplace-truncated" // in place: truncated, not synced
	stepDone          = "done"              // the write returned
)

var crashHook func(step string)

func step(name string) {
	if crashHook != nil {
		crashHook(name)
	}
}

// tempPrefix is how every temp file for hosts file path starts:
// ".hosts.sbx-". The full name is ".hosts.sbx-<pid>-<random>", so a sweep
// can tell a temp file whose writer is gone (sweepTemps).
func tempPrefix(path string) string {
	return "." + filepath.Base(path) + ".sbx-"
}

func writeAtomic(path string, data []byte, fi fs.FileInfo, rename func(oldpath, newpath string) error) (err error) {
	step(stepBegin)
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	step(stepTempCreated)
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	step(stepTempWritten)
	if err = tmp.Chmod(fi.Mode().Perm()); err != nil {
		return err
	}
	if err = keepOwner(tmp, fi); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	step(stepTempSynced)
	if err = rename(tmpName, path); err != nil {
		step(stepRenameFailed)
		_ = os.Remove(tmpName)
		// A failed rename is also when temp files of writers killed
		// earlier are most likely around (same directory, same cause).
		_, _ = sweepTemps(path, time.Now())
		return err
	}
	step(stepRenamed)
	// Make the rename itself durable. Some filesystems refuse to fsync a
	// directory; the data is already safe then.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	step(stepDone)
	return nil
}

// writeInPlace overwrites path's contents through the existing inode, so
// its mode, owner, and any bind mount stay as they are. It is not atomic
// for readers (one racing the write may see the padding below for an
// instant), but a process killed at any point between its system calls
// leaves a valid hosts file holding the old or the new contents:
//
//  1. Open the file and read it (L bytes). A kill leaves the old file.
//  2. One write(2) of data followed by padding up to at least L bytes (see
//     padTo: a comment and blank lines, which every hosts file parser
//     skips), starting at the first byte that differs from the file. No
//     old byte survives past the new contents, so a kill leaves the new
//     contents plus padding; the next read removes the padding
//     (stripPadding), that is the next write or the next daemon's Acquire.
//  3. fsync, only when padding was added: the truncate in step 4 must not
//     reach the disk before the data, or a power loss could leave the old
//     contents cut to the new length.
//  4. Truncate to len(data). A kill from here on leaves exactly data.
//  5. fsync.
//
// A kill inside the write(2) of step 2: Linux checks for a fatal signal
// only between the chunks (a page, or a large folio) a buffered write
// copies into the page cache (mm/filemap.c, generic_perform_write), and
// returns what it copied so far; so a write within one 4 KiB page is all
// or nothing. Writing only from the first changed byte makes any rewrite
// of a hosts file under 4 KiB one chunk, and one of a bigger file too as
// long as the changed bytes (the block to the end of the file) do not
// straddle a page boundary. One that does can in principle be cut there
// by a SIGKILL landing in that very call, leaving the new bytes up to the
// boundary and the old ones after it. The next Acquire then finds one
// block mixing old and new lines (the cut fell in the old block: the next
// write replaces it whole), a stale tail after the new block (the cut fell
// past it: removed only in the shapes removeFragments knows), or a block
// without its END line (it grew past the boundary: Acquire refuses with a
// ParseError and the user is told to fix the file). A power loss before step 3 completes may
// leave any mix of old and new pages: only the rename path is atomic
// against that.
func writeInPlace(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	cur, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	step(stepInPlaceOpen)
	out := padTo(data, len(cur))
	same := 0
	for same < len(out) && same < len(cur) && out[same] == cur[same] {
		same++
	}
	if same < len(out) {
		if _, err := f.WriteAt(out[same:], int64(same)); err != nil {
			return err
		}
	}
	step(stepInPlaceWrite)
	if len(out) > len(data) {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	step(stepInPlaceSynced)
	if err := f.Truncate(int64(len(data))); err != nil {
		return err
	}
	step(stepInPlaceTrunc)
	if err := f.Sync(); err != nil {
		return err
	}
	step(stepDone)
	return nil
}

// tempMaxAge is the age past which a temp file is abandoned whoever made
// it: a write keeps its temp file for milliseconds.
const tempMaxAge = 10 * time.Minute

// sweepTemps removes the temp files that writers of the hosts file at
// path left in its directory when they were killed between creating and
// renaming them (or could not remove them after a failed rename):
//   - ".<base>.sbx-<pid>-<digits>" when no process <pid> is running, or
//     when it was last modified over tempMaxAge ago (the pid may be reused);
//   - ".<base>.sbx-<digits>", the name older sbx versions used, when it
//     was last modified over tempMaxAge ago (no pid to check).
//
// Nothing else is touched: other names, and anything but regular files.
// pid checks assume the writers share the sweeper's pid namespace; a
// writer in another one (a container sharing the directory) could lose
// its temp file mid-write, and that write fails and is retried later.
// It returns the names removed.
func sweepTemps(path string, now time.Time) ([]string, error) {
	dir := filepath.Dir(path)
	prefix := tempPrefix(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pid, ok := parseTempSuffix(rest)
		if !ok {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if now.Sub(info.ModTime()) <= tempMaxAge && (pid == 0 || pidAlive(pid)) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			removed = append(removed, e.Name())
		}
	}
	return removed, nil
}

// parseTempSuffix reads what follows ".<base>.sbx-": "<pid>-<digits>"
// gives the pid, "<digits>" (older versions) gives 0; anything else is not
// a temp file of sbx.
func parseTempSuffix(s string) (pid int, ok bool) {
	digits := func(s string) bool {
		if s == "" || len(s) > 20 {
			return false
		}
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	p, r, found := strings.Cut(s, "-")
	if !found {
		return 0, digits(s)
	}
	if !digits(p) || !digits(r) {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// padMark starts the padding of an in-place rewrite.
const padMark = "\t# sbx padding"

// padTo returns data followed by padding that makes it at least n bytes
// long, or data itself when it is long enough. The padding is padMark and
// one or more newlines: a comment, then blank lines. It starts with a tab
// rather than a newline so that it can follow a last line without a
// terminator (the file's, or the block's END line) without changing what
// that line means to a hosts parser, and stripPadding can take it off
// byte for byte.
func padTo(data []byte, n int) []byte {
	if len(data) >= n {
		return data
	}
	k := max(n-len(data)-len(padMark), 1)
	out := make([]byte, 0, len(data)+len(padMark)+k)
	out = append(out, data...)
	out = append(out, padMark...)
	for range k {
		out = append(out, '\n')
	}
	return out
}

// stripPadding removes the padding an in-place rewrite killed before its
// truncate left: the last padMark in content when only newlines (at least
// one) follow it to the end.
func stripPadding(content []byte) ([]byte, bool) {
	i := bytes.LastIndex(content, []byte(padMark))
	if i < 0 {
		return content, false
	}
	rest := content[i+len(padMark):]
	if len(rest) == 0 || len(bytes.Trim(rest, "\n")) != 0 {
		return content, false
	}
	return content[:i], true
}
