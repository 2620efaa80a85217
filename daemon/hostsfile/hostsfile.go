// Package hostsfile manages sbx's marked block in a hosts file:
//
//	# BEGIN sbx (pid 4242, do not edit)
//	# lock: /home/alice/.local/state/sbx/hosts.lock
//	127.241.3.7	driver driver.hotrod driver.hotrod.svc driver.hotrod.svc.cluster.local
//	# END sbx
//
// Only the block is ever written; every byte outside it stays as it was
// (line endings, comments, a missing final newline). Writes are atomic
// (temp file and rename) where the system allows. Where it does not (a
// bind-mounted /etc/hosts in containers) the file is rewritten in place
// so that a kill at any point between system calls still leaves a valid
// file with the old or the new block (writeInPlace). What an interrupted
// write can leave (temp files, the in-place padding, the fragments older
// versions left after the block) is removed by the next write or the next
// Owner (sweepTemps, stripPadding, removeFragments).
//
// Ownership: one Owner per hosts file at a time. The Owner holds an
// exclusive flock on a lock file (normally in the daemon's state
// directory) for as long as it lives; the kernel releases it when the
// process dies, even by SIGKILL. The block names its owner's pid and lock
// file, so the next Owner can tell a block left by a crashed daemon (its
// lock is free: the block is removed) from one a live daemon with another
// state directory still owns (its lock is held: Acquire fails).
package hostsfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// ErrOwned is matched (errors.Is) by the error Acquire returns when another
// live sbx daemon owns the hosts file's block.
var ErrOwned = errors.New("hosts file block owned by another sbx daemon")

// OwnedError says which daemon owns the block.
type OwnedError struct {
	Path     string // the hosts file
	PID      int    // the owner's pid, 0 when unknown
	LockPath string // the lock the owner holds
}

func (e *OwnedError) Error() string {
	who := "another sbx daemon"
	if e.PID > 0 {
		who = fmt.Sprintf("another sbx daemon (pid %d)", e.PID)
	}
	return fmt.Sprintf("hosts file %s is managed by %s holding %s: stop that daemon first, or set outbound.mode: proxy in the sbx config",
		e.Path, who, e.LockPath)
}

// Is makes errors.Is(err, ErrOwned) true.
func (e *OwnedError) Is(target error) bool { return target == ErrOwned }

// Options configure an Owner.
type Options struct {
	// Path is the hosts file (e.g. /etc/hosts). A symlink is followed and
	// its target edited. The file must exist.
	Path string
	// LockPath is the ownership lock file, created (0600, with its
	// directory 0700) when missing. Use a path in the daemon's state
	// directory. Required.
	LockPath string
	// Logger receives warnings (stale blocks removed, in-place writes);
	// nil discards them.
	Logger *slog.Logger
}

// Owner owns the sbx block of one hosts file. Its methods are safe for
// concurrent use.
type Owner struct {
	path     string
	lockPath string
	pid      int
	log      *slog.Logger
	rename   func(oldpath, newpath string) error // os.Rename; tests swap it

	mu      sync.Mutex
	lock    *os.File
	inPlace bool // the in-place fallback has been logged
	entries []Entry
}

