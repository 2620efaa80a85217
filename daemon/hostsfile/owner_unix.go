//go:build unix

package hostsfile

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives f the uid and gid of the original when they differ.
func keepOwner(f *os.File, orig fs.FileInfo) error {
	want, ok := orig.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	got, err := f.Stat()
	if err != nil {
		return err
	}
	have, ok := got.Sys().(*syscall.Stat_t)
	if !ok || (have.Uid == want.Uid && have.Gid == want.Gid) {
		return nil
	}
	if err := f.Chown(int(want.Uid), int(want.Gid)); err != nil {
		return fmt.Errorf("%w: %w", errKeepOwner, err)
	}
	return nil
}
