//go:build linux

package supervisor

import (
	"time"

	"github.com/baton-init/baton/spawn"
	"golang.org/x/sys/unix"
)

type timerKind int

const (
	evReadyDelay timerKind = iota
	evReadyTimeout
	evRestart
	evRetireKill
	evShutdownDelay
	evStopKill
	evRecycle
	evRecycleTimeout
	evHandover
	evCheckTimeout
	evWatchdog
	evWatchdogKill
	evCanaryStep
	evBakeEnd
	evCheckKill
	evGroupPoll
)

type timerEvent struct {
	kind timerKind
	gen  int
	idx  int
	pid  int
	w    *worker
}

func (s *Supervisor) after(d time.Duration, ev timerEvent) {
	s.AfterFunc(d, func() { s.timers <- ev })
}

func (s *Supervisor) onTimer(ev timerEvent) {
	switch ev.kind {
	case evReadyDelay:
		if s.byPID[ev.pid] == ev.w {
			s.markReady(ev.w)
		}
	case evReadyTimeout:
		if s.next != nil && s.next.num == ev.gen && !s.next.ready {
			// (A ready generation waiting for the old one to leave, in
			// steer mode, is not rolled back: the wait is bounded by the
			// old one's stop timeout.)
			if s.rolling() {
				s.halt("not ready within BATON_READY_TIMEOUT")
			} else {
				s.abortSwap("not ready within BATON_READY_TIMEOUT")
			}
		} else if s.current.num == ev.gen && !s.current.ready && !s.stopping {
			// Nothing to roll back to: keep waiting, reporting not-ready.
			s.Log.Warn().Int("gen", ev.gen).Dur("elapsed", s.Now().Sub(s.current.begun)).Msg("generation not ready")
		}
	case evRestart:
		g := s.current
		if s.stopping || g.num != ev.gen || g.workers[ev.idx] != nil {
			return
		}
		g.pending[ev.idx] = false
		if _, err := s.startWorker(g, ev.idx, s.owns(ev.idx)); err != nil {
			s.Log.Error().Err(err).Int("gen", g.num).Int("worker", ev.idx).Msg("worker start failed")
			s.scheduleRestart(&worker{gen: g, idx: ev.idx, started: s.Now()}, spawn.Code(err))
		}
	case evRetireKill:
		// The leader may be gone while helpers in its group live on; the
		// group id stays reserved while any member is alive, so it can only
		// name a new process after the group emptied, which the loop notes
		// at the reap that sees it (groupGone).
		if ev.w.groupGone {
			s.Log.Debug().Int("gen", ev.w.gen.num).Int("pid", ev.pid).Msg("retired group already empty")
			return
		}
		if o := s.byPID[ev.pid]; o != nil && o != ev.w {
			return // a new worker of ours has the id: the group emptied unseen
		}
		delete(s.lingering, ev.pid)
		if err := s.KillGroup(ev.pid, unix.SIGKILL); err == nil {
			s.Log.Warn().Int("gen", ev.w.gen.num).Int("pid", ev.pid).Dur("elapsed", s.opts.StopTimeout).Msg("worker killed after stop timeout")
		}
	case evShutdownDelay:
		s.stopAll()
	case evStopKill:
		s.stopExpired = true
		s.Log.Warn().Int("workers", len(s.byPID)).Int("relays", s.relaysAnswering).Msg("stop timeout: killing what remains")
		if s.opts.PID1 {
			_ = s.KillAll(unix.SIGKILL) // ESRCH: nothing left, which is fine
		}
		for _, w := range s.byPID {
			_ = w.w.Signal(unix.SIGKILL)
		}
		for pgid := range s.groups {
			_ = s.KillGroup(pgid, unix.SIGKILL)
		}
		if c := s.checking; c != nil && !c.exited {
			_ = c.w.Signal(unix.SIGKILL)
		}
		for pgid := range s.checkLeft {
			_ = s.KillGroup(pgid, unix.SIGKILL)
		}
		clear(s.checkLeft) // gone now: baton need not wait for their reap
	case evHandover:
		s.onHandover(ev.gen)
	case evCheckTimeout:
		s.onCheckTimeout(ev.pid)
	case evCheckKill:
		s.onCheckKill(ev.pid)
	case evCanaryStep:
		s.onCanaryStep(ev.gen, ev.idx)
	case evBakeEnd:
		s.onBakeEnd(ev.gen)
	case evGroupPoll:
		s.groupPoll = false
		s.pruneGroups()
	case evWatchdog:
		if w := ev.w; s.byPID[w.pid] == w {
			s.onWatchdogTimer(w)
		}
	case evWatchdogKill:
		if w := ev.w; s.byPID[w.pid] == w {
			// Alive after SIGABRT and the stop timeout (a stopped process
			// cannot act on SIGABRT): its group goes.
			if err := w.w.Signal(unix.SIGKILL); err == nil {
				s.Log.Warn().Int("gen", w.gen.num).Int("pid", w.pid).Msg("hung worker killed")
			}
		}
	case evRecycleTimeout:
		if w := ev.w; w == s.replacing && !w.ready {
			// Not ready in time: the old worker serves on, and the next
			// check may try again.
			s.replacing = nil
			s.Log.Warn().Int("gen", w.gen.num).Int("worker", w.idx).Int("pid", w.pid).Str("reason", "not ready within BATON_READY_TIMEOUT").Msg("recycle aborted")
			s.retire(w)
		}
	case evRecycle:
		s.recycleCheck()
		if !s.stopping && !s.draining {
			s.after(recycleEvery, ev)
		}
	}
}
