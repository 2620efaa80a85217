//go:build !linux

package daemon

import "net"

// peerUID is not implemented here. On macOS the socket's 0600 mode in a
// 0700 directory is the protection; on Windows AF_UNIX has no peer
// credentials and the socket inherits the ACL of the per-user directory it
// lives in (see socket_windows.go).
func peerUID(net.Conn) (int, bool) { return 0, false }
