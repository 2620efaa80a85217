package routingkey

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k := New()
		require.Regexp(t, `^[0-9a-z]{13}$`, k)
		require.NoError(t, Validate(k))
		require.False(t, seen[k])
		seen[k] = true
	}
}

func TestValidate(t *testing.T) {
	require.NoError(t, Validate("k3x9a0b1c2d3e"))
	for _, tt := range []struct{ in, want string }{
		{"", `routing key "" must be exactly 13 characters of [0-9a-z], it has 0`},
		{"abc", "it has 3"},
		{"k3x9a0b1c2d3ee", "it has 14"},
		{"K3X9A0B1C2D3E", `has 'K' at position 1: only lowercase letters and digits`},
		{"k3x9a0b1c2d3-", `has '-' at position 13`},
		{"k3x9a0b1c2d3.", `has '.' at position 13`},
	} {
		require.ErrorContains(t, Validate(tt.in), tt.want, tt.in)
	}
}

func TestValidateBaggageKey(t *testing.T) {
	for _, ok := range []string{DefaultBaggageKey, "x.sbx+key", "!#$%&'*+-.^_`|~09AZaz", strings.Repeat("k", MaxBaggageKeyLen)} {
		require.NoError(t, ValidateBaggageKey(ok), ok)
	}
	for _, tt := range []struct{ in, want string }{
		{"", `baggage key must not be empty (default "sbx-routing-key")`},
		{"my key", `baggage key "my key" has ' ' at position 3: a baggage key is an HTTP token`},
		{"a=b", `has '=' at position 2`},
		{"a,b", `has ',' at position 2`},
		{"a;b", `has ';' at position 2`},
		{"a\x7fb", `has '\x7f' at position 2`},
		{"ключ", `at position 1`},
		{strings.Repeat("k", MaxBaggageKeyLen+1), "has 257 characters; allowed at most 256"},
	} {
		require.ErrorContains(t, ValidateBaggageKey(tt.in), tt.want, tt.in)
	}
}
