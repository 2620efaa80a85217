// Package tunnel is sbx's wire protocol on top of yamux: the session
// handshake, data-stream headers and replies, half-close piping, keepalive,
// and a pool of sessions to one peer. Both ends use the same code; which end
// dials is configuration. See PROTOCOL.md next to this file.
package tunnel
