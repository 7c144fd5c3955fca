package stats

import (
	"math"
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	if m := Median(nil); !math.IsNaN(m) {
		t.Errorf("Median(nil) = %v, want NaN", m)
	}
	for _, tc := range []struct {
		v    []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(tc.v); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
	v := []float64{4, 1, 3}
	Median(v)
	if v[0] != 4 {
		t.Error("Median sorted its argument")
	}
	if got := MedianOf([]int{1, 9, 5}, func(i int) float64 { return float64(2 * i) }); got != 10 {
		t.Errorf("MedianOf = %v, want 10", got)
	}
	if lo, hi := MinMax([]float64{2, -1, 7}); lo != -1 || hi != 7 {
		t.Errorf("MinMax = %v, %v, want -1, 7", lo, hi)
	}
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{0: 1, 25: 250, 50: 500, 99: 990, 100: 1000} {
		if got := Rank(d, p); got != want {
			t.Errorf("Rank(1..1000, %v) = %v, want %v", p, got, want)
		}
	}
}
