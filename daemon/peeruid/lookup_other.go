//go:build !linux

package peeruid

import (
	"fmt"
	"net"
	"runtime"
)

// Supported reports whether Lookup works on this OS. macOS and Windows
// have no /proc: there the proxy's credential still keeps other users
// out, the hosts-mode Host check keeps web pages out, and other users'
// programs can use the hosts-mode addresses.
const Supported = false

// Lookup is not implemented on this OS; it returns ErrUnavailable.
func Lookup(net.Conn) (Row, error) {
	return Row{}, fmt.Errorf("%w on %s", ErrUnavailable, runtime.GOOS)
}
