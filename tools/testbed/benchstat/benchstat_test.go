package benchstat

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	require.Equal(t, 2.0, Median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, Median([]float64{4, 1, 2, 3}))
	require.Equal(t, 0.0, Median(nil))
	v := []float64{3, 1, 2}
	Median(v)
	require.Equal(t, []float64{3, 1, 2}, v, "the input is left as it was")
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{10, 20, 30, 40, 50}
	require.Equal(t, time.Duration(10), Percentile(d, 0))
	require.Equal(t, time.Duration(30), Percentile(d, 0.5))
	require.Equal(t, time.Duration(50), Percentile(d, 0.99))
	require.Equal(t, time.Duration(50), Percentile(d, 1))
	require.Equal(t, time.Duration(50), Percentile(d, 7), "q is clamped")
	require.Equal(t, 0.0, Percentile([]float64(nil), 0.5))
}

func TestMedianCI(t *testing.T) {
	seq := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[len(v)-1-i] = float64(i) // unsorted on purpose
		}
		return v
	}
	// Known order statistics of the 95% interval for the median (as in
	// standard tables): n=10 → 2nd..9th, n=15 → 4th..12th, n=31 →
	// 10th..22nd, n=100 → 40th..61st (1-based).
	for _, c := range []struct{ n, lo, hi int }{{10, 2, 9}, {15, 4, 12}, {31, 10, 22}, {100, 40, 61}} {
		lo, hi := MedianCI(seq(c.n), 0.95)
		require.Equal(t, float64(c.lo-1), lo, "n=%d", c.n)
		require.Equal(t, float64(c.hi-1), hi, "n=%d", c.n)
	}
	// Too few samples for 95%: the whole range.
	lo, hi := MedianCI([]float64{5, 1, 3}, 0.95)
	require.Equal(t, []float64{1, 5}, []float64{lo, hi})
	lo, hi = MedianCI(nil, 0.95)
	require.Equal(t, []float64{0, 0}, []float64{lo, hi})
	// A lower level gives a narrower interval.
	lo80, hi80 := MedianCI(seq(31), 0.80)
	require.Greater(t, lo80, 9.0)
	require.Less(t, hi80, 21.0)
}
