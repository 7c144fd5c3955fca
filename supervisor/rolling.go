//go:build linux

package supervisor

import (
	"slices"
	"strconv"
)

// Rolling swaps (BATON_SURGE): a reload replaces the workers a few at a
// time, so that at most Workers+Surge are alive at any moment, draining
// ones included: gunicorn's and einhorn's way of fitting a memory limit.
// Each new worker that is ready lets one old worker go; the next new one
// starts once an old one has exited.

// rolling reports whether reloads are rolling swaps.
func (s *Supervisor) rolling() bool {
	return s.opts.Surge > 0 && s.opts.Surge < s.opts.Workers
}

// rollOn starts as many of the new generation's workers as the bound
// allows.
func (s *Supervisor) rollOn() {
	g := s.next
	if g == nil || !s.rolling() || s.phase >= phaseStopping {
		return
	}
	for g.started < s.opts.Workers && len(s.byPID) < s.opts.Workers+s.opts.Surge {
		idx := g.started
		g.started++
		if _, err := s.startWorker(g, idx, false); err != nil {
			s.halt("worker start failed")
			return
		}
	}
}

// retireOneOld retires one serving worker of the current generation.
func (s *Supervisor) retireOneOld() {
	for _, sl := range s.current.slots {
		w := sl.w
		if w != nil && !w.retiring {
			s.retire(w)
			return
		}
	}
}

// halt stops a rolling swap that went wrong: the new workers not yet
// ready are stopped; the ready ones join the current generation in the
// places of the old workers they let go, and serve with the old workers
// left. The reload counts as failed; the next one starts over with a whole
// new generation.
func (s *Supervisor) halt(reason string) {
	g := s.next
	ready := 0
	for _, sl := range g.slots {
		w := sl.w
		if w != nil && w.ready {
			ready++
		}
	}
	if ready == 0 {
		s.abortSwap(reason)
		s.refill()
		return
	}
	s.next = nil
	cur := s.current
	for _, sl := range g.slots {
		w := sl.w
		if w == nil {
			continue
		}
		if !w.ready {
			s.retire(w)
			continue
		}
		// The places the swap took from the old generation first: a slot
		// whose restart is pending gets its own worker back, and would
		// get none if a new worker took it.
		i := slices.IndexFunc(cur.slots, func(sl slot) bool {
			return (sl.w != nil && sl.w.retiring) || (sl.w == nil && !sl.pending)
		})
		if i < 0 {
			i = slices.IndexFunc(cur.slots, func(sl slot) bool { return sl.w == nil })
		}
		if i < 0 {
			// No place for it (every slot serves): it would serve on
			// outside any generation's count, a worker too many.
			s.retire(w)
			continue
		}
		cur.slots[i].w = w // the old one, if draining, no longer owns the slot
		cur.slots[i].pending = false
		w.gen, w.idx = cur, i
	}
	s.refill()
	if !cur.ready && !slices.ContainsFunc(cur.slots, func(sl slot) bool { return sl.w == nil || !sl.w.ready }) {
		// Its workers were ready before they joined it: no READY=1 will
		// come to mark it.
		cur.ready = true
		s.Log.Info().Int("gen", cur.num).Dur("elapsed", s.Now().Sub(cur.begun)).Msg("generation ready")
	}
	s.stats.ReloadsFailed++
	s.Log.Warn().Int("gen", g.num).Int("replaced", ready).Int("workers", s.opts.Workers).Str("reason", reason).Msg("swap halted")
	why := "halted after " + strconv.Itoa(ready) + " of " + strconv.Itoa(s.opts.Workers) +
		" workers of generation " + strconv.Itoa(g.num) + " were serving: " + reason
	answerAll(&g.waiters, Outcome{Gen: cur.num, Reason: why})
	s.afterSwap()
}

// refill starts again the current generation's slots that a halted
// rolling swap emptied: their old workers were let go for new ones that
// are not there (one that was ready and exited, one not ready in time).
func (s *Supervisor) refill() {
	g := s.current
	for i := range g.slots {
		sl := &g.slots[i]
		if sl.pending || (sl.w != nil && !sl.w.retiring) || (sl.w == nil && s.opts.Restart != RestartAlways) {
			continue // (an empty one under on-failure may be a clean exit)
		}
		sl.w = nil // a draining one no longer owns it
		sl.pending = true
		s.after(0, timerEvent{kind: evRestart, gen: g.num, idx: i})
	}
}

// rollBack ends the swap in progress that went wrong: a rolling swap
// halts (its ready workers stay), a whole-generation swap is aborted.
func (s *Supervisor) rollBack(reason string) {
	if s.rolling() {
		s.halt(reason)
	} else {
		s.abortSwap(reason)
	}
}
