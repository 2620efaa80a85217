//go:build unix

package runenv

import "golang.org/x/sys/unix"

// foregroundPgrp returns the foreground process group of the terminal fd.
func foregroundPgrp(fd int) (int, error) {
	return unix.IoctlGetInt(fd, unix.TIOCGPGRP)
}
