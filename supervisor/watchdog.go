//go:build linux

package supervisor

import "golang.org/x/sys/unix"

// The watchdog (BATON_WATCHDOG), systemd's convention: every worker gets
// WATCHDOG_USEC and WATCHDOG_PID; one that has sent WATCHDOG=1 at least
// once and then stays silent for the whole duration is hung. It gets
// SIGABRT (a core dump, as systemd sends), SIGKILL to its group after
// BATON_STOP_TIMEOUT, and its exit is then a crash like any other
// (BATON_RESTART). WATCHDOG=trigger does the same at once. A worker that
// never sent WATCHDOG=1 is not watched: it may not speak the protocol.

// onWatchdog takes a WATCHDOG=1 (or =trigger) from w.
func (s *Supervisor) onWatchdog(w *worker, trigger bool) {
	if s.opts.Watchdog <= 0 || w.hung || w.retiring || s.phase >= phaseStopping {
		return
	}
	if trigger {
		s.hang(w, "WATCHDOG=trigger")
		return
	}
	// A ping only notes the time: one timer a worker, armed by its first
	// ping and again when it fires, not one a ping (workers ping several
	// times a period, and each timer would be one more event here).
	w.lastPing = s.Now()
	if !w.watched {
		w.watched = true
		s.after(s.opts.Watchdog, timerEvent{kind: evWatchdog, w: w})
	}
}

// onWatchdogTimer: w is hung if its last ping is a whole BATON_WATCHDOG
// old; otherwise the timer is armed again for when it would be.
func (s *Supervisor) onWatchdogTimer(w *worker) {
	if s.byPID[w.pid] != w {
		return
	}
	w.watched = false
	if w.hung || w.retiring || s.phase >= phaseStopping {
		return
	}
	if left := s.opts.Watchdog - s.Now().Sub(w.lastPing); left > 0 || s.isParked(w) {
		if left <= 0 {
			left = s.opts.Watchdog // judged after the bake
		}
		w.watched = true
		s.after(left, timerEvent{kind: evWatchdog, w: w})
		return
	}
	s.hang(w, "no WATCHDOG=1 within BATON_WATCHDOG")
}

// isParked reports whether w is of the generation parked during a bake,
// which is not signalled: the watchdog judges it once the bake is over.
func (s *Supervisor) isParked(w *worker) bool {
	return s.parked != nil && w.gen == s.parked
}

// hang aborts a hung worker.
func (s *Supervisor) hang(w *worker, reason string) {
	if w.hung || w.retiring || s.phase >= phaseStopping || s.isParked(w) {
		return
	}
	w.hung = true
	s.stats.WatchdogKills++
	s.Log.Warn().Int("gen", w.gen.num).Int("worker", w.idx).Int("pid", w.pid).Str("reason", reason).Msg("worker hung")
	s.sent(s.signal(w, unix.SIGABRT), w.pid, unix.SIGABRT, "signal not forwarded")
	s.after(s.opts.StopTimeout, timerEvent{kind: evWatchdogKill, w: w})
}

// onWatchdogKill: hung worker w got SIGABRT a stop timeout ago.
func (s *Supervisor) onWatchdogKill(w *worker) {
	if s.byPID[w.pid] != w {
		return
	}
	if s.isParked(w) {
		// Aborted before its generation was parked: killed after the bake.
		s.after(s.opts.StopTimeout, timerEvent{kind: evWatchdogKill, w: w})
		return
	}
	// Alive after SIGABRT and the stop timeout (a stopped process
	// cannot act on SIGABRT): its group goes.
	if err := w.w.Signal(unix.SIGKILL); err == nil {
		s.Log.Warn().Int("gen", w.gen.num).Int("pid", w.pid).Msg("hung worker killed")
	} else {
		s.sent(err, w.pid, unix.SIGKILL, "kill failed")
	}
}
