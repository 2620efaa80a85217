package pfbench_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/pfbench"
	"github.com/sbx-dev/sbx/tunnel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// The kubelet handler (cri-streaming) blocks forever closing a stream
		// whose reply could not be sent because the connection died during
		// setup: a known leak of the real kubelet code, not of sbx.
		goleak.IgnoreAnyFunction("github.com/moby/spdystream.(*Stream).waitWriteReply"),
	)
}

// TestRunSmall runs the whole benchmark with small sizes: it checks that
// every path carries traffic and that the result is complete, never the
// timings themselves.
func TestRunSmall(t *testing.T) {
	for _, tr := range []portforward.Transport{portforward.TransportAuto, portforward.TransportSPDY} {
		t.Run(string(tr)+"/", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var lines []string
			split := tunnel.PortForwardConfig()
			split.SplitHeaderWrites = true
			res, err := pfbench.Run(ctx, pfbench.Options{
				Reps: 2, Streams: 2, BulkBytes: 1 << 20, RTTSamples: 20, PoolSize: 3, Transport: tr,
				Variants: []pfbench.Variant{{Name: "split", Tunnel: &split}},
				Progress: func(s string) { lines = append(lines, s) },
			})
			require.NoError(t, err)
			require.Len(t, lines, 10)
			require.Len(t, res.Variants, 1)
			for _, p := range []pfbench.Path{res.Variants[0].Tunnel, res.Variants[0].Pool} {
				require.Positive(t, p.ThroughputMBps)
			}
			for _, name := range []string{"tunnel_throughput", "pool_throughput", "tunnel_rtt"} {
				require.Positive(t, res.Variants[0].Ratios[name], name)
			}
			for _, p := range []pfbench.Path{res.Bare, res.Tunnel, res.Pool} {
				require.Positive(t, p.ThroughputMBps)
				require.Len(t, p.ThroughputRepsMBps, 2)
				require.Positive(t, p.RTTP50us)
				require.GreaterOrEqual(t, p.RTTP99us, p.RTTP50us)
			}
			require.Positive(t, res.TunnelVsBareThroughput)
			require.Positive(t, res.PoolVsBareThroughput)
			require.Positive(t, res.TunnelVsBareRTT)
			require.Len(t, res.Pass, 3)
			require.Len(t, res.CI95, 3)
			for name, ci := range res.CI95 {
				require.LessOrEqual(t, ci[0], ci[1], name)
				require.Positive(t, ci[0], name)
			}
			require.GreaterOrEqual(t, res.PoolVsBareThroughput, res.CI95["pool_vs_bare_throughput"][0])
			require.LessOrEqual(t, res.PoolVsBareThroughput, res.CI95["pool_vs_bare_throughput"][1])
		})
	}
}

func TestRunCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := pfbench.Run(ctx, pfbench.Options{Reps: 1})
	require.Error(t, err)
}
