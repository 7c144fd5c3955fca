//go:build linux

package supervisor

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/handoff/idle"
	"github.com/baton-init/baton/reaper"
	"github.com/baton-init/baton/spawn"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Worker is a started worker process as the loop sees it.
type Worker interface {
	PID() int
	// Signal signals the worker's whole process group.
	Signal(unix.Signal) error
}

// shimmed is a Worker that may still be baton's shim when Start returns
// (spawn.Proc). While it is, a signal would reach the shim's Go runtime,
// not the command: the loop holds the worker's signals until WaitExec
// returns, then sends them in order.
type shimmed interface {
	InShim() bool
	WaitExec()
}

// Supervisor is baton's one event loop. Every field below the seams is
// owned by the goroutine running Run; other goroutines only send to it.
type Supervisor struct {
	opts Options
	Log  zerolog.Logger

	// Seams, replaced in tests. New fills them with the real thing.
	// Start starts worker index of generation gen on listening
	// descriptors fds (3, 4, ... in the worker); with foreground it takes
	// the terminal's foreground as it starts.
	Start       func(gen, index int, fds []int, foreground bool) (Worker, error)
	Reap        func() ([]reaper.Exit, error)
	HasChildren func() bool
	KillAll     func(unix.Signal) error // kill(-1, sig): every process in the namespace but baton
	// KillGroup is kill(-pgid, sig); with sig 0 it tells whether the group
	// still has a member (ESRCH: none).
	KillGroup func(pgid int, sig unix.Signal) error
	// Check, when set (BATON_RELOAD_CHECK), starts the pre-flight check
	// of a reload whose generation will be gen: a process started as the
	// workers are, in a process group of its own, which the loop reaps
	// like any child, and a channel that gets its last line of output once
	// the output ends. When the Worker also has EndOutput(grace), the loop
	// calls it at the check's exit: the line must come within grace then,
	// even if a child of the check holds the output open.
	Check func(gen int) (Worker, <-chan string, error)
	// CanaryCheck, when set (BATON_CANARY_CHECK), is run at the end of
	// each canary step, as Check is; a failure aborts the canary.
	CanaryCheck func(gen int) (Worker, <-chan string, error)
	// Sockets gives each generation its listening descriptors and, in
	// steer mode, which one gets new connections. Nil: no listeners.
	Sockets handoff.Sockets
	// Foreground, when set, means the workers own the terminal (plain mode
	// on a TTY): the current generation's worker 0 holds its foreground,
	// and the loop calls Foreground(pgid) to move it, 0 meaning baton's own
	// group. Nil in pool mode: baton keeps the terminal, so Ctrl-C reaches
	// baton, which stops every worker.
	Foreground func(pgid int) error
	RSS        func(pid int) (int64, error)
	// IdleConns lists the TCP connections of the processes in the given
	// process groups (BATON_DRAIN=idle); it runs in a goroutine of its
	// own, never the loop's. Nil: no idle drain.
	IdleConns func(pgids []int) ([]idle.Conn, error)
	AfterFunc func(time.Duration, func())
	// arm schedules a timer event; New makes it send ev to the loop after
	// d through AfterFunc. Tests replace it to fire timers by kind.
	arm func(d time.Duration, ev timerEvent)
	Now func() time.Time

	// Notes delivers sd_notify messages; Reloads delivers reload requests
	// from anything but a signal (file watch, control socket). Nil
	// channels are fine.
	Notes   <-chan handoff.Note
	Reloads <-chan string

	// Started, if set, runs once right after the first workers were
	// started, for set-up that need not delay them (main opens the control
	// socket there); the loop reaps once after it, as tini reaps after
	// every wake-up.
	Started func()

	timers  chan timerEvent
	queries chan chan Status
	execs   chan *worker // a worker left the shim
	// reloadReqs are reloads whose outcome someone waits for (baton reload).
	reloadReqs chan reloadReq
	// queued are the replies of reloads coalesced into the swap after the
	// one in progress.
	queued []chan<- Outcome
	// checking is the pre-flight check in progress; checkLines its output
	// (nil when none).
	checking   *check
	checkLines <-chan string

	byPID        map[int]*worker
	current      *generation
	next         *generation // pending swap, nil when none
	genCount     int
	reloadQueued bool
	seenNotify   bool
	replacing    *worker // a recycle replacement waiting to be ready
	// lingering are retired workers whose leader is reaped while their
	// process group may still have members, by pgid: the group id cannot
	// name anyone else until the last member is gone.
	lingering map[int]*worker
	// left are the process groups that outlived their leader, by pgid:
	// what exited workers (Subreaper only) and reload checks left behind.
	// groupPoll: a look at the workers' is armed (see checkDone).
	left      map[int]leftGroup
	groupPoll bool
	// killAllHeld is a kill(-1) signal waiting for workers to leave the
	// shim (it would reach their Go runtime, not their command); 0: none.
	killAllHeld unix.Signal
	// leaving are the generations whose sockets are still in the kernel's
	// groups though no longer steered to (steer mode): the one that handed
	// over, and rolled-back ones. Each is released once its workers were
	// told to stop and every process of theirs is gone, as only then does
	// baton's copy of a group stay the kernel's: a UDP socket leaves at its
	// last close, and a TCP listener taken out by shutdown comes back, at
	// the end, at its holder's next listen(). Empty in shared mode.
	leaving []*generation
	// canary is the canary in progress (BATON_CANARY), parked the old
	// generation during a bake (BATON_BAKE).
	canary   *canaryRun
	parked   *generation
	bakeEnds time.Time

	phase   phase
	stopSig unix.Signal
	// exitCode is baton's status before BATON_EXIT_MAP: the one end chose,
	// else the first non-zero exit of a current worker during a shutdown;
	// codeUnset while neither is known (0 at the end).
	exitCode int
	stats    Stats

	// Relays (steer mode, relay.go): relayEvents gets every relay's
	// RelayEvents; relaysOpen counts the relays not yet ended;
	// relayBatches, by generation, the dials not yet done and their
	// outcomes, logged once all are done.
	relayEvents  chan handoff.RelayEvent
	relaysOpen   int
	relayBatches map[int]*relayBatch
	// relaysAnswering counts the relays whose worker's side has not
	// ended yet: what shutdown waits for.
	relaysAnswering int
	// stopAfterRelay: the stop signal waits for the dials of the leaving
	// generation's connections relayed at the shutdown (see beginShutdown).
	stopAfterRelay bool
	// stopExpired: the stop timeout passed; relays are not waited for.
	stopExpired bool
	// socketsClosed: Sockets.CloseAll was called (see checkDone).
	socketsClosed bool
	// idleResults gets each look at a draining generation's connections
	// (drain.go); at most one is under way for each generation.
	idleResults chan idleResult
}

