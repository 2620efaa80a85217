package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// RoutingKeyLength is the length of a routing key. 13 base36 characters
// carry about 67 bits: enough that two sandboxes never collide and nobody
// guesses another developer's key, short enough to type in a header.
const RoutingKeyLength = 13

const base36 = "0123456789abcdefghijklmnopqrstuvwxyz"

// NewRoutingKey returns a fresh random routing key: RoutingKeyLength
// lowercase base36 characters from crypto/rand.
func NewRoutingKey() (string, error) {
	b := make([]byte, RoutingKeyLength)
	out := make([]byte, 0, RoutingKeyLength)
	for len(out) < RoutingKeyLength {
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("generate routing key: %w", err)
		}
		for _, c := range b {
			// 252 = 7*36: rejecting larger bytes keeps the digits uniform.
			if c < 252 && len(out) < RoutingKeyLength {
				out = append(out, base36[c%36])
			}
		}
	}
	return string(out), nil
}

// ValidateRoutingKey checks that k has the shape NewRoutingKey produces. The
// key is embedded in regular expressions and object names, so nothing else
// is ever accepted.
func ValidateRoutingKey(k string) error {
	if len(k) != RoutingKeyLength {
		return fmt.Errorf("routing key %q must be exactly %d characters of [0-9a-z], it has %d", k, RoutingKeyLength, len(k))
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return fmt.Errorf("routing key %q has %q at position %d: only lowercase letters and digits [0-9a-z] are allowed", k, c, i+1)
		}
	}
	return nil
}

// TokenBytes is the entropy of a tunnel token.
const TokenBytes = 32

// NewToken returns a fresh tunnel token: TokenBytes random bytes, base64url
// encoded without padding. The daemon mints it and keeps it in its state
// file; the cluster only ever gets its SHA-256 (Options.TokenVerifier).
func NewToken() (string, error) {
	b := make([]byte, TokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate tunnel token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
