package tunnel

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestWriteFuzzSeeds regenerates testdata/fuzz from the seed functions when
// SBX_WRITE_FUZZ_SEEDS=1; otherwise it checks that the files exist.
func TestWriteFuzzSeeds(t *testing.T) {
	targets := map[string][][]byte{
		"FuzzReadHeader":    headerSeeds(),
		"FuzzReadReply":     replySeeds(),
		"FuzzControlFrame":  controlSeeds(),
		"FuzzDecodeHello":   helloSeeds(),
		"FuzzDecodeWelcome": welcomeSeeds(),
	}
	write := os.Getenv("SBX_WRITE_FUZZ_SEEDS") == "1"
	for name, seeds := range targets {
		dir := filepath.Join("testdata", "fuzz", name)
		if write {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i, s := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			if !write {
				if _, err := os.Stat(path); err != nil {
					t.Fatalf("seed corpus missing (run with SBX_WRITE_FUZZ_SEEDS=1): %v", err)
				}
				continue
			}
			content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
