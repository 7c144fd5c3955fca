//go:build linux

package supervisor

import (
	"time"

	"github.com/baton-init/baton/spawn"
)

// Backoff between restarts of one worker slot: restartBase doubled per
// consecutive crash up to restartMax; a worker that stayed up restartReset
// starts the count again.
const (
	restartBase  = 100 * time.Millisecond
	restartMax   = 10 * time.Second
	restartReset = 10 * time.Second
)

func (s *Supervisor) onCurrentExit(w *worker, code int) {
	g := w.gen
	if w.initial && !w.ready && s.opts.Restart != RestartNever {
		// A pool that never came up is a failed deployment, not a crash
		// to retry. Under never (tini's mode) an exit is just the end.
		s.Log.Error().Int("gen", g.num).Int("worker", w.idx).Int("code", code).Msg("worker failed before ready")
		s.end(code)
		return
	}
	switch {
	case s.opts.Restart == RestartNever:
		s.end(code)
	case s.opts.Restart == RestartOnFailure && code == 0:
		for _, sl := range g.slots {
			if sl.w != nil || sl.pending {
				return
			}
		}
		s.end(0)
	default:
		s.scheduleRestart(w, code)
	}
}

func (s *Supervisor) scheduleRestart(w *worker, code int) {
	g, now := w.gen, s.Now()
	sl := &g.slots[w.idx]
	kept := sl.restarts[:0]
	for _, t := range sl.restarts {
		if now.Sub(t) < s.opts.RestartLimit.Window {
			kept = append(kept, t)
		}
	}
	sl.restarts = kept
	if len(kept) >= s.opts.RestartLimit.Count {
		s.Log.Error().Int("gen", g.num).Int("worker", w.idx).Int("code", code).
			Int("restarts", len(kept)).Dur("window", s.opts.RestartLimit.Window).Msg("restart limit reached")
		s.end(code)
		return
	}
	sl.restarts = append(kept, now)
	if now.Sub(w.started) >= restartReset {
		sl.fails = 0
	}
	backoff := restartBase << min(sl.fails, 16)
	if backoff > restartMax {
		backoff = restartMax
	}
	sl.fails++
	sl.pending = true
	s.stats.Restarts++
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Dur("backoff", backoff).Int("restarts", s.stats.Restarts).Msg("worker restarting")
	s.after(backoff, timerEvent{kind: evRestart, gen: g.num, idx: w.idx})
}

// onRestart: slot idx of generation gen waited out its backoff.
func (s *Supervisor) onRestart(gen, idx int) {
	g := s.current
	if s.phase >= phaseStopping || g.num != gen || g.slots[idx].w != nil {
		return
	}
	if s.next != nil && s.rolling() && len(s.byPID) >= s.opts.Workers+s.opts.Surge {
		// A rolling swap holds every place BATON_SURGE allows: the
		// restart waits for one (the swap's own starts count alike).
		s.after(restartBase, timerEvent{kind: evRestart, gen: gen, idx: idx})
		return
	}
	g.slots[idx].pending = false
	if _, err := s.startWorker(g, idx, s.owns(idx)); err != nil {
		s.scheduleRestart(&worker{gen: g, idx: idx, started: s.Now()}, spawn.Code(err))
	}
}
