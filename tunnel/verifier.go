package tunnel

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// TokenVerifier is what a relay keeps instead of the tunnel token: the
// token's SHA-256. It can check a Hello's token but cannot produce one, so
// it may sit where others can read it (the relay Deployment's args) without
// letting them authenticate as the daemon.
//
// A plain, fast hash is enough because the daemon mints the token from 256
// random bits: there is nothing to guess or to try from a dictionary, so a
// slow password hash (bcrypt, argon2) would only make every Hello cost more.
type TokenVerifier [sha256.Size]byte

// VerifierOf returns the verifier of token.
func VerifierOf(token string) TokenVerifier {
	return sha256.Sum256([]byte(token))
}

// ParseTokenVerifier reads a verifier in the form String writes: 64 hex
// digits (either case), the output of `printf %s "$TOKEN" | sha256sum`.
func ParseTokenVerifier(s string) (TokenVerifier, error) {
	var v TokenVerifier
	if len(s) != hex.EncodedLen(len(v)) {
		return TokenVerifier{}, fmt.Errorf("a token verifier is %d hex digits (the SHA-256 of the token), got %d characters", hex.EncodedLen(len(v)), len(s))
	}
	if _, err := hex.Decode(v[:], []byte(s)); err != nil {
		// Not the decoder's error: it would quote a character of what may
		// be a token passed by mistake.
		return TokenVerifier{}, fmt.Errorf("a token verifier is %d hex digits (the SHA-256 of the token); this one has other characters", hex.EncodedLen(len(v)))
	}
	return v, nil
}

// String returns the verifier as lowercase hex.
func (v TokenVerifier) String() string { return hex.EncodeToString(v[:]) }

// IsZero reports whether v is unset.
func (v TokenVerifier) IsZero() bool { return v == TokenVerifier{} }

// Verify reports whether token is the token v was made from. The digests
// are compared in constant time (crypto/subtle), so the time taken tells
// nothing about how much of the token was right. An empty token never
// matches, nor does anything match the zero verifier.
func (v TokenVerifier) Verify(token string) bool {
	sum := sha256.Sum256([]byte(token))
	ok := subtle.ConstantTimeCompare(sum[:], v[:]) == 1
	return ok && token != "" && !v.IsZero()
}
