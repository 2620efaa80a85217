// Package peeruid tells which user owns the other end of a loopback TCP
// connection, so that the daemon's loopback listeners (the outbound proxy,
// the hosts-mode addresses) serve only processes of the user it runs for.
// A TCP socket has no peer credentials as a unix socket has; on Linux the
// kernel lists every socket with its owner's uid in /proc/net/tcp and
// /proc/net/tcp6, and the client's socket is the row whose local address
// is our peer's and whose remote address is ours.
package peeruid

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Row is one socket of /proc/net/tcp{,6}, as far as the lookup needs it.
type Row struct {
	Local, Remote netip.AddrPort
	UID           uint32
	// Inode is the socket's inode; 0 means no process holds the socket
	// any more (an orphan, or a time-wait entry, which the kernel lists
	// with uid 0).
	Inode uint64
}

// maxLine bounds a line of the table (a real one is about 150 bytes).
const maxLine = 4096

// findRow scans a /proc/net/tcp or tcp6 table for the socket whose local
// address is local and whose remote address is remote. Addresses are
// compared without IPv4-mapping, so a dual-stack client socket (listed in
// tcp6 as ::ffff:127.0.0.1) matches a peer seen by an IPv4 listener.
// order is the byte order the kernel printed the address words in (the
// machine's own: binary.NativeEndian). Malformed lines are skipped; a
// read error is returned.
func findRow(r io.Reader, local, remote netip.AddrPort, order binary.ByteOrder) (Row, bool, error) {
	local = unmap(local)
	remote = unmap(remote)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLine)
	for sc.Scan() {
		row, err := parseLine(sc.Text(), order)
		if err != nil {
			continue // the header, or a line of a format we do not know
		}
		if row.Local == local && row.Remote == remote {
			return row, true, nil
		}
	}
	return Row{}, false, sc.Err()
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// parseLine decodes one table line:
//
//	sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
//	 3: 0100007F:A7CB 0100007F:DCFC 01 00000000:00000000 00:00000000 00000000  1000  0 12345 ...
func parseLine(line string, order binary.ByteOrder) (Row, error) {
	f := strings.Fields(line)
	if len(f) < 10 || !strings.HasSuffix(f[0], ":") {
		return Row{}, errors.New("not a socket line")
	}
	local, err := parseAddrPort(f[1], order)
	if err != nil {
		return Row{}, err
	}
	remote, err := parseAddrPort(f[2], order)
	if err != nil {
		return Row{}, err
	}
	uid, err := strconv.ParseUint(f[7], 10, 32)
	if err != nil {
		return Row{}, fmt.Errorf("uid %q: %w", f[7], err)
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return Row{}, fmt.Errorf("inode %q: %w", f[9], err)
	}
	return Row{Local: local, Remote: remote, UID: uint32(uid), Inode: inode}, nil
}

// parseAddrPort decodes "0100007F:A7CB" (IPv4) or 32 hex digits and a port
// (IPv6). The kernel prints each 32-bit word of the address, which is in
// network byte order in memory, as a host-order integer; the port is
// printed as a number. IPv4-mapped IPv6 addresses come back as IPv4.
func parseAddrPort(s string, order binary.ByteOrder) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || len(p) != 4 {
		return netip.AddrPort{}, fmt.Errorf("address %q: want HEX:PORT", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port of %q: %w", s, err)
	}
	if len(a) != 8 && len(a) != 32 {
		return netip.AddrPort{}, fmt.Errorf("address %q: want 8 or 32 hex digits", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	// raw holds each word as printed (most significant byte first); turn
	// it back into the bytes the kernel had in memory.
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		order.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	var addr netip.Addr
	if len(b) == 4 {
		addr = netip.AddrFrom4([4]byte(b))
	} else {
		addr = netip.AddrFrom16([16]byte(b)).Unmap()
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
