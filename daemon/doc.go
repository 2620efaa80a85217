// Package daemon is the laptop daemon: one session per sandbox with a
// reconnecting supervisor, inbound mapping to local addresses, outbound
// access, the local API on a unix socket and its Go client.
package daemon
