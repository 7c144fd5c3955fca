//go:build linux

package supervisor

import (
	"math/rand/v2"
	"time"

	"github.com/baton-init/baton/handoff/idle"
	"github.com/baton-init/baton/spawn"
	"golang.org/x/sys/unix"
)

type worker struct {
	w        Worker
	pid      int
	gen      *generation
	idx      int
	started  time.Time
	ready    bool
	retiring bool
	initial  bool // part of the very first start: an exit before ready is a startup failure
	maxAge   time.Duration
	inShim   bool          // still baton's shim: signals wait in held
	lastPing time.Time     // the last WATCHDOG=1 (BATON_WATCHDOG); zero: none yet
	watched  bool          // a watchdog timer is armed for it
	hung     bool          // the watchdog found it hung: SIGABRT sent
	held     []unix.Signal // signals to send once it runs its command
	// gone: reaped, its exit not yet handled (a signal gets ESRCH).
	gone bool
	// groupGone: its leader is reaped and its process group was empty at
	// a reap since, so the group id may name someone else by now.
	groupGone bool
}

// slot is one of a generation's BATON_WORKERS places: the worker that
// holds it, and what its crashes have cost so far.
type slot struct {
	w     *worker // the live worker; nil while empty
	fails int     // consecutive crashes, for backoff
	// restarts are the restart times within the restart limit's window:
	// the limit counts per slot, so a crash of the whole pool at once (the
	// OOM killer, a dependency outage) counts once per slot, not once per
	// worker.
	restarts []time.Time
	pending  bool // a restart is scheduled
}

type generation struct {
	num   int
	begun time.Time
	slots []slot
	ready bool
	fds   []int // listening descriptors of its workers
	// handover (steer mode) is when new connections went to the next
	// generation; its workers retire once its own queue is empty.
	handover time.Time
	retired  bool // its workers were told to stop
	// drain follows its connections during an idle drain (BATON_DRAIN=idle)
	// begun at drainBegun; nil when none is in progress.
	drain      *idle.Tracker
	drainBegun time.Time
	// waiters get the outcome of the swap to this generation.
	waiters []chan<- Outcome
	// canaried: its canary steps are done (or there were none to do).
	canaried bool
	// started counts the slots started (a rolling swap starts them a few
	// at a time).
	started int
}

func (s *Supervisor) newGeneration() *generation {
	s.genCount++
	return &generation{
		num:   s.genCount,
		begun: s.Now(),
		slots: make([]slot, s.opts.Workers),
	}
}

// startWorker starts worker idx of g; a failure is logged here.
func (s *Supervisor) startWorker(g *generation, idx int, foreground bool) (*worker, error) {
	p, err := s.Start(g.num, idx, g.fds, foreground)
	if err != nil {
		// The one place a failed start is logged, with the status baton
		// would exit with for it (127, 126: the shell's).
		s.Log.Error().Err(err).Int("gen", g.num).Int("worker", idx).Int("code", spawn.Code(err)).Msg("worker start failed")
		return nil, err
	}
	w := &worker{w: p, pid: p.PID(), gen: g, idx: idx, started: s.Now()}
	if sh, ok := p.(shimmed); ok && sh.InShim() {
		w.inShim = true
		go func() { // turns the blocking wait into one message
			sh.WaitExec()
			s.execs <- w
		}()
	}
	if s.opts.MaxAge > 0 {
		// Jitter spreads recycling so workers started together do not
		// all go at once (gunicorn's max_requests_jitter, in time).
		w.maxAge = s.opts.MaxAge + time.Duration(rand.Int64N(int64(s.opts.MaxAge)/10+1))
	}
	s.byPID[w.pid] = w
	if g.slots[idx].w == nil {
		g.slots[idx].w = w
	}
	s.Log.Info().Int("gen", g.num).Int("worker", idx).Int("pid", w.pid).Msg("worker started")
	switch {
	case s.opts.Ready.Kind == "delay":
		s.after(s.opts.Ready.Delay, timerEvent{kind: evReadyDelay, w: w})
	case s.opts.Ready.Kind == "auto" && !s.seenNotify:
		s.after(autoReadyAfter, timerEvent{kind: evReadyDelay, w: w})
	}
	return w, nil
}

// owns reports whether worker idx of the current generation takes the
// terminal's foreground when it starts.
func (s *Supervisor) owns(idx int) bool {
	return s.Foreground != nil && idx == 0
}

// setForeground moves the terminal to pgid (0: baton itself).
func (s *Supervisor) setForeground(pgid int) {
	if err := s.Foreground(pgid); err != nil {
		s.Log.Warn().Err(err).Int("pgid", pgid).Msg("terminal foreground not moved")
	}
}
