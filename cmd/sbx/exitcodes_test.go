package main

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExitCodesAsTheREADMESays runs the example of every row of the
// README's exit-code table and checks the code it names.
func TestExitCodesAsTheREADMESays(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| (\\d+) \\| [^|]+ \\| `([^`]+)`([^|]*)\\|$")
	rows := row.FindAllStringSubmatch(string(readme), -1)
	require.Len(t, rows, 4, "the README's exit-code table")
	seen := map[int]bool{}
	for _, r := range rows {
		code, _ := strconv.Atoi(r[1])
		seen[code] = true
		args := strings.Fields(r[2])[1:] // without "sbx"
		how := strings.TrimSpace(r[3])
		t.Run(r[1], func(t *testing.T) {
			cliEnv(t)
			switch {
			case how == "":
				got, _, errOut := runCLI(t, args...)
				require.Equal(t, code, got, "`%s`: %s", r[2], errOut)
			case how == "with no daemon running":
				got, _, errOut := runCLI(t, args...)
				require.Equal(t, code, got, "`%s`: %s", r[2], errOut)
				require.Contains(t, errOut, "not running")
			case strings.HasPrefix(how, ", then Ctrl-C"):
				startInProcessDaemon(t, &cliCluster{ready: make(chan struct{})})
				got, _, _ := runCLIWhen(t, func(out string) bool { return strings.Contains(out, "sbx daemon test") },
					func(_ string, interrupt context.CancelFunc) { interrupt() }, args...)
				require.Equal(t, code, got, "`%s` then Ctrl-C", r[2])
			default:
				t.Fatalf("the test does not know how to run %q %q", r[2], how)
			}
		})
	}
	for _, c := range []int{0, 1, 2, 130} {
		require.True(t, seen[c], "exit code %d has a row", c)
	}
}
