//go:build windows

package hostsfile

import (
	"io/fs"
	"os"
)

// keepOwner does nothing on Windows: there is no uid/gid to copy, and who
// may change the hosts file is decided by its directory's ACL (the
// replacement is created in the same directory and inherits it).
func keepOwner(*os.File, fs.FileInfo) error { return nil }
