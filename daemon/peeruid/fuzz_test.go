package peeruid

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzFindRow: the socket tables are read on every accepted connection;
// whatever they hold, the parser must not panic, and a row it returns
// must be the one asked for.
func FuzzFindRow(f *testing.F) {
	f.Add([]byte(tcp4Table), "127.0.0.1:56572", "127.246.0.1:8082")
	f.Add([]byte(tcp6Table), "127.0.0.1:57344", "127.246.0.1:8082")
	f.Add([]byte(tcp6Table), "[::1]:8080", "[::1]:50000")
	f.Add([]byte("   0: 0100007F:1F90 0100007F:C350 01 x x x 7 0 99 1\n"), "127.0.0.1:8080", "127.0.0.1:50000")
	f.Add([]byte(" 1: :: :: : : : : : : :\n"), "0.0.0.0:0", "0.0.0.0:0")
	f.Fuzz(func(t *testing.T, table []byte, local, remote string) {
		l, err1 := netip.ParseAddrPort(local)
		r, err2 := netip.ParseAddrPort(remote)
		if err1 != nil || err2 != nil {
			return
		}
		for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			row, found, err := findRow(bytes.NewReader(table), l, r, order)
			if err != nil || !found {
				continue
			}
			if row.Local != unmap(l) || row.Remote != unmap(r) {
				t.Fatalf("asked for %v→%v, got %+v", l, r, row)
			}
		}
	})
}