// Acquire takes ownership of the block in opts.Path and writes an empty
// block. It fails with an *OwnedError when another live daemon owns it. A
// block left by a daemon that died without cleaning up (crash, kill -9,
// power loss) is removed.
func Acquire(opts Options) (*Owner, error) {
	if opts.Path == "" || opts.LockPath == "" {
		return nil, errors.New("hostsfile: Path and LockPath are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := resolve(opts.Path)
	if err != nil {
		return nil, err
	}
	lockPath, err := filepath.Abs(opts.LockPath)
	if err != nil {
		return nil, fmt.Errorf("hosts file lock %s: %w", opts.LockPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o700); err != nil {
		return nil, fmt.Errorf("creating the directory of hosts file lock %s: %w", lockPath, err)
	}
	lock, err := lockFile(lockPath)
	if errors.Is(err, errLocked) {
		return nil, &OwnedError{Path: path, PID: readLockPID(lockPath), LockPath: lockPath}
	}
	if err != nil {
		return nil, fmt.Errorf("taking hosts file lock %s: %w", lockPath, err)
	}
	o := &Owner{path: path, lockPath: lockPath, pid: os.Getpid(), log: log, rename: os.Rename, lock: lock}
	// The pid in the lock file only serves error messages.
	if err := lock.Truncate(0); err == nil {
		_, _ = lock.WriteAt(fmt.Appendf(nil, "%d\n", o.pid), 0)
	}
	if err := o.removeStale(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	// Now that the file is ours: temp files of writers killed before
	// their rename.
	if removed, err := sweepTemps(path, time.Now()); err != nil {
		log.Warn("cannot look for temp files left next to the hosts file", "path", path, "err", err)
	} else if len(removed) > 0 {
		log.Warn("removed temp files left next to the hosts file by sbx writes that were killed",
			"path", path, "files", removed)
	}
	// Write an empty block at once: it is how a daemon with another lock
	// file (another state directory) learns this one owns the file.
	if err := o.Set(nil); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return o, nil
}

func resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("hosts file %s: %w", p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("hosts file %s does not exist: check outbound.hostsFile in the sbx config", abs)
		}
		return "", fmt.Errorf("hosts file %s: %w", abs, err)
	}
	return real, nil
}

func readLockPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil {
		return 0
	}
	return pid
}

// removeStale removes blocks whose owner is gone, and fails when one
// belongs to a live owner.
func (o *Owner) removeStale() error {
	raw, content, blocks, err := o.read()
	if err != nil {
		return err
	}
	for _, b := range blocks {
		if err := o.checkForeign(b.info); err != nil {
			return err
		}
	}
	clean, _ := removeBlocks(content, blocks)
	if bytes.Equal(clean, raw) {
		return nil
	}
	if err := o.write(clean); err != nil {
		return err
	}
	for _, b := range blocks {
		o.log.Warn("removed an sbx block left in the hosts file by a daemon that did not exit cleanly",
			"path", o.path, "pid", b.info.PID)
	}
	return nil
}

// checkForeign returns an *OwnedError when the block belongs to a live
// owner other than o.
func (o *Owner) checkForeign(info blockInfo) error {
	switch {
	case info.LockPath == o.lockPath:
		return nil // we hold that lock, so whoever wrote it is gone
	case info.LockPath != "":
		held, err := lockHeld(info.LockPath)
		if err != nil {
			o.log.Warn("cannot probe the lock named in the hosts file's sbx block; taking the block over",
				"path", o.path, "lock", info.LockPath, "err", err)
			return nil
		}
		if held {
			return &OwnedError{Path: o.path, PID: info.PID, LockPath: info.LockPath}
		}
		return nil
	default:
		// A block without a lock line (hand-made or from an older
		// writer): all we have is the pid.
		if info.PID != o.pid && pidAlive(info.PID) {
			return &OwnedError{Path: o.path, PID: info.PID, LockPath: "(unknown)"}
		}
		return nil
	}
}

// read returns the hosts file as it is (raw), and its contents with what
// an interrupted rewrite can leave taken off (content): the padding of an
// in-place rewrite killed before its truncate (stripPadding), and the
// fragments older versions left after the block (removeFragments). The
// blocks are those of content. A write of content (or of content with
// another block) completes the interrupted rewrite.
func (o *Owner) read() (raw, content []byte, blocks []span, err error) {
	raw, err = os.ReadFile(o.path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading hosts file %s: %w", o.path, err)
	}
	content, padded := stripPadding(raw)
	blocks, err = findBlocks(content)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hosts file %s: %w; fix or remove the sbx block by hand", o.path, err)
	}
	content, blocks, fragments := removeFragments(content, blocks)
	if padded || fragments > 0 {
		o.log.Warn("hosts file holds what an interrupted sbx rewrite left; removing it",
			"path", o.path, "padding", padded, "fragments", fragments)
	}
	return raw, content, blocks, nil
}

