//go:build linux

package supervisor

import (
	"errors"
	"strconv"
	"time"

	"github.com/baton-init/baton/reaper"
	"golang.org/x/sys/unix"
)

// groupPollEvery is how often, while baton stops as a subreaper, the
// process groups exited workers left behind are looked at.
const groupPollEvery = 50 * time.Millisecond

func (s *Supervisor) reap() {
	exits, err := s.Reap()
	// Every process in exits is gone before the first exit is handled,
	// and its pid free for the kernel to hand out again: handling one
	// (a shutdown, a rollback) must not signal another.
	for _, e := range exits {
		if w := s.byPID[e.PID]; w != nil {
			w.gone = true
		}
		if c := s.checking; c != nil && c.w.PID() == e.PID {
			c.gone = true
		}
	}
	// So are the left-behind groups these exits emptied.
	s.pruneLeft(true)
	for _, e := range exits {
		s.onExit(e)
	}
	if err != nil {
		s.Log.Error().Err(err).Msg("reap failed")
	}
	// A lingering group's last member may have been among these exits.
	for pgid, w := range s.lingering {
		if !s.groupAlive(pgid) {
			w.groupGone = true
			delete(s.lingering, pgid)
		}
	}
	s.pruneLeft(true)
	s.maybeRelease()
}

// leftGroup is a process group whose leader was reaped while it still had
// members: what an exited worker (Subreaper only) or a reload check left.
// A reap forgets it once it is empty: its id cannot name anyone else until
// then. A worker's is waited for while baton stops, and looked at every
// groupPollEvery; a check's gets SIGTERM once the check's outcome is
// decided and SIGKILL after the stop timeout, and is forgotten then.
type leftGroup struct {
	check bool // a reload check's, not a worker's
}

// hasLeft reports whether a group of a check (check) or of a worker is left.
func (s *Supervisor) hasLeft(check bool) bool {
	for _, l := range s.left {
		if l.check == check {
			return true
		}
	}
	return false
}

// pruneLeft forgets the left-behind groups that have emptied: the
// workers', and with checks too the checks'.
func (s *Supervisor) pruneLeft(checks bool) {
	for pgid, l := range s.left {
		if (checks || !l.check) && !s.groupAlive(pgid) {
			delete(s.left, pgid)
		}
	}
}

// groupAlive reports whether process group pgid has a member. Asked right
// after a reap, a group id cannot have been taken by a new process yet
// (that needs the pid space to come round to exactly it in between).
func (s *Supervisor) groupAlive(pgid int) bool {
	return !errors.Is(s.KillGroup(pgid, 0), unix.ESRCH)
}

func (s *Supervisor) onExit(e reaper.Exit) {
	code := e.Code()
	if c := s.checking; c != nil && c.w.PID() == e.PID {
		s.onCheckExit(code)
		return
	}
	w := s.byPID[e.PID]
	if w == nil {
		s.stats.Orphans++
		s.Log.Debug().Int("pid", e.PID).Int("code", code).Msg("orphan reaped")
		return
	}
	delete(s.byPID, e.PID)
	g := w.gen
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", e.PID).Int("code", code).Msg("worker exited")
	if w.inShim {
		w.inShim, w.held = false, nil // its WaitExec returns too; nothing to send
		s.releaseKillAll()
	}
	if w.retiring || s.opts.Subreaper {
		alive := s.groupAlive(e.PID)
		if w.retiring {
			// Its SIGKILL is armed: it must not reach a group that
			// emptied, whose id a new process may take.
			if alive {
				s.lingering[e.PID] = w
			} else {
				w.groupGone = true
			}
		}
		if alive && s.opts.Subreaper {
			// Helpers live on in its group: stopped and waited for
			// with the workers.
			s.left[e.PID] = leftGroup{}
		}
	}
	if s.phase >= phaseDraining && g == s.current && code != 0 && s.exitCode == codeUnset {
		s.exitCode = code // the status of a shutdown baton was asked for
	}
	owned := g.slots[w.idx].w == w
	if owned {
		g.slots[w.idx].w = nil
		if r := s.replacing; r != nil && r.gen == g && r.idx == w.idx && s.phase < phaseStopping {
			// The worker being recycled is gone: its replacement, already
			// starting, is the slot's worker now. A restart besides it
			// would be a third process for one slot.
			s.replacing = nil
			g.slots[w.idx].w = r
			s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", r.pid).Int("code", code).Msg("replacement took over")
			if s.owns(w.idx) {
				s.setForeground(r.pid)
			}
			return
		}
		if s.Foreground != nil && g == s.current && w.idx == 0 && s.phase < phaseStopping {
			// Until a restart takes it, Ctrl-C must reach somebody.
			s.setForeground(0)
		}
	}
	switch {
	case s.phase >= phaseStopping:
		// Everything is going; checkDone decides when baton exits.
	case w.retiring:
		s.rollOn() // a rolling swap may start its next new worker
	case w == s.replacing:
		s.replacing = nil
		s.Log.Warn().Int("gen", g.num).Int("worker", w.idx).Int("code", code).Msg("recycle aborted")
	case s.inCanary(g):
		s.abortCanary("worker " + strconv.Itoa(w.idx) + " exited " + strconv.Itoa(code))
	case s.parked != nil && g == s.current && owned:
		s.revert("worker " + strconv.Itoa(w.idx) + " exited " + strconv.Itoa(code) + " during the bake")
	case g == s.parked && owned:
		// Not restarted while parked; a revert starts its slot again.
		s.Log.Warn().Int("gen", g.num).Int("worker", w.idx).Int("code", code).Msg("parked worker exited")
	case g == s.next:
		s.rollBack("worker exited before ready")
	case g == s.current && owned:
		s.onCurrentExit(w, code)
	}
}

// onGroupPoll: a look at the left-behind groups while baton stops.
func (s *Supervisor) onGroupPoll() {
	s.groupPoll = false
	s.pruneLeft(false)
}
