//go:build linux

package handoff

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// readRSS returns a process's resident set size in bytes, from the second
// field of /proc/PID/statm (in pages).
func readRSS(pid int) (int64, error) {
	// In a PID namespace without a /proc of its own (unshare -p without
	// --mount-proc, a test harness), /proc/PID is some other process:
	// better no number than a stranger's.
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		return 0, fmt.Errorf("/proc does not show baton's PID namespace: RSS of %d unknown", pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/statm: short read", pid)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/statm: %w", pid, err)
	}
	return pages * int64(os.Getpagesize()), nil
}
