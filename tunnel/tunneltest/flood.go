package tunneltest

import (
	"encoding/binary"
	"net"
)

// PreAuthFlood writes what an unauthenticated peer sent to make an early
// relay (one that started its multiplexer before the handshake) buffer a
// quarter of a GiB per connection: yamux frames opening streams and
// filling their windows, as fast as conn takes them, until stop closes or
// a write fails.
func PreAuthFlood(conn net.Conn, stop <-chan struct{}) {
	payload := make([]byte, 64<<10)
	hdr := make([]byte, 12)
	for id := uint32(1); ; id += 2 {
		select {
		case <-stop:
			return
		default:
		}
		// A window update with SYN opens stream id, then a data frame.
		hdr[0], hdr[1] = 0, 1
		binary.BigEndian.PutUint16(hdr[2:4], 1)
		binary.BigEndian.PutUint32(hdr[4:8], id)
		binary.BigEndian.PutUint32(hdr[8:12], 0)
		if _, err := conn.Write(hdr); err != nil {
			return
		}
		hdr[1] = 0
		binary.BigEndian.PutUint16(hdr[2:4], 0)
		binary.BigEndian.PutUint32(hdr[8:12], uint32(len(payload)))
		if _, err := conn.Write(hdr); err != nil {
			return
		}
		if _, err := conn.Write(payload); err != nil {
			return
		}
	}
}
