// Package figures is where tests that measure (the fault matrix, the
// relay under a flood, connect and reconnect times on the real control
// plane) put their figures: in the test log and, when SBX_FIGURES_DIR
// names a folder (make test-unit and make test-real set it), in a file
// there, which make prints after the run, since go test keeps a passing
// test's log to itself.
package figures

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Save logs a test's figures under title and writes them to
// $SBX_FIGURES_DIR/<test name>.txt when that is set.
func Save(t testing.TB, title, text string) {
	t.Helper()
	t.Log(title + ":\n" + text)
	dir := os.Getenv("SBX_FIGURES_DIR")
	if dir == "" {
		return
	}
	name := filepath.Join(dir, strings.NewReplacer(" ", "-", "/", "-").Replace(t.Name())+".txt")
	if err := os.WriteFile(name, []byte("== "+title+" ("+t.Name()+")\n"+strings.TrimRight(text, "\n")+"\n"), 0o644); err != nil {
		t.Errorf("save figures: %v", err)
	}
}
