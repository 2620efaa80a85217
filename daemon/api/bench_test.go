package api

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFormatMS(t *testing.T) {
	for v, want := range map[float64]string{0.0271: "0.027 ms", 0.999: "0.999 ms", 1: "1.0 ms", 12.34: "12.3 ms", 99.9: "99.9 ms", 100: "100 ms", 1234.5: "1234 ms"} {
		require.Equal(t, want, FormatMS(v), "%v", v)
	}
}
