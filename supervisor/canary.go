//go:build linux

package supervisor

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Canary and bake, in steer mode: baton decides in the kernel which
// generation gets each new connection, so a new generation can get a share
// of them first (BATON_CANARY), and the old one can stay, parked, after
// the cutover (BATON_BAKE), to return to at once.

// CanaryStep is one step of BATON_CANARY: the new generation gets Percent
// of new connections for Duration.
type CanaryStep struct {
	Percent  int
	Duration time.Duration
}

// canaryRun is a canary in progress: of s.next, the old generation being
// s.current.
type canaryRun struct {
	step int
}

// startCanary begins the canary of s.next: its workers are all ready; the old
// generation still serves the rest.
func (s *Supervisor) startCanary() {
	s.canary = &canaryRun{}
	s.canaryStep()
}

func (s *Supervisor) canaryStep() {
	c := s.canary
	st := s.opts.Canary[c.step]
	if err := s.Sockets.Split(s.current.num, s.next.num, st.Percent); err != nil {
		s.Log.Error().Err(err).Int("gen", s.next.num).Msg("steer failed")
		s.abortCanary("steer failed")
		return
	}
	s.Log.Info().Int("gen", s.next.num).Int("step", c.step+1).Int("percent", st.Percent).Dur("duration", st.Duration).Msg("canary step")
	s.after(st.Duration, timerEvent{kind: evCanaryStep, gen: s.next.num, idx: c.step})
}

// onCanaryStep ends a step: its check, if any, then the next step or the
// cutover.
func (s *Supervisor) onCanaryStep(gen, step int) {
	c := s.canary
	if c == nil || s.next.num != gen || c.step != step || s.phase >= phaseDraining {
		return
	}
	if s.CanaryCheck == nil {
		s.canaryChecked("")
		return
	}
	w, lines, err := s.CanaryCheck(gen)
	if err != nil {
		s.abortCanary("BATON_CANARY_CHECK did not start: " + err.Error())
		return
	}
	s.beginCheck(&check{w: w, why: "canary", canary: true}, lines)
	s.Log.Info().Int("pid", w.PID()).Int("gen", gen).Int("step", step+1).Msg("reload check begun")
}

// canaryChecked goes on after a step whose check passed (reason ""), or
// aborts.
func (s *Supervisor) canaryChecked(reason string) {
	c := s.canary
	if c == nil {
		// The canary was aborted while its check ran; a reload asked for
		// meanwhile was coalesced behind the check, and begins now,
		// unless the abort already began one.
		if s.next == nil && s.parked == nil {
			s.afterSwap()
		}
		return
	}
	if reason != "" {
		s.abortCanary(reason)
		return
	}
	c.step++
	if c.step < len(s.opts.Canary) {
		s.canaryStep()
		return
	}
	s.canary = nil
	s.next.canaried = true
	s.finishSwap() // all new connections to it, as a swap without a canary
}

// abortCanary sends every new connection back to the old generation and
// lets the new one go the way an old generation leaves in steer mode: it
// keeps accepting what is already queued for it, then stops.
func (s *Supervisor) abortCanary(reason string) {
	c := s.canary
	s.canary = nil
	if c == nil {
		return
	}
	if err := s.Sockets.Steer(s.current.num); err != nil {
		s.Log.Error().Err(err).Int("gen", s.current.num).Msg("steer failed")
	}
	if ck := s.checking; ck != nil && ck.canary && !ck.exited && !ck.gone {
		ck.killed = true
		_ = ck.w.Signal(unix.SIGKILL) // its answer no longer matters
	}
	g := s.next
	s.next = nil
	s.stats.ReloadsFailed++
	s.Log.Warn().Int("gen", g.num).Int("step", c.step+1).Str("reason", reason).Msg("canary aborted")
	s.conclude(g, Outcome{Gen: s.current.num, Reason: fmt.Sprintf("canary of generation %d aborted at step %d: %s", g.num, c.step+1, reason)}, g)
}

// onBakeEnd: the bake passed; the parked generation retires as an old one
// does.
func (s *Supervisor) onBakeEnd(gen, cur int) {
	old := s.parked
	if old == nil || old.num != gen || s.phase >= phaseDraining {
		return
	}
	if s.current.num != cur {
		// The timer of an earlier bake of the same parked generation (a
		// revert made it current again, and a later swap parked it anew):
		// this bake's own timer is armed for the generation it bakes.
		return
	}
	s.parked = nil
	g := s.current
	s.stats.ReloadsOK++
	s.Log.Info().Int("gen", g.num).Int("parked", old.num).Msg("bake done")
	s.conclude(g, Outcome{OK: true, Gen: g.num}, old)
}

// revert returns to the parked generation during a bake: every new
// connection goes back to it at once (its workers are still up, no cold
// start), and the generation that failed leaves as an old one does.
func (s *Supervisor) revert(reason string) {
	old, g := s.parked, s.current
	s.parked = nil
	if r := s.replacing; r != nil && r.gen == g {
		// A recycle of the failed generation's worker: it leaves with
		// its generation, and recycling goes on with the reverted one.
		s.replacing = nil
	}
	if err := s.Sockets.Steer(old.num); err != nil {
		s.Log.Error().Err(err).Int("gen", old.num).Msg("steer failed")
	}
	s.current = old
	for i := range old.slots {
		w := old.slots[i].w
		if w == nil {
			// A parked worker that exited is started again now (the
			// others serve meanwhile). So is one whose restart was
			// pending when its generation was parked: that timer found
			// it no longer current and did nothing (a second timer
			// finds the slot taken).
			old.slots[i].pending = true
			s.after(0, timerEvent{kind: evRestart, gen: old.num, idx: i})
		}
	}
	if w := old.slots[0].w; w != nil && s.owns(0) {
		s.setForeground(w.pid)
	}
	s.stats.ReloadsReverted++
	s.Log.Warn().Int("gen", g.num).Int("to", old.num).Str("reason", reason).Msg("swap reverted")
	s.conclude(g, Outcome{Gen: old.num, Reason: "generation " + strconv.Itoa(g.num) + " reverted to " + strconv.Itoa(old.num) + ": " + reason}, g)
}

// onStopping: a worker sent STOPPING=1 unasked, so it is about to exit. A
// worker under test in a canary or a bake is judged on it at once, while
// it still accepts: waiting for its exit would leave connections steered to
// its generation meanwhile with nobody left to accept them.
func (s *Supervisor) onStopping(w *worker) {
	g := w.gen
	why := "worker " + strconv.Itoa(w.idx) + " sent STOPPING=1 unasked"
	switch {
	case s.inCanary(g):
		s.abortCanary(why)
	case s.parked != nil && g == s.current:
		s.revert(why + " during the bake")
	default:
		s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", w.pid).Msg("worker stopping unasked")
	}
}

// inCanary reports whether g is the generation in its canary.
func (s *Supervisor) inCanary(g *generation) bool {
	return s.canary != nil && g == s.next
}
