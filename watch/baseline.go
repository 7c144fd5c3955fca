package watch

import (
	"io/fs"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The baseline is the first pass that completes. It runs on the watcher goroutine, so New does
// not wait for it, and the worker may read its configuration before the pass does: a change in
// between would be folded into the baseline and never reported. So New records t0, a time no
// later than the worker's start, and the baseline pass notes whether anything it looked at has
// a ctime at or after t0 ("fresh"). If so, the content may have changed after the worker read
// it, and the baseline is reported as one change. A user cannot set a ctime (utimes sets atime
// and mtime only), so a fresh ctime means a real change since t0.
//
// The kernel stamps ctime with its coarse clock (current_time: ktime_get_coarse_real_ts64,
// CLOCK_REALTIME_COARSE, which moves once a tick and lags the fine clock by up to about a tick),
// or, with multigrain timestamps (Linux 6.13 and later; ext4, xfs, btrfs, tmpfs), with the fine
// clock when the old ctime was looked at since, and then no later stamp is below that one. So
// every stamp is at least the coarse clock at the time of the change, and at most the fine
// clock. Measured on a 4 ms tick (kernel 6.18, ext4): of 2,000 writes, none was stamped below
// the coarse clock read just before it, while the stamps lagged the fine clock (time.Now) by up
// to 5 ms; and a directory stat'ed just before (os.MkdirAll does) got fine stamps, above the
// coarse clock read after them. Hence New reads the fine clock when it is called (E), waits
// until the coarse clock has passed E (about a tick: 3-4 ms on average here, 15 ms at most
// under load), and takes that coarse time as t0:
//   - a change after New returned has a ctime at least the coarse clock then, so >= t0;
//   - a change before New was called has a ctime at most E, so < t0: a configuration written
//     just before baton started (`render-config && exec baton ...`) is not taken for a change.
//
// Whatever else changes in the directories the pass depended on during the pass (a worker
// writing into the directory that holds a watched file) makes the baseline fresh too, at the
// cost of one reload at start. The rule assumes the file system stamps times from this kernel's
// clock; see changedSince for file systems with whole-second times.

// tickWaitMax bounds New's wait for the coarse clock. It moves every tick (1-10 ms by
// CONFIG_HZ; a tickless idle CPU catches up at its next interrupt); if it has not passed E by
// then (the clock was set back), t0 is the coarse clock then: a change made just before New
// may count as fresh (one reload too many), but none after it is missed.
const tickWaitMax = 100 * time.Millisecond

// coarseNow reads the clock the kernel stamps ctime with.
func coarseNow() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		return time.Now()
	}
	return time.Unix(ts.Unix())
}

// coarseAfter waits until the coarse clock has passed e, and returns its value then.
func coarseAfter(e time.Time) time.Time {
	step := time.Millisecond
	var res unix.Timespec
	if unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &res) == nil && res.Nano() > 0 {
		step = time.Duration(res.Nano()) / 8
	}
	end := time.Now().Add(tickWaitMax)
	for {
		now := coarseNow()
		if now.After(e) || time.Now().After(end) {
			return now
		}
		time.Sleep(step)
	}
}

// changedSince reports whether a file whose ctime is ct may have changed at or after t0.
//
// A stamp of whole seconds comes from a file system that keeps no finer time (ext4 with
// 128-byte inodes, FAT's 2 s, some network and FUSE file systems): its change happened up to
// 2 s after the stamp, so it counts if that interval reaches t0. (A fine stamp that happens to
// fall on a whole second, one in a billion, is only taken the same way.) Times stamped by
// another machine's clock (NFS) are beyond this rule.
func changedSince(ct, t0 time.Time) bool {
	if ct.Nanosecond() == 0 {
		return ct.Add(2 * time.Second).After(t0)
	}
	return !ct.Before(t0)
}

// saw notes that the pass looked at something lstat or fstat described as fi.
func (hs *hasher) saw(fi fs.FileInfo) {
	if hs.since.IsZero() || hs.fresh {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && changedSince(time.Unix(st.Ctim.Unix()), hs.since) {
		hs.fresh = true
	}
}
