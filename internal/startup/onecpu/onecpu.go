//go:build linux && !onecpu_off

// Package onecpu runs every thread of the process on one CPU for a short
// stretch of work, then puts each thread back on the CPUs it may use.
//
// baton needs it for one thing: subscribing to every signal before the
// first worker starts. Each signal.Notify of a new signal is a round trip
// between the calling thread and the runtime's signal-mask thread; when the
// two sleep on different CPUs, each wake-up crosses CPUs, and on a 2-CPU VM
// the 57 subscriptions took 1.5-2.9 ms. With every thread on one CPU the
// hand-offs are plain context switches, and the same subscriptions took
// 0.15-0.3 ms (measured before this package was written; bench/init times
// the whole start).
//
// It uses /proc/self/task to find the threads, and only when /proc is this
// process's own (the PID namespace's /proc, as in any container); otherwise,
// or with only one CPU allowed, Hold does nothing and the work runs as it
// would anyway. A thread it misses only makes the work slower.
package onecpu

import (
	"errors"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxRestorePasses bounds the passes that look for threads created while
// the process was held (they inherit the one-CPU mask from their creator).
const maxRestorePasses = 8

// Hold moves every thread of the process to the CPU the caller runs on and
// returns the function that undoes it. Release must be called before the
// process starts a child: a child inherits its forking thread's mask.
func Hold() (release func()) {
	noop := func() {}
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil || orig.Count() < 2 {
		return noop
	}
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		return noop // not our /proc: its thread ids are some other namespace's
	}
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 || !orig.IsSet(int(cpu)) {
		return noop
	}
	var one unix.CPUSet
	one.Set(int(cpu))
	for _, tid := range tasks() {
		_ = unix.SchedSetaffinity(tid, &one) // a thread that is gone or refuses only stays where it is
	}
	return func() { restore(&orig) }
}

// restore gives every thread orig again, including threads created while
// the process was held, until a pass finds no thread it has not seen.
func restore(orig *unix.CPUSet) {
	seen := map[int]bool{}
	for pass := 0; pass < maxRestorePasses; pass++ {
		fresh := false
		for _, tid := range tasks() {
			if seen[tid] {
				continue
			}
			seen[tid], fresh = true, true
			if err := unix.SchedSetaffinity(tid, orig); errors.Is(err, unix.EINVAL) {
				// The cpuset changed under us and orig no longer fits:
				// every CPU, which the kernel narrows to the cpuset.
				var all unix.CPUSet
				all.Fill()
				_ = unix.SchedSetaffinity(tid, &all)
			}
		}
		if !fresh {
			return
		}
	}
}

// tasks lists the process's thread ids. It reads the directory with raw
// system calls: os.Open would set up the runtime's network poller, which
// this early in a start costs more than the listing.
func tasks() []int {
	fd, err := unix.Open("/proc/self/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var out []int
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err != nil || n <= 0 {
			return out
		}
		var names []string
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
		for _, name := range names {
			if tid, err := strconv.Atoi(name); err == nil {
				out = append(out, tid)
			}
		}
	}
}
