package cluster

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sbx-dev/sbx/cluster/routingkey"
)

func TestBaggageRegex(t *testing.T) {
	const k = "k3x9a0b1c2d3e"
	re, err := BaggageRegex(routingkey.DefaultBaggageKey, k)
	require.NoError(t, err)
	// Envoy's safe_regex matches the whole value; Linkerd's proxy searches
	// for the leftmost match. The anchored expression answers the same
	// under both.
	full := regexp.MustCompile(`^(?:` + re + `)$`)
	search := regexp.MustCompile(re)
	require.True(t, strings.HasPrefix(re, "^") && strings.HasSuffix(re, "$"), re)

	tests := []struct {
		header string
		match  bool
	}{
		{"sbx-routing-key=" + k, true},
		{"sbx-routing-key = " + k, true},
		{"sbx-routing-key=\t" + k + "\t", true},
		{"  sbx-routing-key=" + k + "  ", true},
		{"a=1,sbx-routing-key=" + k, true},
		{"a=1, sbx-routing-key=" + k, true},
		{"a=1 , sbx-routing-key=" + k + " , b=2", true},
		{"sbx-routing-key=" + k + ",b=2", true},
		{"sbx-routing-key=" + k + ";prop=1", true},
		{"sbx-routing-key=" + k + " ; prop ; other=x,b=2", true},
		{"a=1;p=2,sbx-routing-key=" + k + ";q", true},
		{"x=y,z=w,sbx-routing-key=" + k + ",t=u", true},
		{"sbx-routing-key=other0000000,sbx-routing-key=" + k, true},
		{"userId=alice,sbx-routing-key=" + k + ",isProduction=false", true},

		{"", false},
		{"sbx-routing-key=", false},
		{"sbx-routing-key=" + k + "x", false},          // a key that merely starts with k
		{"sbx-routing-key=" + k + "0;p", false},        // same, with a property
		{"sbx-routing-key=" + k[:12], false},           // prefix of k
		{"sbx-routing-key=x" + k, false},               // k as a suffix
		{"my-sbx-routing-key=" + k, false},             // a longer key containing the name
		{"a=1,my-sbx-routing-key=" + k, false},         // same, later in the list
		{"sbx-routing-key-2=" + k, false},              // the name as a prefix of another key
		{"sbx-routing-keyx=" + k, false},               // same without dash
		{"a=1;sbx-routing-key=" + k, false},            // a property, not a member
		{"a=sbx-routing-key=" + k, false},              // inside another member's value
		{"sbx-routing-key=other0000000", false},        // another sandbox
		{"SBX-ROUTING-KEY=" + k, false},                // keys are case-sensitive
		{"sbx-routing-key=" + "K3X9A0B1C2D3E", false},  // values too
		{"sbx-routing-key:" + k, false},                // not baggage syntax
		{"a=" + k, false},                              // key absent
		{"sbx_routing_key=" + k, false},                // similar key
		{"sbx-routing-key=" + k + "\n", false},         // no newlines in header values
		{"sbx-routing-keysbx-routing-key=" + k, false}, // doubled name
	}
	require.GreaterOrEqual(t, len(tests), 25)
	for _, tt := range tests {
		require.Equal(t, tt.match, full.MatchString(tt.header), "header %q against %s", tt.header, re)
		require.Equal(t, tt.match, search.MatchString(tt.header), "header %q searched with %s", tt.header, re)
	}
}

func TestBaggageRegexCustomKey(t *testing.T) {
	const k = "0000000000000"
	re, err := BaggageRegex("x.sbx+key", k)
	require.NoError(t, err)
	full := regexp.MustCompile(`^(?:` + re + `)$`)
	require.True(t, full.MatchString("x.sbx+key="+k))
	require.False(t, full.MatchString("xasbx+key="+k), "dot is literal")
	require.False(t, full.MatchString("x.sbxxkey="+k), "plus is literal")
}

func TestBaggageRegexRejectsBadInput(t *testing.T) {
	_, err := BaggageRegex("bad key", "k3x9a0b1c2d3e")
	require.ErrorContains(t, err, "baggage key")
	_, err = BaggageRegex("", "k3x9a0b1c2d3e")
	require.Error(t, err)
	_, err = BaggageRegex(routingkey.DefaultBaggageKey, "a.*")
	require.ErrorContains(t, err, "routing key")
}

func TestNewToken(t *testing.T) {
	tok, err := NewToken()
	require.NoError(t, err)
	require.Len(t, tok, 43)
}
