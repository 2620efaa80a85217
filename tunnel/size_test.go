//go:build !race

package tunnel

// Full sizes outside the race detector, which slows copying ~10x.
const (
	bulkSize          = 64 << 20
	concurrentPayload = 16 << 10
)
