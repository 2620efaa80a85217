package pfbench_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sbx-dev/sbx/cluster/portforward"
	"github.com/sbx-dev/sbx/tools/testbed/linkshape"
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

// TestRunShapedSmall runs the shaped benchmark end to end through one
// small link with tiny transfers. It checks that the result is complete
// and that the shaping took effect, against the configured link only:
// nothing can come back through a 20 ms link in less than 20 ms, nor move
// much faster than its rate.
func TestRunShapedSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	link := linkshape.Link{Name: "small", RTT: 20 * time.Millisecond, Bandwidth: 50_000_000}
	var lines []string
	res, err := pfbench.RunShaped(ctx, pfbench.ShapedOptions{
		Links: []linkshape.Link{link}, Reps: 1, Streams: 2, PoolSize: 2,
		BulkBytes: 1 << 20, RTTSamples: 3, NewStreamSamples: 2,
		Progress: func(s string) { lines = append(lines, s) },
	})
	require.NoError(t, err)
	require.Len(t, lines, 1+4)
	require.Len(t, res.Links, 1)
	l := res.Links[0]
	require.Equal(t, "small", l.Name)
	require.InDelta(t, 20, l.RTTms, 1e-9)
	require.InDelta(t, 6.25, l.LinkMBps, 1e-9)

	b, err := json.Marshal(res)
	require.NoError(t, err)
	var doc struct {
		Links []map[string]any `json:"links"`
	}
	require.NoError(t, json.Unmarshal(b, &doc))
	for _, k := range []string{"tunnel_vs_link_throughput", "tunnel_vs_bare_throughput"} {
		require.Positive(t, doc.Links[0][k], k)
	}
	for name, v := range l.Ratios {
		require.Positive(t, v, name)
		require.Contains(t, l.Ranges, name)
	}
	require.Len(t, l.Ratios, 7)

	rtt := float64(link.RTT) / float64(time.Millisecond)
	for name, p := range map[string]pfbench.ShapedPath{"link": l.Link, "bare": l.Bare, "tunnel": l.Tunnel, "pool": l.Pool} {
		require.Positive(t, p.UploadMBps, name)
		require.Positive(t, p.DownloadMBps, name)
		require.Positive(t, p.ParallelMBps, name)
		require.Len(t, p.UploadRepsMBps, 1, name)
		for kind, lat := range map[string]pfbench.Latency{"rtt": p.RTT, "new stream": p.NewStream, "behind bulk": p.BehindBulk} {
			require.Positive(t, lat.Samples, "%s %s", name, kind)
			require.GreaterOrEqual(t, lat.P50ms, rtt, "%s %s", name, kind)
			require.GreaterOrEqual(t, lat.P99ms, lat.P50ms, "%s %s", name, kind)
			require.GreaterOrEqual(t, lat.P50RTTs, 1.0, "%s %s", name, kind)
		}
		require.Equal(t, 3, p.RTT.Samples, name)
		require.Equal(t, 2, p.NewStream.Samples, name)
	}
	// Raw TCP through the link is held to its rate (with room for the
	// timing of such short transfers); on loopback it would be hundreds
	// of MB/s.
	require.Less(t, l.Link.UploadMBps, 1.5*l.LinkMBps)
	require.Less(t, l.Link.DownloadMBps, 1.5*l.LinkMBps)
	require.Less(t, l.Link.ParallelMBps, 1.5*l.LinkMBps)
}

func TestRunShapedRefusesAnUnshapedLink(t *testing.T) {
	_, err := pfbench.RunShaped(context.Background(), pfbench.ShapedOptions{Links: []linkshape.Link{{Name: "none"}}})
	require.ErrorContains(t, err, "link none: neither a round trip nor a bandwidth")
	_, err = pfbench.RunShaped(context.Background(), pfbench.ShapedOptions{})
	require.Error(t, err)
}
