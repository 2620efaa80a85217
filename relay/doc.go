// Package relay is the in-cluster end of an sbx sandbox: it accepts tunnel
// sessions from the laptop daemon, listens on the sandbox's inbound ports and
// dials cluster destinations for outbound streams under a dial policy.
package relay
