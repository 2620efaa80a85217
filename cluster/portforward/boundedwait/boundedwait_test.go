package boundedwait

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestGroup(t *testing.T) {
	tests := []struct {
		name  string
		add   int
		done  int
		bound time.Duration
		want  bool
	}{
		{"never used", 0, 0, time.Hour, true},
		{"all finished", 2, 2, time.Hour, true},
		{"one still running", 2, 1, time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g Group
			g.Add(tt.add)
			for range tt.done {
				g.Done()
			}
			require.Equal(t, tt.want, g.Wait(tt.bound))
		})
	}
}

// Wait returns as soon as the last goroutine finishes, long before the
// bound; a fresh Add after that counts again.
func TestGroupWaitsForGoroutines(t *testing.T) {
	var g Group
	release := make(chan struct{})
	g.Add(1)
	go func() {
		defer g.Done()
		<-release
	}()
	close(release)
	require.True(t, g.Wait(time.Hour))

	g.Add(1)
	require.False(t, g.Wait(time.Millisecond), "a new goroutine is counted")
	g.Done()
	require.True(t, g.Wait(time.Hour))
}
