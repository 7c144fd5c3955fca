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
	if n.Watchdog || n.Trigger {
		s.onWatchdog(w, n.Trigger)
	}
	if n.Stopping && !w.retiring && !s.stopping && !s.draining {
		s.onStopping(w)
	}
}

func (s *Supervisor) markReady(w *worker) {
	if w.ready || w.retiring || s.stopping {
		// Once the stop signal went out, no worker becomes ready: a
		// ready timer or READY=1 then changes nothing.
		return
	}
	w.ready, w.everReady = true, true
	g := w.gen
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", w.pid).Dur("elapsed", s.Now().Sub(w.started)).Msg("worker ready")
	if w == s.replacing {
		s.replacing = nil
		old := g.workers[w.idx]
		g.workers[w.idx] = w
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
	for _, o := range g.workers {
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
