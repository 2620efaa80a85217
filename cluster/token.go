package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

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
