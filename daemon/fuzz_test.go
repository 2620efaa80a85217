package daemon

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbx-dev/sbx/daemon/api"
)

// FuzzConnectRequest feeds arbitrary bodies to the connect endpoint's
// decoding and validation: it must answer 400 or accept, never panic.
func FuzzConnectRequest(f *testing.F) {
	good, _ := json.Marshal(api.ConnectRequest{Spec: testSpec("alice", "localhost:8083"), Wait: true})
	f.Add(good)
	f.Add([]byte(`{"spec":{"name":"a","spec":{"local":[]}}}`))
	f.Add([]byte(`{"spec":{"name":"a","spec":{"local":[{"name":"r","from":{"kind":"Deployment","namespace":"n","name":"r"},"mappings":[{"port":70000,"toLocal":"x"}]}]}}}`))
	f.Add([]byte(`{"timeoutNanos":-1}`))
	f.Add([]byte(`{"unknown":1}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPut, "/v1/sandboxes/alice", bytes.NewReader(body))
		var cr api.ConnectRequest
		if err := readJSON(req, &cr); err != nil {
			if !strings.Contains(err.Error(), "invalid request body") {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		_ = validateRequestSpec(&cr)
	})
}

// FuzzStateFile loads arbitrary state files: an error or sandboxes, never
// a panic.
func FuzzStateFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"sandboxes":[{"name":"alice","routingKey":"k","spec":{"name":"alice","spec":{"local":[]}}}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{`))
	f.Add([]byte(``))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "state.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		sf := &stateFile{path: p}
		_, _ = sf.Load()
	})
}
