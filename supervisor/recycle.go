//go:build linux

package supervisor

import "time"

// recycleEvery is how often RSS and age are checked (BATON_MAX_RSS,
// BATON_MAX_AGE).
const recycleEvery = 2 * time.Second

// recycleCheck starts a replacement for the worker most in need of one.
func (s *Supervisor) recycleCheck() {
	if s.phase >= phaseDraining || s.next != nil || s.replacing != nil {
		return
	}
	// One at a time, the most deserving first: the oldest worker past its
	// age, else the largest past BATON_MAX_RSS. Taking the first slot that
	// qualifies would recycle slot 0 over and over when BATON_MAX_AGE is
	// shorter than the check interval, and never the others.
	now := s.Now()
	var pick *worker
	reason := ""
	for _, sl := range s.current.slots {
		w := sl.w
		if w == nil || !w.ready || w.maxAge <= 0 || now.Sub(w.started) < w.maxAge {
			continue
		}
		if pick == nil || w.started.Before(pick.started) {
			pick, reason = w, "max age"
		}
	}
	if pick == nil && s.opts.MaxRSS > 0 {
		var worst int64
		for _, sl := range s.current.slots {
			w := sl.w
			if w == nil || !w.ready {
				continue
			}
			if r, err := s.RSS(w.pid); err == nil && r > s.opts.MaxRSS && r > worst {
				pick, reason, worst = w, "max rss", r
			}
		}
	}
	if pick == nil {
		return
	}
	s.Log.Info().Int("gen", pick.gen.num).Int("worker", pick.idx).Int("pid", pick.pid).Str("reason", reason).Msg("recycle begun")
	nw, err := s.startWorker(s.current, pick.idx, false)
	if err != nil {
		return
	}
	s.replacing = nw
	s.after(s.opts.ReadyTimeout, timerEvent{kind: evRecycleTimeout, w: nw})
}

// onRecycleTimer looks at the workers, and again in recycleEvery.
func (s *Supervisor) onRecycleTimer() {
	s.recycleCheck()
	if s.phase == phaseRunning {
		s.after(recycleEvery, timerEvent{kind: evRecycle})
	}
}

// onRecycleTimeout: replacement w had BATON_READY_TIMEOUT to be ready.
func (s *Supervisor) onRecycleTimeout(w *worker) {
	if w != s.replacing || w.ready {
		return
	}
	// Not ready in time: the old worker serves on, and the next check may
	// try again.
	s.replacing = nil
	s.Log.Warn().Int("gen", w.gen.num).Int("worker", w.idx).Int("pid", w.pid).Str("reason", "not ready within BATON_READY_TIMEOUT").Msg("recycle aborted")
	s.retire(w)
}
