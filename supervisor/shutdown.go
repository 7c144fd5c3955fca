//go:build linux

package supervisor

import (
	"github.com/baton-init/baton/handoff"
	"golang.org/x/sys/unix"
)

// phase is how far baton is in stopping; it only moves forward.
type phase int

const (
	phaseRunning  phase = iota
	phaseDraining       // shutdown requested: not ready, no reloads (BATON_SHUTDOWN_DELAY)
	phaseStopping       // stop signal sent: waiting for processes to go
	phaseDone           // everything is gone: Run returns
)

// codeUnset is exitCode before anything decided it.
const codeUnset = -1

// beginShutdown handles sig, which BATON_SIGNAL_MAP made to: TERM, INT,
// QUIT (or an explicit stop signal).
func (s *Supervisor) beginShutdown(sig, to unix.Signal) {
	if s.phase >= phaseStopping {
		s.forward(to) // a second Ctrl-C goes through as is
		return
	}
	if s.phase >= phaseDraining {
		// A second shutdown signal during BATON_SHUTDOWN_DELAY: the
		// operator is in a hurry, so stop now.
		s.stopAll()
		return
	}
	s.phase = phaseDraining
	s.stopSig = to
	if s.opts.StopSignalSet {
		s.stopSig = s.opts.StopSignal
	}
	s.Log.Info().Str("signal", unix.SignalName(sig)).Dur("delay", s.opts.ShutdownDelay).Msg("shutdown begun")
	relayed := 0
	for _, g := range s.leaving {
		relayed += s.relay(g.num)
	}
	if relayed > 0 && s.opts.ShutdownDelay <= 0 {
		// What the leaving generations have queued and not accepted is
		// relayed to the current one, whose queue it joins: served if the
		// current generation accepts its queue before it stops (during
		// BATON_SHUTDOWN_DELAY, or as its drain), else reset at the exit
		// like the rest of that queue. The stop signal waits until the
		// relays are dialled, handoff.RelayDial at most, so that they are in the
		// queue when it arrives.
		s.stopAfterRelay = true
		s.after(handoff.RelayDial, timerEvent{kind: evShutdownDelay})
		return
	}
	if s.opts.ShutdownDelay > 0 {
		s.after(s.opts.ShutdownDelay, timerEvent{kind: evShutdownDelay})
		return
	}
	s.stopAll()
}

// end makes baton exit with code once every process is gone.
func (s *Supervisor) end(code int) {
	if s.phase >= phaseStopping {
		return
	}
	if s.phase == phaseDraining {
		// A shutdown baton was asked for decides the status: the first
		// non-zero exit of a current worker (onExit), not an exit 0 that
		// ends baton during BATON_SHUTDOWN_DELAY (docs/pid1.md).
		s.stopAll()
		return
	}
	s.exitCode = code
	s.stopSig = s.opts.StopSignal
	s.stopAll()
}

// stopAll sends the stop signal to every worker of every generation and,
// as PID 1, to every other process in the namespace, then arms SIGKILL.
func (s *Supervisor) stopAll() {
	if s.phase >= phaseStopping {
		return
	}
	s.phase = phaseStopping
	s.failWaiters("baton is stopping")
	s.next, s.replacing = nil, nil
	s.canary, s.parked = nil, nil // their generations stop with the rest
	if s.stopSig != 0 {
		if s.opts.PID1 {
			// kill(-1) reaches every process of the namespace except baton:
			// the workers' groups and daemons or orphans in their own
			// sessions alike, each exactly once. A worker still in the
			// shim would get it in its Go runtime (QUIT: a crash dump), so
			// it waits until none is, a millisecond at most.
			s.killAllHeld = s.stopSig
			s.releaseKillAll()
		} else {
			for _, w := range s.byPID {
				s.sent(s.signal(w, s.stopSig), w.pid, s.stopSig, "stop signal failed")
			}
			for pgid := range s.left {
				// What exited workers and checks left behind.
				s.sent(s.KillGroup(pgid, s.stopSig), pgid, s.stopSig, "stop signal failed")
			}
			if c := s.checking; c != nil && !c.exited && !c.gone {
				// A reload check in progress goes too.
				s.sent(c.w.Signal(s.stopSig), c.w.PID(), s.stopSig, "stop signal failed")
			}
		}
	}
	s.Log.Info().Str("signal", unix.SignalName(s.stopSig)).Int("workers", len(s.byPID)).Msg("stopping")
	s.after(s.opts.StopTimeout, timerEvent{kind: evStopKill})
}

func (s *Supervisor) checkDone() {
	if s.phase < phaseStopping || len(s.byPID) > 0 || s.checking != nil || s.hasLeft(true) {
		return
	}
	if s.opts.PID1 && s.HasChildren() {
		return // orphans and daemons still finishing: wait for them
	}
	if s.hasLeft(false) {
		// Helpers of exited workers still finishing. Their exits come
		// back to baton as their subreaper, and each reap drops a group
		// that emptied; a member that is no descendant of its worker's
		// would not come back, so the groups are also looked at every
		// groupPollEvery until they are gone (SIGKILL bounds that).
		if !s.groupPoll {
			s.groupPoll = true
			s.after(groupPollEvery, timerEvent{kind: evGroupPoll})
		}
		return
	}
	if s.relaysAnswering > 0 && !s.stopExpired {
		// Relays still carry what exited workers answered: wait for them,
		// until the stop timeout at most (a relay whose worker's side has
		// ended has nothing more for its client). Nobody will accept from the
		// listening sockets any more: closed, they reset what is queued,
		// and a relay into that queue ends now rather than at the timeout.
		if !s.socketsClosed {
			s.socketsClosed = true
			s.Sockets.CloseAll()
		}
		return
	}
	s.phase = phaseDone
}

// onStopKill: BATON_STOP_TIMEOUT passed since the stop signal; whatever
// is left gets SIGKILL.
func (s *Supervisor) onStopKill() {
	s.stopExpired = true
	s.Log.Warn().Int("workers", len(s.byPID)).Int("relays", s.relaysAnswering).Msg("stop timeout: killing what remains")
	if s.opts.PID1 {
		s.sent(s.KillAll(unix.SIGKILL), -1, unix.SIGKILL, "kill failed")
	}
	for _, w := range s.byPID {
		s.sent(w.w.Signal(unix.SIGKILL), w.pid, unix.SIGKILL, "kill failed")
	}
	for pgid, l := range s.left {
		s.sent(s.KillGroup(pgid, unix.SIGKILL), pgid, unix.SIGKILL, "kill failed")
		if l.check {
			delete(s.left, pgid) // gone now: baton need not wait for its reap
		}
	}
	if c := s.checking; c != nil && !c.exited {
		s.sent(c.w.Signal(unix.SIGKILL), c.w.PID(), unix.SIGKILL, "kill failed")
	}
}
