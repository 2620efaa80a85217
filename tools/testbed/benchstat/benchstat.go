// Package benchstat holds the order statistics sbx's benchmarks report
// (sbx bench tunnel, sbx bench portforward): medians, percentiles, and a
// confidence interval for a median, so that a figure comes with how far a
// rerun could move it.
package benchstat

import (
	"cmp"
	"math"
	"slices"
)

// Median is the median of v (the mean of the middle two for an even
// count), 0 for none. v is not modified.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Percentile is the q-quantile (0 ≤ q ≤ 1) of sorted by nearest rank, the
// zero value for none.
func Percentile[T cmp.Ordered](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	q = min(max(q, 0), 1)
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

// MedianCI is a distribution-free confidence interval, at the given level
// (0.95 for 95%), for the median of the population v was drawn from: the
// pair of order statistics the binomial distribution puts around the
// median. It assumes independent samples and nothing about their
// distribution. With too few samples for the level it is the whole range;
// with none, 0, 0.
func MedianCI(v []float64, level float64) (lo, hi float64) {
	n := len(v)
	if n == 0 {
		return 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	// The interval [s[j], s[n-1-j]] misses the median only when at most j
	// samples fall on one side of it: probability 2·P(Bin(n, ½) ≤ j). Take
	// the largest j that keeps that within 1-level.
	alpha := 1 - level
	j, cdf := -1, 0.0
	for k := 0; k < n/2; k++ {
		cdf += binomHalf(n, k)
		if 2*cdf > alpha {
			break
		}
		j = k
	}
	if j < 0 {
		return s[0], s[n-1]
	}
	return s[j], s[n-1-j]
}

// binomHalf is P(Bin(n, ½) = k), through logarithms so that large n does
// not overflow.
func binomHalf(n, k int) float64 {
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x + 1)); return v }
	return math.Exp(lg(n) - lg(k) - lg(n-k) - float64(n)*math.Ln2)
}
