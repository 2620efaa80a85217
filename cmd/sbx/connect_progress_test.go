package main

import (
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/daemon/api"
	"github.com/stretchr/testify/require"
)

// TestProgressPrinterSaysAnErrorOnce: retries failing the same way print
// the long message once, then a short line each; a new error is printed
// in full.
func TestProgressPrinterSaysAnErrorOnce(t *testing.T) {
	var b strings.Builder
	var pr progressPrinter
	long := "apply the cluster objects: " + strings.Repeat("x", 300)
	pr.print(&b, api.Progress{Phase: api.PhaseApplying, Message: "applying"})
	for range 3 {
		pr.print(&b, api.Progress{Phase: api.PhaseReconnecting, Error: long})
	}
	pr.print(&b, api.Progress{Phase: api.PhaseReconnecting, Error: "another"})
	require.Equal(t, 1, strings.Count(b.String(), long), b.String())
	require.Contains(t, b.String(), "  ! the same error again (2 times now)\n  ! the same error again (3 times now)\n  ! another\n")
}
