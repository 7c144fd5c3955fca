// Package procfs reads what the benchmark programs under bench/ measure in
// /proc.
package procfs

import (
	"os"
	"strconv"
	"strings"
)

// SchedNS is the CPU time (ns) process pid has used so far: the sum of the
// first field of /proc/PID/task/*/schedstat, every thread's run time
// (threads that already exited are not counted). ok is false when the
// process is gone.
func SchedNS(pid int) (ns int64, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			ns += n
		}
	}
	return ns, true
}
