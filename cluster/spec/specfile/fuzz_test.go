package specfile

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbx-dev/sbx/cluster/spec"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, every
// failure must be a located spec.ErrorList, and every success must validate
// again and survive the JSON round trip the CLI uses to talk to the daemon.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"valid/*.yaml", "invalid/*.yaml"} {
		files, _ := filepath.Glob(filepath.Join(specsDir, pattern))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("name: '@{name}@{embed: x}'\nspec: {local: [{name: a, from: {kind: Deployment, namespace: b, name: c}, mappings: [{port: '1', toLocal: 'h:1'}]}]}"))
	f.Add([]byte("a: &a [*a]"))
	vars := map[string]string{"name": "alice", "port": "8083"}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Embeds resolve inside an empty temp dir so the fuzzer cannot
		// read the source tree.
		s, err := Parse(filepath.Join(t.TempDir(), "fuzz.yaml"), data, vars)
		if err != nil {
			var list spec.ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is not a non-empty ErrorList: %T %v", err, err)
			}
			for _, fe := range list {
				if fe.Message == "" {
					t.Fatalf("empty message in %v", list)
				}
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("parsed spec does not validate: %v", err)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back spec.Sandbox
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("round-tripped spec does not validate: %v", err)
		}
	})
}
