// Package routingkey is the one definition of a sandbox's routing key and
// of the W3C baggage member that carries it: how a key is minted, what a
// valid key and a valid baggage key are, and the default baggage key.
//
// It imports nothing but the standard library, so that the packages that
// must stay free of the Kubernetes libraries (daemon/config, the tray) use
// the same rules as package cluster, which writes both into the mesh
// routes' regular expressions.
package routingkey

import (
	"crypto/rand"
	"fmt"
)

// Len is the length of a routing key. 13 base36 characters carry about 67
// bits: enough that two sandboxes never collide and nobody guesses another
// developer's key, short enough to type in a header.
const Len = 13

const base36 = "0123456789abcdefghijklmnopqrstuvwxyz"

// New returns a fresh random routing key: Len lowercase base36 characters
// from crypto/rand.
func New() string {
	b := make([]byte, Len)
	out := make([]byte, 0, Len)
	for len(out) < Len {
		// crypto/rand.Read never fails (Go 1.24+).
		_, _ = rand.Read(b)
		for _, c := range b {
			// 252 = 7*36: rejecting larger bytes keeps the digits uniform.
			if c < 252 && len(out) < Len {
				out = append(out, base36[c%36])
			}
		}
	}
	return string(out)
}

// Validate checks that k has the shape New produces. The key is embedded
// in regular expressions and object names, so nothing else is ever
// accepted.
func Validate(k string) error {
	if len(k) != Len {
		return fmt.Errorf("routing key %q must be exactly %d characters of [0-9a-z], it has %d", k, Len, len(k))
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return fmt.Errorf("routing key %q has %q at position %d: only lowercase letters and digits [0-9a-z] are allowed", k, c, i+1)
		}
	}
	return nil
}

// DefaultBaggageKey is the W3C baggage member that carries the routing key
// when the user config sets no baggageKey.
const DefaultBaggageKey = "sbx-routing-key"

// MaxBaggageKeyLen bounds a baggage key. W3C baggage sets no limit of its
// own below the header's 8192 bytes; the key is quoted into every keyed
// route's regular expression and typed into test requests, where anything
// longer is a mistake.
const MaxBaggageKeyLen = 256

// ValidateBaggageKey checks that name is a W3C baggage key: an RFC 7230
// token (visible ASCII except separators) of at most MaxBaggageKeyLen
// characters. A token may contain regexp metacharacters (. * + ^ | $):
// quote it before building a regexp from it.
func ValidateBaggageKey(name string) error {
	const token = "a baggage key is an HTTP token: letters, digits and !#$%&'*+-.^_`|~, no spaces, '=', ',' or ';'"
	if name == "" {
		return fmt.Errorf("baggage key must not be empty (default %q)", DefaultBaggageKey)
	}
	if len(name) > MaxBaggageKeyLen {
		return fmt.Errorf("baggage key %.20q… has %d characters; allowed at most %d (default %q)", name, len(name), MaxBaggageKeyLen, DefaultBaggageKey)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || isSeparator(c) {
			return fmt.Errorf("baggage key %q has %q at position %d: %s", name, c, i+1, token)
		}
	}
	return nil
}

func isSeparator(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
		return true
	}
	return false
}
