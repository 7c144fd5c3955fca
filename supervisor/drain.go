//go:build linux

package supervisor

import (
	"slices"
	"time"

	"github.com/baton-init/baton/handoff/idle"
)

// idlePoll is how often a generation in an idle drain has its connections
// looked at (BATON_DRAIN=idle). A look lists /proc and dumps the
// namespace's TCP sockets through netlink, in a goroutine of its own.
const idlePoll = 20 * time.Millisecond

// idleResult is one look at a draining generation's connections, sent to
// the loop by the goroutine that made it.
type idleResult struct {
	gen   int
	conns []idle.Conn
	err   error
}

// retireWhenIdle asks g's workers to stop, g having handed over and its
// queue being empty: at once, or with BATON_DRAIN=idle once each of its
// TCP connections has been seen idle, for at most the drain's bound.
func (s *Supervisor) retireWhenIdle(g *generation) {
	if s.opts.DrainIdle <= 0 || s.IdleConns == nil || !s.hasWorkers(g) {
		s.retireGeneration(g)
		s.maybeRelease()
		return
	}
	g.drain = &idle.Tracker{}
	g.drainBegun = s.Now()
	s.pollIdle(g)
}

// pollIdle looks at g's connections in a goroutine of its own, which only
// reads /proc and the kernel's socket table and reports to the loop.
func (s *Supervisor) pollIdle(g *generation) {
	var pgids []int
	for _, w := range s.byPID {
		if w.gen == g {
			pgids = append(pgids, w.pid) // each worker leads its own group
		}
	}
	conns, gen, res := s.IdleConns, g.num, s.idleResults
	go func() {
		c, err := conns(pgids)
		res <- idleResult{gen: gen, conns: c, err: err}
	}()
}

// onIdlePoll: time for the next look at gen's connections.
func (s *Supervisor) onIdlePoll(gen int) {
	if g := s.draining(gen); g != nil {
		s.pollIdle(g)
	}
}

// draining returns leaving generation gen if it is in an idle drain.
func (s *Supervisor) draining(gen int) *generation {
	i := slices.IndexFunc(s.leaving, func(g *generation) bool { return g.num == gen })
	if i < 0 || s.leaving[i].retired || s.leaving[i].drain == nil || s.phase >= phaseStopping {
		return nil
	}
	return s.leaving[i]
}

// onIdle counts what a look found: once every connection of the
// generation has been seen idle, or the bound passed, or its workers are
// gone, it is asked to stop; else it is looked at again.
func (s *Supervisor) onIdle(r idleResult) {
	g := s.draining(r.gen)
	if g == nil {
		return
	}
	elapsed := s.Now().Sub(g.drainBegun)
	switch {
	case r.err != nil:
		s.Log.Error().Err(r.err).Int("gen", g.num).Msg("idle drain failed")
	case !s.hasWorkers(g):
	default:
		left := g.drain.Observe(r.conns)
		if left == 0 {
			s.Log.Info().Int("gen", g.num).Dur("elapsed", elapsed).Msg("old generation idle")
			break
		}
		if elapsed >= s.opts.DrainIdle {
			s.Log.Warn().Int("gen", g.num).Int("busy", left).Dur("elapsed", elapsed).Msg("old generation not idle in time")
			break
		}
		s.after(idlePoll, timerEvent{kind: evIdlePoll, gen: g.num})
		return
	}
	g.drain = nil
	s.retireGeneration(g)
	s.maybeRelease()
}
