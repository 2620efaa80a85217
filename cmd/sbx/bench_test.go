package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBenchFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bad reps", []string{"bench", "tunnel", "--reps", "0"}, "--reps 0 is not positive"},
		{"bad window", []string{"bench", "tunnel", "--stream-window", "1024"}, "MaxStreamWindow"},
		{"bad output", []string{"bench", "tunnel", "-o", "yaml"}, `output format "yaml" is not supported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, c.args...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, c.want)
			require.Contains(t, errOut, "hint:")
		})
	}
	code, out, _ := runCLI(t, "bench", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "tunnel")
}
