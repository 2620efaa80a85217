package kube

import (
	"bytes"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/klog/v2"
)

// TestRouteKlog: client-go's klog lines go to the given logger while
// routed, and klog's own output is back afterwards.
func TestRouteKlog(t *testing.T) {
	var buf syncBuffer
	restore := RouteKlog(slog.New(slog.NewTextHandler(&buf, nil)))
	klog.ErrorS(errors.New("use of closed network connection"), "Unhandled Error")
	klog.Flush()
	restore()
	require.Contains(t, buf.String(), "Unhandled Error")
	require.Contains(t, buf.String(), "use of closed network connection")
	n := len(buf.String())
	klog.ErrorS(errors.New("after"), "not routed")
	klog.Flush()
	require.Len(t, buf.String(), n, "restored: nothing more reaches the logger")
}

// syncBuffer is a bytes.Buffer safe for klog's and the test's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