func (o *Owner) write(data []byte) error {
	inPlace, err := writeFile(o.path, data, o.rename)
	if err != nil {
		return fmt.Errorf("writing hosts file %s: %w", o.path, err)
	}
	if inPlace && !o.inPlace {
		o.inPlace = true
		o.log.Info("hosts file cannot be replaced atomically (bind mount, read-only directory, or foreign owner); rewriting it in place",
			"path", o.path)
	}
	return nil
}

// Path is the hosts file being edited (symlinks resolved).
func (o *Owner) Path() string { return o.path }

// Entries returns the entries last written by Set.
func (o *Owner) Entries() []Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.entries)
}

// Set makes the block hold exactly entries, in the given order. Lines
// outside the block are re-read each time, so edits others make to the
// rest of the file are kept. The file is not written when nothing changes.
// An empty entries list leaves an empty block in place. It fails with an
// *OwnedError when a live foreign owner's block appeared meanwhile.
func (o *Owner) Set(entries []Entry) error {
	for _, e := range entries {
		if err := validEntry(e); err != nil {
			return fmt.Errorf("hosts file %s: %w", o.path, err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lock == nil {
		return fmt.Errorf("hosts file %s: owner is closed", o.path)
	}
	raw, content, blocks, err := o.read()
	if err != nil {
		return err
	}
	// Two daemons that started at the same instant could both have found
	// no block; the loser finds out here instead of overwriting.
	for _, b := range blocks {
		if b.info.PID != o.pid || b.info.LockPath != o.lockPath {
			if err := o.checkForeign(b.info); err != nil {
				return err
			}
		}
	}
	clean, pos := removeBlocks(content, blocks)
	eol := lineEnding(clean)
	out := withBlock(clean, pos, func(terminated bool) []byte {
		return renderBlock(o.pid, o.lockPath, entries, eol, terminated)
	}, eol)
	o.entries = slices.Clone(entries)
	if bytes.Equal(out, raw) {
		return nil
	}
	return o.write(out)
}

// Close removes the block, restoring the file as it was outside it, and
// gives up ownership. The lock file is left in place: deleting it would
// let two daemons lock two different inodes of the same path.
func (o *Owner) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lock == nil {
		return nil
	}
	var werr error
	raw, content, blocks, err := o.read()
	if err != nil {
		werr = err
	} else if clean, _ := removeBlocks(content, blocks); !bytes.Equal(clean, raw) {
		werr = o.write(clean)
	}
	cerr := o.lock.Close()
	o.lock = nil
	o.entries = nil
	return errors.Join(werr, cerr)
}

func validEntry(e Entry) error {
	if !e.IP.IsValid() {
		return errors.New("entry without an IP address")
	}
	for _, n := range e.Names {
		if !validName(n) {
			return fmt.Errorf("invalid host name %q for %s", n, e.IP)
		}
	}
	return nil
}

// validName accepts DNS names (letters, digits, '-', '_', '.'), which is
// all Kubernetes allows in Service and namespace names; anything else
// could break the file's syntax.
func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// Writable reports whether the current process may write the hosts file
// at path (outbound.mode auto picks hosts mode when it may). Opening for
// writing without truncation changes nothing.
func Writable(path string) bool {
	real, err := resolve(path)
	if err != nil {
		return false
	}
	f, err := os.OpenFile(real, os.O_WRONLY, 0)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// Owned returns the live sbx daemon whose block the hosts file at path
// holds (nil when none does): what Acquire would fail with for a daemon
// of another state directory. It changes nothing (sbx doctor).
func Owned(path string) (*OwnedError, error) {
	real, err := resolve(path)
	if err != nil {
		return nil, err
	}
	o := &Owner{path: real, pid: os.Getpid(), log: slog.New(slog.DiscardHandler)}
	_, _, blocks, err := o.read()
	if err != nil {
		return nil, err
	}
	for _, b := range blocks {
		var owned *OwnedError
		if errors.As(o.checkForeign(b.info), &owned) {
			return owned, nil
		}
	}
	return nil, nil
}
