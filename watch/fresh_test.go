package watch

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func ctimeOf(t *testing.T, p string) time.Time {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return time.Unix(st.Ctim.Unix())
}

// TestFreshRule checks on this kernel and the test's file system what the baseline relies on
// (baseline.go): with t0 from coarseAfter, a change made before it was called is not fresh, not
// even the fine multigrain stamp of a directory stat'ed just before (as os.MkdirAll does), and
// any change made after it returned is.
func TestFreshRule(t *testing.T) {
	base := t.TempDir()
	var waited time.Duration
	const rounds = 100
	for i := range rounds {
		d := filepath.Join(base, "d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		ctimeOf(t, d) // looked at: its next change may get a fine stamp
		write(t, filepath.Join(d, "before"), "x")
		called := time.Now()
		t0 := coarseAfter(called)
		waited += time.Since(called)
		for _, p := range []string{d, filepath.Join(d, "before")} {
			if ct := ctimeOf(t, p); changedSince(ct, t0) {
				t.Fatalf("round %d: %s changed before New (ctime %v) but counts as fresh (t0 %v)", i, p, ct.Format(time.StampNano), t0.Format(time.StampNano))
			}
		}
		write(t, filepath.Join(d, "before"), "y")
		if ct := ctimeOf(t, filepath.Join(d, "before")); !changedSince(ct, t0) {
			t.Fatalf("round %d: a file rewritten after New (ctime %v) is not fresh (t0 %v)", i, ct.Format(time.StampNano), t0.Format(time.StampNano))
		}
		write(t, filepath.Join(d, "after"), "x")
		if ct := ctimeOf(t, d); !changedSince(ct, t0) {
			t.Fatalf("round %d: a file created after New: its directory (ctime %v) is not fresh (t0 %v)", i, ct.Format(time.StampNano), t0.Format(time.StampNano))
		}
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("waited for the coarse clock %v on average", waited/rounds)
}

// TestChangedSinceWholeSeconds: a whole-second stamp stands for a change up to 2 s later.
func TestChangedSinceWholeSeconds(t *testing.T) {
	s := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		ct, t0 time.Time
		want   bool
	}{
		{s, s.Add(1500 * time.Millisecond), true},
		{s, s.Add(2 * time.Second), false},
		{s, s.Add(-time.Second), true},
		{s.Add(time.Nanosecond), s.Add(time.Nanosecond), true},
		{s.Add(time.Nanosecond), s.Add(2 * time.Nanosecond), false},
	} {
		if got := changedSince(tc.ct, tc.t0); got != tc.want {
			t.Errorf("changedSince(%v, %v) = %v", tc.ct.Format(time.StampNano), tc.t0.Format(time.StampNano), got)
		}
	}
}
