//go:build linux

package supervisor

import "github.com/baton-init/baton/handoff"

func (s *Supervisor) onNote(n handoff.Note) {
	w := s.byPID[n.PID]
	if w == nil {
		// A process in the worker's group speaks for it (a helper child
		// may send for Node). Its group was looked up by the notifier as
		// the datagram arrived; a sender gone by then cannot be attributed.
		w = s.byPID[n.PGID]
	}
	if w == nil {
		s.Log.Debug().Int("pid", n.PID).Msg("notify ignored")
		return
	}
	if n.Status != "" {
		s.Log.Debug().Int("gen", w.gen.num).Int("pid", w.pid).Str("status", n.Status).Msg("worker status")
	}
	if n.Ready {
		s.seenNotify = true
		s.markReady(w)
	}
	if n.Listened && s.opts.Ready.Kind == "listen" {
		s.markReady(w)
	}
	if n.Watchdog || n.Trigger {
		s.onWatchdog(w, n.Trigger)
	}
	if n.Stopping && !w.retiring && s.phase == phaseRunning {
		s.onStopping(w)
	}
}

func (s *Supervisor) markReady(w *worker) {
	if w.ready || w.retiring || s.phase >= phaseStopping {
		// Once the stop signal went out, no worker becomes ready: a
		// ready timer or READY=1 then changes nothing.
		return
	}
	w.ready = true
	g := w.gen
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", w.pid).Dur("elapsed", s.Now().Sub(w.started)).Msg("worker ready")
	if w == s.replacing {
		s.replacing = nil
		old := g.slots[w.idx].w
		g.slots[w.idx].w = w
		if s.owns(w.idx) {
			s.setForeground(w.pid)
		}
		s.stats.Recycled++
		s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", w.pid).Msg("worker recycled")
		if old != nil {
			s.retire(old)
		}
		return
	}
	if g == s.next && s.rolling() {
		// One new worker serves: one old one may go, and the next new one
		// start once it has.
		s.retireOneOld()
		s.rollOn()
		if s.next != g {
			return // halted while starting the next one
		}
	}
	for _, sl := range g.slots {
		o := sl.w
		if o == nil || !o.ready {
			return
		}
	}
	switch {
	case g == s.next:
		s.finishSwap()
	case g == s.current && !g.ready:
		g.ready = true
		s.Log.Info().Int("gen", g.num).Dur("elapsed", s.Now().Sub(g.begun)).Msg("generation ready")
	}
}

// onReadyDelay: w has been up for BATON_READY's delay (or auto's).
func (s *Supervisor) onReadyDelay(w *worker) {
	if s.byPID[w.pid] == w {
		s.markReady(w)
	}
}

// onReadyTimeout: generation gen had BATON_READY_TIMEOUT to be ready. A
// new one that is not is rolled back; the first one has nothing to roll
// back to.
func (s *Supervisor) onReadyTimeout(gen int) {
	if s.next != nil && s.next.num == gen && !s.next.ready {
		// (A ready generation waiting for the old one to leave, in
		// steer mode, is not rolled back: the wait is bounded by the
		// old one's stop timeout.)
		s.rollBack("not ready within BATON_READY_TIMEOUT")
	} else if s.current.num == gen && !s.current.ready && s.phase < phaseStopping {
		// Nothing to roll back to: keep waiting, reporting not-ready.
		s.Log.Warn().Int("gen", gen).Dur("elapsed", s.Now().Sub(s.current.begun)).Msg("generation not ready")
	}
}
