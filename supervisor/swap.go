//go:build linux

package supervisor

import (
	"strconv"

	"golang.org/x/sys/unix"
)

func (s *Supervisor) requestReload(why string, reply chan<- Outcome) {
	switch {
	case s.phase >= phaseDraining:
		s.Log.Info().Str("reason", why).Msg("reload ignored while stopping")
		answer(reply, Outcome{Reason: "baton is stopping"})
	case s.next != nil || s.checking != nil || s.parked != nil:
		// A swap (or its check) is in progress, begun before this request:
		// the one after it covers it.
		s.reloadQueued = true
		if reply != nil {
			s.queued = append(s.queued, reply)
		}
		s.stats.ReloadsCoalesced++
		gen := s.genCount
		s.Log.Info().Int("gen", gen).Str("reason", why).Msg("reload coalesced")
	default:
		var replies []chan<- Outcome
		if reply != nil {
			replies = append(replies, reply)
		}
		s.startReload(why, replies)
	}
}

// startReload begins a reload: its check first, if there is one.
func (s *Supervisor) startReload(why string, replies []chan<- Outcome) {
	if s.Check == nil {
		s.beginSwap(why, replies)
		return
	}
	w, lines, err := s.Check(s.genCount + 1)
	if err != nil {
		s.refuse(why, replies, "BATON_RELOAD_CHECK did not start: "+err.Error())
		return
	}
	s.beginCheck(&check{w: w, why: why, replies: replies}, lines)
	s.Log.Info().Int("pid", w.PID()).Str("reason", why).Msg("reload check begun")
}

// refuse ends a reload before any worker started: the current generation
// serves on. It counts as a failed reload.
func (s *Supervisor) refuse(why string, replies []chan<- Outcome, reason string) {
	s.stats.ReloadsFailed++
	s.Log.Warn().Str("reason", reason).Str("trigger", why).Msg("reload refused")
	answerAll(&replies, Outcome{Gen: s.current.num, Reason: reason})
	s.afterSwap()
}

func (s *Supervisor) beginSwap(why string, waiters []chan<- Outcome) {
	if s.replacing != nil {
		// The swap replaces every worker anyway.
		s.retire(s.replacing)
		s.replacing = nil
	}
	g := s.newGeneration()
	s.next = g
	g.waiters = waiters
	s.Log.Info().Int("gen", g.num).Str("reason", why).Msg("swap begun")
	fds, err := s.Sockets.Open(g.num)
	if err != nil {
		s.Log.Error().Err(err).Int("gen", g.num).Msg("listen failed")
		s.abortSwap("listen failed")
		return
	}
	g.fds = fds
	s.after(s.opts.ReadyTimeout, timerEvent{kind: evReadyTimeout, gen: g.num})
	if s.rolling() {
		s.rollOn()
		return
	}
	for i := 0; i < s.opts.Workers; i++ {
		if _, err := s.startWorker(g, i, false); err != nil {
			s.abortSwap("worker start failed")
			return
		}
	}
	g.started = s.opts.Workers
}

func (s *Supervisor) finishSwap() {
	g, old := s.next, s.current
	g.ready = true
	if len(s.leaving) > 0 {
		// Steer mode: a new generation is steered to only once no other
		// is leaving, so that the current one never is last in a group
		// with two others before it (see Steering).
		s.Log.Info().Int("gen", g.num).Int("leaving", s.leaving[0].num).Msg("swap waits for the old generation to leave")
		return
	}
	if len(s.opts.Canary) > 0 && !g.canaried {
		s.startCanary()
		return
	}
	if err := s.Sockets.Steer(g.num); err != nil {
		s.Log.Error().Err(err).Int("gen", g.num).Msg("steer failed")
		// Listeners steered to g before the failure go back: a socket
		// steered to is never released.
		if err := s.Sockets.Steer(old.num); err != nil {
			s.Log.Error().Err(err).Int("gen", old.num).Msg("steer failed")
		}
		s.abortSwap("steer failed")
		return
	}
	s.next, s.current = nil, g
	elapsed := s.Now().Sub(g.begun)
	if s.opts.Bake == 0 {
		s.stats.ReloadsOK++ // with a bake, once it is over
	}
	s.stats.LastSwap = elapsed
	s.Log.Info().Int("gen", g.num).Dur("elapsed", elapsed).Msg("swap complete")
	if w := g.slots[0].w; w != nil && s.owns(0) {
		s.setForeground(w.pid)
	}
	if s.opts.Bake > 0 {
		// The old generation stays, parked: alive, not signalled, given
		// no new connection; the reload's outcome waits for the bake.
		s.parked, s.bakeEnds = old, s.Now().Add(s.opts.Bake)
		s.Log.Info().Int("gen", g.num).Int("parked", old.num).Dur("bake", s.opts.Bake).Msg("bake begun")
		s.after(s.opts.Bake, timerEvent{kind: evBakeEnd, gen: old.num, idx: g.num})
		return
	}
	s.conclude(g, Outcome{OK: true, Gen: g.num}, old)
}

