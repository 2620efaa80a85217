//go:build windows

package api

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultPathsFallback(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Paths
	}{
		{"localappdata", map[string]string{"HOME": `C:\Users\a`, "LOCALAPPDATA": `D:\local`},
			Paths{RuntimeDir: `D:\local\sbx`, StateDir: `D:\local\sbx\state`}},
		{"profile only", map[string]string{"HOME": `C:\Users\a`},
			Paths{RuntimeDir: `C:\Users\a\AppData\Local\sbx`, StateDir: `C:\Users\a\AppData\Local\sbx\state`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, DefaultPaths(func(k string) string { return tt.env[k] }))
		})
	}
}
