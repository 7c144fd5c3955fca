// Package stats holds the few statistics the benchmark programs under
// bench/ report: medians, ranges and nearest-rank percentiles.
package stats

import (
	"math"
	"slices"
	"time"
)

// Median is the median of v (the mean of the middle two for an even count),
// NaN when v is empty.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MedianOf is the median of f over xs.
func MedianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return Median(v)
}

// MinMax is the smallest and the largest of v (+Inf, -Inf when v is empty).
func MinMax(v []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// Rank is the nearest-rank p-th percentile (p in percent; 100 is the
// maximum) of sorted, which must not be empty: the smallest value with at
// least p % of the values at or below it. demo.Result.Percentile is the same
// rule.
func Rank[T int64 | float64 | time.Duration](sorted []T, p float64) T {
	r := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(r, 1), len(sorted))-1]
}