func (s *Supervisor) abortSwap(reason string) {
	g := s.next
	s.next = nil
	s.stats.ReloadsFailed++
	s.Log.Warn().Int("gen", g.num).Str("reason", reason).Msg("swap aborted")
	answerAll(&g.waiters, Outcome{Gen: s.current.num, Reason: "generation " + strconv.Itoa(g.num) + " rolled back: " + reason})
	s.retireGeneration(g)
	if s.opts.SteerSettle > 0 {
		// Never steered to, but its workers may still hold its sockets
		// (one that ignores the stop signal, one that calls listen()
		// again): they leave the groups as a leaving generation's do.
		s.leaving = append(s.leaving, g)
		s.maybeRelease()
	} else {
		s.Sockets.Release(g.num) // shared mode: nothing to release
	}
	s.afterSwap()
}

func (s *Supervisor) afterSwap() {
	if s.reloadQueued && s.phase == phaseRunning {
		s.reloadQueued = false
		queued := s.queued
		s.queued = nil
		s.startReload("coalesced", queued)
	}
}

// handOver retires old now that new connections go elsewhere: at once in
// shared mode; in steer mode once its own queue is empty (onHandover).
func (s *Supervisor) handOver(old *generation) {
	if s.opts.SteerSettle > 0 {
		// New connections go to g now. The old generation's workers keep
		// accepting what is already queued for them, and are asked to stop
		// once that is empty: a worker that drops what it has not yet
		// accepted when it stops then has nothing to drop.
		s.leaving = append(s.leaving, old)
		old.handover = s.Now()
		s.after(s.opts.SteerSettle, timerEvent{kind: evHandover, gen: old.num})
	} else {
		s.retireGeneration(old)
	}
}

// retireGeneration asks every worker of g to stop.
func (s *Supervisor) retireGeneration(g *generation) {
	g.retired = true
	for _, sl := range g.slots {
		w := sl.w
		if w != nil {
			s.retire(w)
		}
	}
	for _, w := range s.byPID {
		if w.gen == g && !w.retiring {
			s.retire(w) // a recycling replacement of g's
		}
	}
}

// retire asks w to finish gracefully and arms the SIGKILL for its group.
func (s *Supervisor) retire(w *worker) {
	if w.retiring {
		return
	}
	w.retiring = true
	s.sent(s.signal(w, s.opts.StopSignal), w.pid, s.opts.StopSignal, "stop signal failed")
	s.Log.Info().Int("gen", w.gen.num).Int("worker", w.idx).Int("pid", w.pid).Str("signal", unix.SignalName(s.opts.StopSignal)).Msg("worker retiring")
	s.after(s.opts.StopTimeout, timerEvent{kind: evRetireKill, w: w})
}

// onRetireKill: retired worker w had BATON_STOP_TIMEOUT to go; what is
// left of its group gets SIGKILL.
func (s *Supervisor) onRetireKill(w *worker) {
	// The leader may be gone while helpers in its group live on; the
	// group id stays reserved while any member is alive, so it can only
	// name a new process after the group emptied, which the loop notes
	// at the reap that sees it (groupGone).
	if w.groupGone {
		s.Log.Debug().Int("gen", w.gen.num).Int("pid", w.pid).Msg("retired group already empty")
		return
	}
	if o := s.byPID[w.pid]; o != nil && o != w {
		return // a new worker of ours has the id: the group emptied unseen
	}
	delete(s.lingering, w.pid)
	if err := s.KillGroup(w.pid, unix.SIGKILL); err == nil {
		s.Log.Warn().Int("gen", w.gen.num).Int("pid", w.pid).Dur("elapsed", s.opts.StopTimeout).Msg("worker killed after stop timeout")
	} else {
		s.sent(err, w.pid, unix.SIGKILL, "kill failed")
	}
}
