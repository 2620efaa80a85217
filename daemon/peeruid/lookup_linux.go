//go:build linux

package peeruid

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
)

// Supported reports whether Lookup works on this OS.
const Supported = true

// procTables are the kernel's socket tables, IPv4 first.
var procTables = [2]string{"/proc/net/tcp", "/proc/net/tcp6"}

// Lookup finds the client socket of c, an accepted loopback TCP
// connection: the row whose local address is c's remote one and whose
// remote address is c's local one. It looks in the table of the peer's
// address family first, then in the other (a dual-stack client socket
// reaching an IPv4 listener is listed in tcp6). ErrNotFound: no such
// socket (the client is gone); ErrUnavailable: the tables cannot be read.
func Lookup(c net.Conn) (Row, error) {
	local, remote, err := tcpAddrs(c)
	if err != nil {
		return Row{}, err
	}
	tables := procTables
	if remote.Addr().Is6() && !remote.Addr().Is4In6() {
		tables[0], tables[1] = tables[1], tables[0]
	}
	readable := 0
	for _, path := range tables {
		f, err := os.Open(path)
		if err != nil {
			continue // no IPv6 in this kernel, say
		}
		readable++
		row, found, err := findRow(f, remote, local, binary.NativeEndian)
		_ = f.Close()
		if err != nil {
			return Row{}, fmt.Errorf("%w: reading %s: %v", ErrUnavailable, path, err)
		}
		if found {
			return row, nil
		}
	}
	if readable == 0 {
		return Row{}, fmt.Errorf("%w: cannot open %s", ErrUnavailable, procTables[0])
	}
	return Row{}, ErrNotFound
}

func tcpAddrs(c net.Conn) (local, remote netip.AddrPort, err error) {
	l, ok1 := c.LocalAddr().(*net.TCPAddr)
	r, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return local, remote, fmt.Errorf("%w: not a TCP connection (%T)", ErrUnavailable, c)
	}
	return l.AddrPort(), r.AddrPort(), nil
}
