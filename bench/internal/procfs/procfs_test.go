package procfs

import (
	"os"
	"testing"
)

func TestSchedNS(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc")
	}
	// Burn some CPU so that the sum is above zero.
	x := 0
	for i := 0; i < 1e7; i++ {
		x += i
	}
	_ = x
	if ns, ok := SchedNS(os.Getpid()); !ok || ns <= 0 {
		t.Errorf("SchedNS(self) = %d, %v; want > 0, true", ns, ok)
	}
	if _, ok := SchedNS(1 << 30); ok {
		t.Error("SchedNS of a pid that does not exist: ok")
	}
}
