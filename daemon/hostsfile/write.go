package hostsfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// writeFile replaces the contents of path (a resolved, non-symlink path)
// with data.
//
// The normal way is atomic: a temp file in the same directory, written and
// fsynced, given the original's mode and owner, renamed over the original,
// then the directory fsynced. Readers see the old or the new file, never a
// half-written one, and a crash leaves one of the two.
//
// Some setups forbid that, and then the file is rewritten in place (not
// atomic: a reader racing the write may see a short file for an instant):
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

func writeAtomic(path string, data []byte, fi fs.FileInfo, rename func(oldpath, newpath string) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".sbx-*")
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
	if _, err = tmp.Write(data); err != nil {
		return err
	}
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
	if err = rename(tmpName, path); err != nil {
		return err
	}
	// Make the rename itself durable. Some filesystems refuse to fsync a
	// directory; the data is already safe then.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// writeInPlace overwrites path's contents through the existing inode, so
// its mode, owner, and any bind mount stay as they are.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
