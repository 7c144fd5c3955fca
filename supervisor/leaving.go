//go:build linux

package supervisor

import (
	"slices"
	"time"
)

// steerPoll is how often the old generation's queue is looked at during a
// handover; maxHandover bounds the wait for it to empty (its workers may
// have stopped accepting on their own).
const (
	steerPoll   = 5 * time.Millisecond
	maxHandover = 2 * time.Second
)

// onHandover looks at the leaving generation's queue: empty (or waited
// long enough), its workers are asked to stop.
func (s *Supervisor) onHandover(gen int) {
	i := slices.IndexFunc(s.leaving, func(g *generation) bool { return g.num == gen })
	if i < 0 || s.leaving[i].retired || s.phase >= phaseStopping {
		return
	}
	g := s.leaving[i]
	if n := s.Sockets.Pending(gen); n > 0 && s.Now().Sub(g.handover) < maxHandover && s.hasWorkers(g) {
		s.after(steerPoll, timerEvent{kind: evHandover, gen: gen})
		return
	} else if n > 0 {
		s.Log.Warn().Int("gen", gen).Int("pending", n).Msg("old generation's queue not emptied")
	}
	s.retireWhenIdle(g)
}

// hasWorkers tells whether any worker of g is alive: with none, nothing
// will accept what is queued for it, and waiting is pointless (released,
// its queue moves to another member of the group where the kernel
// migrates requests, net.ipv4.tcp_migrate_req=1).
func (s *Supervisor) hasWorkers(g *generation) bool {
	for _, w := range s.byPID {
		if w.gen == g {
			return true
		}
	}
	return false
}

// maybeRelease takes each leaving generation's sockets out of the kernel's
// groups once its workers were told to stop and every process of theirs
// is gone, and steers to a new generation that waited for them.
func (s *Supervisor) maybeRelease() {
	n := len(s.leaving)
	s.leaving = slices.DeleteFunc(s.leaving, s.release)
	if len(s.leaving) == 0 && n > 0 {
		if g := s.next; g != nil && g.ready && s.phase == phaseRunning {
			s.finishSwap()
		}
	}
}

// release takes g's sockets out of the kernel's groups, if no process of
// g can hold them any more, and tells whether it did.
func (s *Supervisor) release(g *generation) bool {
	if !g.retired || s.hasWorkers(g) {
		return false
	}
	for _, w := range s.lingering {
		if w.gen == g {
			return false
		}
	}
	if s.phase < phaseStopping {
		// What the kernel queued for g and no worker of g took: a new
		// generation that failed, or workers that stopped accepting
		// early. Passed on rather than reset.
		s.relay(g.num)
	}
	s.Sockets.Release(g.num)
	s.Log.Debug().Int("gen", g.num).Msg("old generation left")
	return true
}
