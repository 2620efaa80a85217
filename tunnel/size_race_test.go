//go:build race

package tunnel

// Smaller sizes under the race detector (2 shared cores); the full sizes
// run in the normal test pass.
const (
	bulkSize          = 8 << 20
	concurrentPayload = 2 << 10
)
