package sim

import (
	"log/slog"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// testLogger logs through t.Log so output appears only for failing tests.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func typesUID(s string) types.UID { return types.UID(s) }
