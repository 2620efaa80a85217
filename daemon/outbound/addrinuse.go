package outbound

import (
	"errors"
	"syscall"
)

// addrInUse reports whether a listen failed because another socket holds
// the address and port (EADDRINUSE; WSAEADDRINUSE on Windows).
func addrInUse(err error) bool {
	var errno syscall.Errno
	return errors.Is(err, syscall.EADDRINUSE) || (errors.As(err, &errno) && errno == wsaeaddrinuse)
}

// wsaeaddrinuse is Windows' EADDRINUSE (10048), which syscall.EADDRINUSE
// does not match there.
const wsaeaddrinuse = syscall.Errno(10048)
