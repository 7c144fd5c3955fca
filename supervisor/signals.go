//go:build linux

package supervisor

import (
	"errors"
	"slices"

	"golang.org/x/sys/unix"
)

// maxHeld bounds the signals held for one worker in its shim; more are
// dropped (and logged). A standard signal already held is not held twice,
// as the kernel does not queue it twice either.
const maxHeld = 64

// firstRealtime is the first real-time signal number; real-time signals
// queue, standard ones do not.
const firstRealtime = 32

func (s *Supervisor) onSignal(sig unix.Signal) {
	switch {
	case sig == unix.SIGCHLD:
		s.reap()
	case sig == unix.SIGURG:
		// Used by the Go runtime to preempt goroutines (runc signals.go):
		// never forwarded.
	case s.opts.ReloadSignal != 0 && sig == s.opts.ReloadSignal:
		s.requestReload("signal", nil)
	default:
		// BATON_SIGNAL_MAP applies before anything else is decided: a
		// dropped signal is dropped, and a rewritten one means what it was
		// rewritten to (a shutdown or not), as if baton had received that.
		// Rewritten to the reload signal, it is forwarded: the reload
		// signal is the one baton receives.
		to := s.opts.SignalMap.Apply(sig)
		switch {
		case to == 0:
			s.Log.Debug().Str("signal", unix.SignalName(sig)).Msg("signal dropped")
		case isShutdown(to) || (s.opts.StopSignalSet && to == s.opts.StopSignal):
			s.beginShutdown(sig, to)
		default:
			s.forward(to)
		}
	}
}

// forward sends to (already through BATON_SIGNAL_MAP) to every live
// worker's process group, whatever its generation.
func (s *Supervisor) forward(to unix.Signal) {
	for pid, w := range s.byPID {
		if err := s.signal(w, to); err != nil {
			if s.failed(err, pid, to) {
				s.Log.Error().Err(err).Int("pid", pid).Str("signal", unix.SignalName(to)).Msg("signal not forwarded")
			}
			continue
		}
		s.stats.Forwarded++
		s.Log.Debug().Int("pid", pid).Str("signal", unix.SignalName(to)).Msg("signal forwarded")
	}
}

// failed applies baton's rule for a signal that was not sent: a process
// or group that is gone (ESRCH) is no error, and nothing is logged above
// debug, since its exit is reaped, or its group was seen empty, in a step
// of its own; anything else failed, and the caller logs it.
func (s *Supervisor) failed(err error, pid int, sig unix.Signal) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, unix.ESRCH) {
		s.Log.Debug().Int("pid", pid).Str("signal", unix.SignalName(sig)).Msg("signalled process already gone")
		return false
	}
	return true
}

// sent logs a signal sig to pid that failed, as msg, under failed's rule.
func (s *Supervisor) sent(err error, pid int, sig unix.Signal, msg string) {
	if s.failed(err, pid, sig) {
		s.Log.Error().Err(err).Int("pid", pid).Str("signal", unix.SignalName(sig)).Msg(msg)
	}
}

// signal sends sig to w's process group, or holds it while w is in the
// shim. SIGKILL is never held: the shim dies of it like the command would.
func (s *Supervisor) signal(w *worker, sig unix.Signal) error {
	if w.gone {
		return unix.ESRCH
	}
	if !w.inShim || sig == unix.SIGKILL {
		return w.w.Signal(sig)
	}
	if sig < firstRealtime && slices.Contains(w.held, sig) {
		return nil
	}
	if len(w.held) >= maxHeld {
		s.Log.Warn().Int("pid", w.pid).Str("signal", unix.SignalName(sig)).Msg("signal dropped: too many held")
		return nil
	}
	w.held = append(w.held, sig)
	s.Log.Debug().Int("pid", w.pid).Str("signal", unix.SignalName(sig)).Msg("signal held")
	return nil
}

// onExec: w runs its own command now (or is gone); send what was held.
func (s *Supervisor) onExec(w *worker) {
	if !w.inShim {
		return
	}
	w.inShim = false
	held := w.held
	w.held = nil
	s.Log.Debug().Int("pid", w.pid).Int("held", len(held)).Msg("worker left the shim")
	if s.byPID[w.pid] == w { // reaped meanwhile: its group id may be free
		for _, sig := range held {
			s.sent(w.w.Signal(sig), w.pid, sig, "signal not forwarded")
		}
	}
	s.releaseKillAll()
}

// releaseKillAll sends a held kill(-1) once no worker is in the shim.
func (s *Supervisor) releaseKillAll() {
	if s.killAllHeld == 0 {
		return
	}
	for _, w := range s.byPID {
		if w.inShim {
			return
		}
	}
	sig := s.killAllHeld
	s.killAllHeld = 0
	s.sent(s.KillAll(sig), -1, sig, "stop signal failed")
}
