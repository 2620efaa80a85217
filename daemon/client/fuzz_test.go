package client

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/sbx-dev/sbx/daemon/api"
)

// FuzzWatchStream feeds arbitrary NDJSON to the client's watch decoder.
func FuzzWatchStream(f *testing.F) {
	f.Add([]byte(`{"snapshot":{"version":"v","pid":1,"logPath":"","sandboxes":[]}}` + "\n" + `{"removed":"a"}` + "\n"))
	f.Add([]byte(`{"error":"` + api.WatchDroppedMessage + `"}` + "\n"))
	f.Add([]byte(`{"sandbox":{"name":"a","rttNanos":"x"}}`))
	f.Add([]byte(`{"configError":null}{"error":"bye"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w := &Watcher{body: io.NopCloser(bytes.NewReader(data))}
		w.dec = json.NewDecoder(w.body)
		for range 100 {
			if _, err := w.Next(); err != nil {
				return
			}
		}
	})
}
