//go:build linux

package supervisor

import "time"

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
	if w.initial && !w.everReady && s.opts.Restart != RestartNever {
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
		for _, o := range g.workers {
			if o != nil {
				return
			}
		}
		for _, p := range g.pending {
			if p {
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
	kept := g.restarts[w.idx][:0]
	for _, t := range g.restarts[w.idx] {
		if now.Sub(t) < s.opts.RestartLimit.Window {
			kept = append(kept, t)
		}
	}
	g.restarts[w.idx] = kept
	if len(kept) >= s.opts.RestartLimit.Count {
		s.Log.Error().Int("gen", g.num).Int("worker", w.idx).Int("code", code).
			Int("restarts", len(kept)).Dur("window", s.opts.RestartLimit.Window).Msg("restart limit reached")
		s.end(code)
		return
	}
	g.restarts[w.idx] = append(kept, now)
	if now.Sub(w.started) >= restartReset {
		g.fails[w.idx] = 0
	}
	backoff := restartBase << min(g.fails[w.idx], 16)
	if backoff > restartMax {
		backoff = restartMax
	}
	g.fails[w.idx]++
	g.pending[w.idx] = true
	s.stats.Restarts++
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Dur("backoff", backoff).Int("restarts", s.stats.Restarts).Msg("worker restarting")
	s.after(backoff, timerEvent{kind: evRestart, gen: g.num, idx: w.idx})
}
