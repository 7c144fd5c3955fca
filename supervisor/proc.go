//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// errNoProc means /proc does not show baton's own PID namespace.
var errNoProc = errors.New("/proc does not show baton's PID namespace")

// rssReader returns the RSS reader for BATON_MAX_RSS. In a PID namespace
// without a /proc of its own (unshare -p without --mount-proc, the test
// harness), /proc/PID is some other process: better no number than a
// stranger's. That is decided once, not on every check.
func rssReader() func(pid int) (int64, error) {
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		return func(int) (int64, error) { return 0, errNoProc }
	}
	return readRSS
}

// readRSS returns a process's resident set size in bytes, from the second
// field of /proc/PID/statm (in pages).
func readRSS(pid int) (int64, error) {
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
