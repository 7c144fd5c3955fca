//go:build linux

package supervisor

import "time"

// Stats are counters for /metrics.
type Stats struct {
	ReloadsOK, ReloadsFailed, ReloadsCoalesced int
	ReloadsReverted                            int // during a bake
	Restarts, Orphans, Forwarded, Recycled     int
	WatchdogKills                              int
	LastSwap                                   time.Duration
}

// Status is a snapshot of the loop's state.
type Status struct {
	Gen                         int
	Ready, Healthy, Stopping    bool
	Starting, Serving, Retiring int
	// Canary is the generation in its canary (BATON_CANARY), 0 when none:
	// at step CanaryStep (1, 2, ...) it gets CanaryPercent of new
	// connections.
	Canary, CanaryStep, CanaryPercent int
	// Parked is the old generation kept during a bake (BATON_BAKE), 0
	// when none; the bake ends in BakeLeft. Its workers, alive, count as
	// ParkedWorkers, not as Serving.
	Parked, ParkedWorkers int
	BakeLeft              time.Duration
	Stats
}

func (s *Supervisor) status() Status {
	st := Status{Stats: s.stats, Stopping: s.phase >= phaseDraining}
	if s.current != nil {
		st.Gen = s.current.num
	}
	anyReady := false
	for _, w := range s.byPID {
		switch {
		case w.retiring:
			st.Retiring++
		case s.parked != nil && w.gen == s.parked:
			st.ParkedWorkers++
		case w.ready:
			st.Serving++
			anyReady = true
		default:
			st.Starting++
		}
	}
	if c := s.canary; c != nil {
		st.Canary, st.CanaryStep, st.CanaryPercent = s.next.num, c.step+1, s.opts.Canary[c.step].Percent
	}
	if s.parked != nil {
		st.Parked, st.BakeLeft = s.parked.num, max(s.bakeEnds.Sub(s.Now()), 0)
	}
	st.Healthy = st.Serving+st.Starting > 0 && s.phase < phaseStopping
	st.Ready = anyReady && !st.Stopping && s.current != nil && s.current.ready
	return st
}