// New returns a Supervisor wired to the real kernel (Reap, HasChildren,
// KillAll, KillGroup, AfterFunc, Now, and RSS when BATON_MAX_RSS is set);
// the caller sets Start and, as it needs them, Check, CanaryCheck,
// Sockets, Foreground, Notes, Reloads and Started.
func New(opts Options, log zerolog.Logger) *Supervisor {
	s := &Supervisor{
		opts:        opts,
		Log:         log,
		Reap:        reaper.Reap,
		HasChildren: reaper.HasChildren,
		KillAll:     func(sig unix.Signal) error { return unix.Kill(-1, sig) },
		KillGroup:   func(pgid int, sig unix.Signal) error { return unix.Kill(-pgid, sig) },
		AfterFunc:   func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		Now:         time.Now,
		timers:      make(chan timerEvent, 1024),
		queries:     make(chan chan Status),
		execs:       make(chan *worker, 1024),
		reloadReqs:  make(chan reloadReq),
		exitCode:    codeUnset,
		// Three events a relay, at most MaxRelays relays at once: a
		// relay's goroutine does not wait for the loop unless it lags far
		// behind.
		relayEvents:  make(chan handoff.RelayEvent, 3*handoff.MaxRelays),
		relayBatches: map[int]*relayBatch{},
		idleResults:  make(chan idleResult, 16),
		byPID:        map[int]*worker{},
		lingering:    map[int]*worker{},
		left:         map[int]leftGroup{},
	}
	s.arm = func(d time.Duration, ev timerEvent) {
		s.AfterFunc(d, func() { s.timers <- ev })
	}
	if opts.MaxRSS > 0 {
		s.RSS = rssReader() // only read when BATON_MAX_RSS is set
	}
	return s
}

// Query asks the loop for a status snapshot. It fails if the loop does not
// answer before ctx ends (it has exited, or is busy past the deadline).
func (s *Supervisor) Query(ctx context.Context) (Status, error) {
	reply := make(chan Status, 1)
	return roundTrip(ctx, s.queries, reply, reply)
}

// roundTrip hands req to the loop on ch and waits for its answer on reply,
// both within ctx.
func roundTrip[R, T any](ctx context.Context, ch chan<- R, req R, reply <-chan T) (T, error) {
	var zero T
	select {
	case ch <- req:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Run starts the first generation and runs the event loop until baton
// should exit; it returns baton's exit status (BATON_EXIT_MAP applied).
// sigs must already be subscribed to every signal baton handles.
func (s *Supervisor) Run(sigs <-chan os.Signal) int {
	// Children inherited across exec, or exits before signal.Notify, would
	// otherwise wait for the next SIGCHLD (tini reaps on every wake-up).
	s.reap()
	if s.Sockets == nil {
		s.Sockets = handoff.Shared(nil)
	}
	s.current = s.newGeneration()
	if fds, err := s.Sockets.Open(s.current.num); err != nil {
		s.Log.Error().Err(err).Int("gen", s.current.num).Msg("listen failed")
		s.end(1)
	} else {
		s.current.fds = fds
	}
	for i := 0; i < s.opts.Workers && s.phase < phaseStopping; i++ {
		if w, err := s.startWorker(s.current, i, s.owns(i)); err != nil {
			s.end(spawn.Code(err))
		} else {
			w.initial = true
		}
	}
	if s.Started != nil {
		s.Started()
		s.reap()
	}
	s.after(s.opts.ReadyTimeout, timerEvent{kind: evReadyTimeout, gen: s.current.num})
	if s.opts.MaxRSS > 0 || s.opts.MaxAge > 0 {
		s.after(recycleEvery, timerEvent{kind: evRecycle})
	}
	s.checkDone()
	for s.phase != phaseDone {
		select {
		case sig := <-sigs:
			if sig, ok := sig.(syscall.Signal); ok {
				s.onSignal(sig)
			}
		case n := <-s.Notes:
			s.onNote(n)
		case ev := <-s.timers:
			s.onTimer(ev)
		case why := <-s.Reloads:
			s.requestReload(why, nil)
		case req := <-s.reloadReqs:
			s.requestReload(req.why, req.reply)
		case line := <-s.checkLines:
			s.onCheckLine(line)
		case q := <-s.queries:
			q <- s.status()
		case w := <-s.execs:
			s.onExec(w)
		case ev := <-s.relayEvents:
			s.onRelay(ev)
		case r := <-s.idleResults:
			s.onIdle(r)
		}
		s.checkDone()
	}
	code := s.opts.ExitMap.Apply(max(s.exitCode, 0))
	s.Log.Info().Int("code", code).Msg("baton exiting")
	return code
}
