//go:build linux

package supervisor

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/reaper"
	"github.com/baton-init/baton/spawn"
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

// maxHeld bounds the signals held for one worker in its shim; more are
// dropped (and logged). A standard signal already held is not held twice,
// as the kernel does not queue it twice either.
const maxHeld = 64

// firstRealtime is the first real-time signal number; real-time signals
// queue, standard ones do not.
const firstRealtime = 32

// Options is the supervisor's configuration, already validated.
type Options struct {
	Workers       int
	Ready         ReadyMode
	ReadyTimeout  time.Duration
	ReloadSignal  unix.Signal // 0: reloads by signal disabled
	StopSignal    unix.Signal
	StopSignalSet bool // BATON_STOP_SIGNAL given explicitly
	StopTimeout   time.Duration
	ShutdownDelay time.Duration
	SignalMap     SignalMap
	ExitMap       ExitMap // applied last, to the status Run returns
	Restart       Restart
	RestartLimit  RestartLimit
	MaxRSS        int64         // bytes; 0: off
	MaxAge        time.Duration // 0: off
	// SteerSettle is set in steer mode (BATON_HANDOFF=steer): how long
	// after steering new connections to a new generation the old one's
	// queue is first looked at. Connections whose handshake began before
	// the switch still land in the old socket's queue for about one round
	// trip. 0 (shared mode): the old generation retires at once.
	SteerSettle time.Duration
	// Surge (BATON_SURGE) bounds a reload: at most Workers+Surge workers
	// alive at once, draining ones included. Surge >= Workers (or 0) is a
	// whole-generation swap.
	Surge int
	// Canary (BATON_CANARY, steer mode) are the shares of new connections
	// the new generation gets, step by step, before all of them.
	Canary []CanaryStep
	// Bake (BATON_BAKE, steer mode) keeps the old generation parked this
	// long after the cutover, to return to at once if a new worker dies.
	Bake time.Duration
	// Watchdog (BATON_WATCHDOG): a worker that sent WATCHDOG=1 and then
	// nothing for this long is hung. 0: off.
	Watchdog time.Duration
	// PID1 is true when baton is its namespace's init: the stop signal then
	// reaches every process in the namespace, and baton waits for all of
	// them before it exits.
	PID1 bool
	// Subreaper is true when baton is a child subreaper and not PID 1
	// (docker run --init): what a worker leaves in its process group when
	// it exits comes back to baton, which stops it with the workers and
	// waits for it before it exits, as PID 1 waits for every process.
	Subreaper bool
}

// groupPollEvery is how often, while baton stops as a subreaper, the
// process groups exited workers left behind are looked at.
const groupPollEvery = 50 * time.Millisecond

// Backoff between restarts of one worker slot: restartBase doubled per
// consecutive crash up to restartMax; a worker that stayed up restartReset
// starts the count again.
const (
	restartBase  = 100 * time.Millisecond
	restartMax   = 10 * time.Second
	restartReset = 10 * time.Second
	// recycleEvery is how often RSS and age are checked.
	recycleEvery = 2 * time.Second
)

// Supervisor is baton's one event loop. Every field below the seams is
// owned by the goroutine running Run; other goroutines only send to it.
type Supervisor struct {
	Options
	Log zerolog.Logger

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
	AfterFunc  func(time.Duration, func())
	Now        func() time.Time

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
	// checkLeft are the process groups of checks that exited while the
	// group still had members, by pgid: sent SIGTERM once the check's
	// outcome is decided, SIGKILL after the stop timeout, forgotten at the
	// reap that finds the group empty (its id cannot name anyone else
	// until then).
	checkLeft map[int]bool

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
	// groups (Subreaper only) are the process groups of reaped workers
	// that still had members, by pgid; a reap drops those that emptied.
	// groupPoll: a look at them is armed (see checkDone).
	groups    map[int]bool
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

	draining     bool // shutdown requested: not ready, no reloads
	stopping     bool // stop signal sent: waiting for processes to go
	stopSig      unix.Signal
	codeFixed    bool
	exitCode     int
	firstNonZero int
	done         bool
	stats        Stats

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
}

// relayBatch is what the loop knows of a generation's relays being dialled.
type relayBatch struct {
	dialing, ok, failed int
	err                 error
}

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

type worker struct {
	w         Worker
	pid       int
	gen       *generation
	idx       int
	started   time.Time
	ready     bool
	everReady bool
	retiring  bool
	initial   bool // part of the very first start: an exit before ready is a startup failure
	maxAge    time.Duration
	inShim    bool          // still baton's shim: signals wait in held
	lastPing  time.Time     // the last WATCHDOG=1 (BATON_WATCHDOG); zero: none yet
	watched   bool          // a watchdog timer is armed for it
	hung      bool          // the watchdog found it hung: SIGABRT sent
	held      []unix.Signal // signals to send once it runs its command
	// groupGone: its leader is reaped and its process group was empty at
	// a reap since, so the group id may name someone else by now.
	groupGone bool
}

type generation struct {
	num     int
	begun   time.Time
	workers []*worker // slot -> live worker; nil while empty
	fails   []int     // consecutive crashes per slot, for backoff
	// restarts are each slot's restart times within the restart limit's
	// window: the limit counts per slot, so a crash of the whole pool at
	// once (the OOM killer, a dependency outage) counts once per slot,
	// not once per worker.
	restarts [][]time.Time
	pending  []bool // a restart is scheduled for the slot
	ready    bool
	fds      []int // listening descriptors of its workers
	// handover (steer mode) is when new connections went to the next
	// generation; its workers retire once its own queue is empty.
	handover time.Time
	retired  bool // its workers were told to stop
	// waiters get the outcome of the swap to this generation.
	waiters []chan<- Outcome
	// canaried: its canary steps are done (or there were none to do).
	canaried bool
	// started counts the slots started (a rolling swap starts them a few
	// at a time).
	started int
}

type timerKind int

const (
	evReadyDelay timerKind = iota
	evReadyTimeout
	evRestart
	evRetireKill
	evShutdownDelay
	evStopKill
	evRecycle
	evRecycleTimeout
	evHandover
	evCheckTimeout
	evWatchdog
	evWatchdogKill
	evCanaryStep
	evBakeEnd
	evCheckKill
	evGroupPoll
)

type timerEvent struct {
	kind timerKind
	gen  int
	idx  int
	pid  int
	w    *worker
}

// New returns a Supervisor wired to the real kernel; the caller sets
// Start, Notes and Reloads.
func New(opts Options, log zerolog.Logger) *Supervisor {
	s := &Supervisor{
		Options:     opts,
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
	s.byPID = map[int]*worker{}
	s.lingering = map[int]*worker{}
	s.checkLeft = map[int]bool{}
	s.groups = map[int]bool{}
	if s.timers == nil {
		s.timers = make(chan timerEvent, 1024)
	}
	if s.queries == nil {
		s.queries = make(chan chan Status)
	}
	if s.execs == nil {
		s.execs = make(chan *worker, 1024)
	}
	if s.reloadReqs == nil {
		s.reloadReqs = make(chan reloadReq)
	}
	// Three events a relay, at most handoff.MaxRelays relays at once: a relay's
	// goroutine does not wait for the loop unless it lags far behind.
	s.relayEvents = make(chan handoff.RelayEvent, 3*handoff.MaxRelays)
	s.relayBatches = map[int]*relayBatch{}
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
	for i := 0; i < s.Workers && !s.stopping; i++ {
		if w, err := s.startWorker(s.current, i, s.owns(i)); err != nil {
			s.Log.Error().Err(err).Int("gen", s.current.num).Int("worker", i).Int("code", spawn.Code(err)).Msg("worker start failed")
			s.end(spawn.Code(err))
		} else {
			w.initial = true
		}
	}
	if s.Started != nil {
		s.Started()
		s.reap()
	}
	s.after(s.ReadyTimeout, timerEvent{kind: evReadyTimeout, gen: s.current.num})
	if s.MaxRSS > 0 || s.MaxAge > 0 {
		s.after(recycleEvery, timerEvent{kind: evRecycle})
	}
	s.checkDone()
	for !s.done {
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
		}
		s.checkDone()
	}
	code := s.ExitMap.Apply(s.exitCode)
	s.Log.Info().Int("code", code).Msg("baton exiting")
	return code
}

func (s *Supervisor) after(d time.Duration, ev timerEvent) {
	s.AfterFunc(d, func() { s.timers <- ev })
}

func (s *Supervisor) newGeneration() *generation {
	s.genCount++
	return &generation{
		num:      s.genCount,
		begun:    s.Now(),
		workers:  make([]*worker, s.Workers),
		fails:    make([]int, s.Workers),
		restarts: make([][]time.Time, s.Workers),
		pending:  make([]bool, s.Workers),
	}
}

func (s *Supervisor) onSignal(sig unix.Signal) {
	switch {
	case sig == unix.SIGCHLD:
		s.reap()
	case sig == unix.SIGURG:
		// Used by the Go runtime to preempt goroutines (runc signals.go):
		// never forwarded.
	case s.ReloadSignal != 0 && sig == s.ReloadSignal:
		s.requestReload("signal", nil)
	default:
		// BATON_SIGNAL_MAP applies before anything else is decided: a
		// dropped signal is dropped, and a rewritten one means what it was
		// rewritten to (a shutdown or not), as if baton had received that.
		// Rewritten to the reload signal, it is forwarded: the reload
		// signal is the one baton receives.
		to := s.SignalMap.Apply(sig)
		switch {
		case to == 0:
			s.Log.Debug().Str("signal", unix.SignalName(sig)).Msg("signal dropped")
		case isShutdown(to) || (s.StopSignalSet && to == s.StopSignal):
			s.beginShutdown(sig, to)
		default:
			s.forward(to)
		}
	}
}

// forward sends to (already through BATON_SIGNAL_MAP) to every live
// worker's process group, whatever its generation.
func (s *Supervisor) forward(to unix.Signal) {
	for pid, w := range s.byPID {
		if err := s.signal(w, to); err != nil {
			if errors.Is(err, unix.ESRCH) {
				s.Log.Warn().Int("pid", pid).Str("signal", unix.SignalName(to)).Msg("worker already gone")
				continue
			}
			s.Log.Error().Err(err).Int("pid", pid).Str("signal", unix.SignalName(to)).Msg("signal not forwarded")
			continue
		}
		s.stats.Forwarded++
		s.Log.Debug().Int("pid", pid).Str("signal", unix.SignalName(to)).Msg("signal forwarded")
	}
}

// signal sends sig to w's process group, or holds it while w is in the
// shim. SIGKILL is never held: the shim dies of it like the command would.
func (s *Supervisor) signal(w *worker, sig unix.Signal) error {
	if !w.inShim || sig == unix.SIGKILL {
		return w.w.Signal(sig)
	}
	if sig < firstRealtime && slices.Contains(w.held, sig) {
		return nil
	}
	if len(w.held) >= maxHeld {
		s.Log.Warn().Int("pid", w.pid).Str("signal", unix.SignalName(sig)).Msg("signal dropped: too many held")
		return nil
	}
	w.held = append(w.held, sig)
	s.Log.Debug().Int("pid", w.pid).Str("signal", unix.SignalName(sig)).Msg("signal held")
	return nil
}

// onExec: w runs its own command now (or is gone); send what was held.
func (s *Supervisor) onExec(w *worker) {
	if !w.inShim {
		return
	}
	w.inShim = false
	held := w.held
	w.held = nil
	s.Log.Debug().Int("pid", w.pid).Int("held", len(held)).Msg("worker left the shim")
	if s.byPID[w.pid] == w { // reaped meanwhile: its group id may be free
		for _, sig := range held {
			if err := w.w.Signal(sig); err != nil && !errors.Is(err, unix.ESRCH) {
				s.Log.Error().Err(err).Int("pid", w.pid).Str("signal", unix.SignalName(sig)).Msg("signal not forwarded")
			}
		}
	}
	s.releaseKillAll()
}

// releaseKillAll sends a held kill(-1) once no worker is in the shim.
func (s *Supervisor) releaseKillAll() {
	if s.killAllHeld == 0 {
		return
	}
	for _, w := range s.byPID {
		if w.inShim {
			return
		}
	}
	sig := s.killAllHeld
	s.killAllHeld = 0
	if err := s.KillAll(sig); err != nil && !errors.Is(err, unix.ESRCH) {
		s.Log.Error().Err(err).Msg("stop signal failed")
	}
}

func (s *Supervisor) reap() {
	exits, err := s.Reap()
	for _, e := range exits {
		s.onExit(e)
	}
	if err != nil {
		s.Log.Error().Err(err).Msg("reap failed")
	}
	// A lingering group's last member may have been among these exits.
	for pgid, w := range s.lingering {
		if !s.groupAlive(pgid) {
			w.groupGone = true
			delete(s.lingering, pgid)
		}
	}
	for pgid := range s.checkLeft {
		if !s.groupAlive(pgid) {
			delete(s.checkLeft, pgid)
		}
	}
	s.pruneGroups()
	s.maybeRelease()
}

// pruneGroups forgets the left-behind groups that have emptied.
func (s *Supervisor) pruneGroups() {
	for pgid := range s.groups {
		if !s.groupAlive(pgid) {
			delete(s.groups, pgid)
		}
	}
}

// groupAlive reports whether process group pgid has a member. Asked right
// after a reap, a group id cannot have been taken by a new process yet
// (that needs the pid space to come round to exactly it in between).
func (s *Supervisor) groupAlive(pgid int) bool {
	return !errors.Is(s.KillGroup(pgid, 0), unix.ESRCH)
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

func (s *Supervisor) onExit(e reaper.Exit) {
	code := e.Code()
	if c := s.checking; c != nil && c.w.PID() == e.PID {
		s.onCheckExit(code)
		return
	}
	w := s.byPID[e.PID]
	if w == nil {
		s.stats.Orphans++
		s.Log.Debug().Int("pid", e.PID).Int("code", code).Msg("orphan reaped")
		return
	}
	delete(s.byPID, e.PID)
	g := w.gen
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", e.PID).Int("code", code).Msg("worker exited")
	if w.inShim {
		w.inShim, w.held = false, nil // its WaitExec returns too; nothing to send
		s.releaseKillAll()
	}
	if w.retiring || s.Subreaper {
		alive := s.groupAlive(e.PID)
		if w.retiring {
			// Its SIGKILL is armed: it must not reach a group that
			// emptied, whose id a new process may take.
			if alive {
				s.lingering[e.PID] = w
			} else {
				w.groupGone = true
			}
		}
		if alive && s.Subreaper {
			// Helpers live on in its group: stopped and waited for
			// with the workers.
			s.groups[e.PID] = true
		}
	}
	if s.draining && g == s.current && code != 0 && s.firstNonZero == 0 {
		s.firstNonZero = code // the status of a shutdown baton was asked for
	}
	owned := g.workers[w.idx] == w
	if owned {
		g.workers[w.idx] = nil
		if r := s.replacing; r != nil && r.gen == g && r.idx == w.idx && !s.stopping {
			// The worker being recycled is gone: its replacement, already
			// starting, is the slot's worker now. A restart besides it
			// would be a third process for one slot.
			s.replacing = nil
			g.workers[w.idx] = r
			s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", r.pid).Int("code", code).Msg("replacement took over")
			if s.owns(w.idx) {
				s.setForeground(r.pid)
			}
			return
		}
		if s.Foreground != nil && g == s.current && w.idx == 0 && !s.stopping {
			// Until a restart takes it, Ctrl-C must reach somebody.
			s.setForeground(0)
		}
	}
	switch {
	case s.stopping:
		// Everything is going; checkDone decides when baton exits.
	case w.retiring:
		s.rollOn() // a rolling swap may start its next new worker
	case w == s.replacing:
		s.replacing = nil
		s.Log.Warn().Int("gen", g.num).Int("worker", w.idx).Int("code", code).Msg("recycle aborted")
	case s.canary != nil && g == s.canary.g:
		s.abortCanary("worker " + strconv.Itoa(w.idx) + " exited " + strconv.Itoa(code))
	case s.parked != nil && g == s.current && owned:
		s.revert("worker " + strconv.Itoa(w.idx) + " exited " + strconv.Itoa(code) + " during the bake")
	case g == s.parked && owned:
		// Not restarted while parked; a revert starts its slot again.
		s.Log.Warn().Int("gen", g.num).Int("worker", w.idx).Int("code", code).Msg("parked worker exited")
	case g == s.next && s.rolling():
		s.halt("worker exited before ready")
	case g == s.next:
		s.abortSwap("worker exited before ready")
	case g == s.current && owned:
		s.onCurrentExit(w, code)
	}
}

func (s *Supervisor) onCurrentExit(w *worker, code int) {
	g := w.gen
	if w.initial && !w.everReady && s.Restart != RestartNever {
		// A pool that never came up is a failed deployment, not a crash
		// to retry. Under never (tini's mode) an exit is just the end.
		s.Log.Error().Int("gen", g.num).Int("worker", w.idx).Int("code", code).Msg("worker failed before ready")
		s.end(code)
		return
	}
	switch {
	case s.Restart == RestartNever:
		s.end(code)
	case s.Restart == RestartOnFailure && code == 0:
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
		if now.Sub(t) < s.RestartLimit.Window {
			kept = append(kept, t)
		}
	}
	g.restarts[w.idx] = kept
	if len(kept) >= s.RestartLimit.Count {
		s.Log.Error().Int("gen", g.num).Int("worker", w.idx).Int("code", code).
			Int("restarts", len(kept)).Dur("window", s.RestartLimit.Window).Msg("restart limit reached")
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

func (s *Supervisor) startWorker(g *generation, idx int, foreground bool) (*worker, error) {
	p, err := s.Start(g.num, idx, g.fds, foreground)
	if err != nil {
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
	if s.MaxAge > 0 {
		// Jitter spreads recycling so workers started together do not
		// all go at once (gunicorn's max_requests_jitter, in time).
		w.maxAge = s.MaxAge + time.Duration(rand.Int64N(int64(s.MaxAge)/10+1))
	}
	s.byPID[w.pid] = w
	if g.workers[idx] == nil {
		g.workers[idx] = w
	}
	s.Log.Info().Int("gen", g.num).Int("worker", idx).Int("pid", w.pid).Msg("worker started")
	switch {
	case s.Ready.Kind == "delay":
		s.after(s.Ready.Delay, timerEvent{kind: evReadyDelay, pid: w.pid, w: w})
	case s.Ready.Kind == "auto" && !s.seenNotify:
		s.after(autoReadyAfter, timerEvent{kind: evReadyDelay, pid: w.pid, w: w})
	}
	return w, nil
}

func (s *Supervisor) onNote(n handoff.Note) {
	w := s.byPID[n.PID]
	if w == nil {
		// A process in the worker's group speaks for it (a helper child
		// may send for Node). Its group was looked up by the notifier as
		// the datagram arrived; a sender gone by then cannot be attributed.
		w = s.byPID[n.PGID]
	}
	if w == nil {
		s.Log.Debug().Int("pid", n.PID).Msg("notify ignored")
		return
	}
	if n.Status != "" {
		s.Log.Debug().Int("gen", w.gen.num).Int("pid", w.pid).Str("status", n.Status).Msg("worker status")
	}
	if n.Ready {
		s.seenNotify = true
		s.markReady(w)
	}
	if n.Watchdog || n.Trigger {
		s.onWatchdog(w, n.Trigger)
	}
	if n.Stopping && !w.retiring && !s.stopping && !s.draining {
		s.onStopping(w)
	}
}

func (s *Supervisor) markReady(w *worker) {
	if w.ready || w.retiring || s.stopping {
		// Once the stop signal went out, no worker becomes ready: a
		// ready timer or READY=1 then changes nothing.
		return
	}
	w.ready, w.everReady = true, true
	g := w.gen
	s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", w.pid).Dur("elapsed", s.Now().Sub(w.started)).Msg("worker ready")
	if w == s.replacing {
		s.replacing = nil
		old := g.workers[w.idx]
		g.workers[w.idx] = w
		if s.owns(w.idx) {
			s.setForeground(w.pid)
		}
		s.stats.Recycled++
		s.Log.Info().Int("gen", g.num).Int("worker", w.idx).Int("pid", w.pid).Msg("worker recycled")
		if old != nil {
			s.retire(old)
		}
		return
	}
	if g == s.next && s.rolling() {
		// One new worker serves: one old one may go, and the next new one
		// start once it has.
		s.retireOneOld()
		s.rollOn()
		if s.next != g {
			return // halted while starting the next one
		}
	}
	for _, o := range g.workers {
		if o == nil || !o.ready {
			return
		}
	}
	switch {
	case g == s.next:
		s.finishSwap()
	case g == s.current && !g.ready:
		g.ready = true
		s.Log.Info().Int("gen", g.num).Dur("elapsed", s.Now().Sub(g.begun)).Msg("generation ready")
	}
}

func (s *Supervisor) requestReload(why string, reply chan<- Outcome) {
	switch {
	case s.draining || s.stopping:
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
	s.after(s.ReadyTimeout, timerEvent{kind: evReadyTimeout, gen: g.num})
	if s.rolling() {
		s.rollOn()
		return
	}
	for i := 0; i < s.Workers; i++ {
		if _, err := s.startWorker(g, i, false); err != nil {
			s.Log.Error().Err(err).Int("gen", g.num).Int("worker", i).Msg("worker start failed")
			s.abortSwap("worker start failed")
			return
		}
	}
	g.started = s.Workers
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
	if len(s.Canary) > 0 && !g.canaried {
		s.startCanary(g)
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
	if s.Bake == 0 {
		s.stats.ReloadsOK++ // with a bake, once it is over
	}
	s.stats.LastSwap = elapsed
	s.Log.Info().Int("gen", g.num).Dur("elapsed", elapsed).Msg("swap complete")
	if w := g.workers[0]; w != nil && s.owns(0) {
		s.setForeground(w.pid)
	}
	if s.Bake > 0 {
		// The old generation stays, parked: alive, not signalled, given
		// no new connection; the reload's outcome waits for the bake.
		s.parked, s.bakeEnds = old, s.Now().Add(s.Bake)
		s.Log.Info().Int("gen", g.num).Int("parked", old.num).Dur("bake", s.Bake).Msg("bake begun")
		s.after(s.Bake, timerEvent{kind: evBakeEnd, gen: old.num})
		return
	}
	answerAll(&g.waiters, Outcome{OK: true, Gen: g.num})
	s.handOver(old)
	s.afterSwap()
}

// handOver retires old now that new connections go elsewhere: at once in
// shared mode; in steer mode once its own queue is empty (onHandover).
func (s *Supervisor) handOver(old *generation) {
	if s.SteerSettle > 0 {
		// New connections go to g now. The old generation's workers keep
		// accepting what is already queued for them, and are asked to stop
		// once that is empty: a worker that drops what it has not yet
		// accepted when it stops then has nothing to drop.
		s.leaving = append(s.leaving, old)
		old.handover = s.Now()
		s.after(s.SteerSettle, timerEvent{kind: evHandover, gen: old.num})
	} else {
		s.retireGeneration(old)
	}
}

// retireGeneration asks every worker of g to stop.
func (s *Supervisor) retireGeneration(g *generation) {
	g.retired = true
	for _, w := range g.workers {
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
	if i < 0 || s.leaving[i].retired || s.stopping {
		return
	}
	g := s.leaving[i]
	if n := s.Sockets.Pending(gen); n > 0 && s.Now().Sub(g.handover) < maxHandover && s.hasWorkers(g) {
		s.after(steerPoll, timerEvent{kind: evHandover, gen: gen})
		return
	} else if n > 0 {
		s.Log.Warn().Int("gen", gen).Int("pending", n).Msg("old generation's queue not emptied")
	}
	s.retireGeneration(g)
	s.maybeRelease()
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
		if g := s.next; g != nil && g.ready && !s.stopping && !s.draining {
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
	if !s.stopping {
		// What the kernel queued for g and no worker of g took: a new
		// generation that failed, or workers that stopped accepting
		// early. Passed on rather than reset.
		s.relay(g.num)
	}
	s.Sockets.Release(g.num)
	s.Log.Debug().Int("gen", g.num).Msg("old generation left")
	return true
}

func (s *Supervisor) abortSwap(reason string) {
	g := s.next
	s.next = nil
	s.stats.ReloadsFailed++
	s.Log.Warn().Int("gen", g.num).Str("reason", reason).Msg("swap aborted")
	answerAll(&g.waiters, Outcome{Gen: s.current.num, Reason: "generation " + strconv.Itoa(g.num) + " rolled back: " + reason})
	s.retireGeneration(g)
	if s.SteerSettle > 0 {
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
	if s.reloadQueued && !s.draining && !s.stopping {
		s.reloadQueued = false
		queued := s.queued
		s.queued = nil
		s.startReload("coalesced", queued)
	}
}

// retire asks w to finish gracefully and arms the SIGKILL for its group.
func (s *Supervisor) retire(w *worker) {
	if w.retiring {
		return
	}
	w.retiring = true
	if err := s.signal(w, s.StopSignal); err != nil && !errors.Is(err, unix.ESRCH) {
		s.Log.Error().Err(err).Int("pid", w.pid).Msg("stop signal failed")
	}
	s.Log.Info().Int("gen", w.gen.num).Int("worker", w.idx).Int("pid", w.pid).Str("signal", unix.SignalName(s.StopSignal)).Msg("worker retiring")
	s.after(s.StopTimeout, timerEvent{kind: evRetireKill, pid: w.pid, w: w})
}

func (s *Supervisor) onTimer(ev timerEvent) {
	switch ev.kind {
	case evReadyDelay:
		if s.byPID[ev.pid] == ev.w {
			s.markReady(ev.w)
		}
	case evReadyTimeout:
		if s.next != nil && s.next.num == ev.gen && !s.next.ready {
			// (A ready generation waiting for the old one to leave, in
			// steer mode, is not rolled back: the wait is bounded by the
			// old one's stop timeout.)
			if s.rolling() {
				s.halt("not ready within BATON_READY_TIMEOUT")
			} else {
				s.abortSwap("not ready within BATON_READY_TIMEOUT")
			}
		} else if s.current.num == ev.gen && !s.current.ready && !s.stopping {
			// Nothing to roll back to: keep waiting, reporting not-ready.
			s.Log.Warn().Int("gen", ev.gen).Dur("elapsed", s.Now().Sub(s.current.begun)).Msg("generation not ready")
		}
	case evRestart:
		g := s.current
		if s.stopping || g.num != ev.gen || g.workers[ev.idx] != nil {
			return
		}
		g.pending[ev.idx] = false
		if _, err := s.startWorker(g, ev.idx, s.owns(ev.idx)); err != nil {
			s.Log.Error().Err(err).Int("gen", g.num).Int("worker", ev.idx).Msg("worker start failed")
			s.scheduleRestart(&worker{gen: g, idx: ev.idx, started: s.Now()}, spawn.Code(err))
		}
	case evRetireKill:
		// The leader may be gone while helpers in its group live on; the
		// group id stays reserved while any member is alive, so it can only
		// name a new process after the group emptied, which the loop notes
		// at the reap that sees it (groupGone).
		if ev.w.groupGone {
			s.Log.Debug().Int("gen", ev.w.gen.num).Int("pid", ev.pid).Msg("retired group already empty")
			return
		}
		if o := s.byPID[ev.pid]; o != nil && o != ev.w {
			return // a new worker of ours has the id: the group emptied unseen
		}
		delete(s.lingering, ev.pid)
		if err := s.KillGroup(ev.pid, unix.SIGKILL); err == nil {
			s.Log.Warn().Int("gen", ev.w.gen.num).Int("pid", ev.pid).Dur("elapsed", s.StopTimeout).Msg("worker killed after stop timeout")
		}
	case evShutdownDelay:
		s.stopAll()
	case evStopKill:
		s.stopExpired = true
		s.Log.Warn().Int("workers", len(s.byPID)).Int("relays", s.relaysAnswering).Msg("stop timeout: killing what remains")
		if s.PID1 {
			_ = s.KillAll(unix.SIGKILL) // ESRCH: nothing left, which is fine
		}
		for _, w := range s.byPID {
			_ = w.w.Signal(unix.SIGKILL)
		}
		for pgid := range s.groups {
			_ = s.KillGroup(pgid, unix.SIGKILL)
		}
		if c := s.checking; c != nil && !c.exited {
			_ = c.w.Signal(unix.SIGKILL)
		}
		for pgid := range s.checkLeft {
			_ = s.KillGroup(pgid, unix.SIGKILL)
		}
		clear(s.checkLeft) // gone now: baton need not wait for their reap
	case evHandover:
		s.onHandover(ev.gen)
	case evCheckTimeout:
		s.onCheckTimeout(ev.pid)
	case evCheckKill:
		s.onCheckKill(ev.pid)
	case evCanaryStep:
		s.onCanaryStep(ev.gen, ev.idx)
	case evBakeEnd:
		s.onBakeEnd(ev.gen)
	case evGroupPoll:
		s.groupPoll = false
		s.pruneGroups()
	case evWatchdog:
		if w := ev.w; s.byPID[w.pid] == w {
			s.onWatchdogTimer(w)
		}
	case evWatchdogKill:
		if w := ev.w; s.byPID[w.pid] == w {
			// Alive after SIGABRT and the stop timeout (a stopped process
			// cannot act on SIGABRT): its group goes.
			if err := w.w.Signal(unix.SIGKILL); err == nil {
				s.Log.Warn().Int("gen", w.gen.num).Int("pid", w.pid).Msg("hung worker killed")
			}
		}
	case evRecycleTimeout:
		if w := ev.w; w == s.replacing && !w.ready {
			// Not ready in time: the old worker serves on, and the next
			// check may try again.
			s.replacing = nil
			s.Log.Warn().Int("gen", w.gen.num).Int("worker", w.idx).Int("pid", w.pid).Str("reason", "not ready within BATON_READY_TIMEOUT").Msg("recycle aborted")
			s.retire(w)
		}
	case evRecycle:
		s.recycleCheck()
		if !s.stopping && !s.draining {
			s.after(recycleEvery, ev)
		}
	}
}

// beginShutdown handles sig, which BATON_SIGNAL_MAP made to: TERM, INT,
// QUIT (or an explicit stop signal).
func (s *Supervisor) beginShutdown(sig, to unix.Signal) {
	if s.stopping {
		s.forward(to) // a second Ctrl-C goes through as is
		return
	}
	if s.draining {
		// A second shutdown signal during BATON_SHUTDOWN_DELAY: the
		// operator is in a hurry, so stop now.
		s.stopAll()
		return
	}
	s.draining = true
	s.stopSig = to
	if s.StopSignalSet {
		s.stopSig = s.StopSignal
	}
	s.Log.Info().Str("signal", unix.SignalName(sig)).Dur("delay", s.ShutdownDelay).Msg("shutdown begun")
	relayed := 0
	for _, g := range s.leaving {
		relayed += s.relay(g.num)
	}
	if relayed > 0 && s.ShutdownDelay <= 0 {
		// What the leaving generations have queued and not accepted is
		// relayed to the current one, whose queue it joins: served if the
		// current generation accepts its queue before it stops (during
		// BATON_SHUTDOWN_DELAY, or as its drain), else reset at the exit
		// like the rest of that queue. The stop signal waits until the
		// relays are dialled, handoff.RelayDial at most, so that they are in the
		// queue when it arrives.
		s.stopAfterRelay = true
		s.after(handoff.RelayDial, timerEvent{kind: evShutdownDelay})
		return
	}
	if s.ShutdownDelay > 0 {
		s.after(s.ShutdownDelay, timerEvent{kind: evShutdownDelay})
		return
	}
	s.stopAll()
}

// end makes baton exit with code once every process is gone.
func (s *Supervisor) end(code int) {
	if s.stopping {
		return
	}
	s.codeFixed, s.exitCode = true, code
	s.draining = true
	s.stopSig = s.StopSignal
	s.stopAll()
}

// stopAll sends the stop signal to every worker of every generation and,
// as PID 1, to every other process in the namespace, then arms SIGKILL.
func (s *Supervisor) stopAll() {
	if s.stopping {
		return
	}
	s.stopping, s.draining = true, true
	s.failWaiters("baton is stopping")
	s.next, s.replacing = nil, nil
	s.canary, s.parked = nil, nil // their generations stop with the rest
	if s.stopSig != 0 {
		if s.PID1 {
			// kill(-1) reaches every process of the namespace except baton:
			// the workers' groups and daemons or orphans in their own
			// sessions alike, each exactly once. A worker still in the
			// shim would get it in its Go runtime (QUIT: a crash dump), so
			// it waits until none is, a millisecond at most.
			s.killAllHeld = s.stopSig
			s.releaseKillAll()
		} else {
			for _, w := range s.byPID {
				_ = s.signal(w, s.stopSig) // ESRCH: already gone, its exit is queued
			}
			for pgid := range s.groups {
				_ = s.KillGroup(pgid, s.stopSig) // what exited workers left behind
			}
			if c := s.checking; c != nil && !c.exited {
				_ = c.w.Signal(s.stopSig) // a reload check in progress goes too
			}
			for pgid := range s.checkLeft {
				_ = s.KillGroup(pgid, s.stopSig) // and what checks left behind
			}
		}
	}
	s.Log.Info().Str("signal", unix.SignalName(s.stopSig)).Int("workers", len(s.byPID)).Msg("stopping")
	s.after(s.StopTimeout, timerEvent{kind: evStopKill})
}

// relay relays what is queued on gen's sockets (Sockets.Relay) and
// returns how many connections it took.
func (s *Supervisor) relay(gen int) int {
	n := s.Sockets.Relay(gen, max(s.StopTimeout, time.Second), func(ev handoff.RelayEvent) { s.relayEvents <- ev })
	if n > 0 {
		s.relaysOpen += n
		s.relaysAnswering += n
		b := s.relayBatches[gen]
		if b == nil {
			b = &relayBatch{}
			s.relayBatches[gen] = b
		}
		b.dialing += n
	}
	return n
}

// onRelay counts a relay's dial, its answer's end and its end. A relay
// counts as relayed once its dial succeeded; a generation's relays are
// logged once all are dialled.
func (s *Supervisor) onRelay(ev handoff.RelayEvent) {
	if ev.Answered || ev.Err != nil {
		s.relaysAnswering--
	}
	if ev.Answered {
		return
	}
	if ev.Ended {
		if s.relaysOpen--; s.relaysOpen == 0 {
			freeRelayMemory()
			s.Log.Debug().Msg("relays done")
		}
		return
	}
	b := s.relayBatches[ev.Gen]
	if b == nil {
		return
	}
	b.dialing--
	if ev.Err != nil {
		b.failed, b.err = b.failed+1, ev.Err
	} else {
		b.ok++
	}
	if b.dialing > 0 {
		return
	}
	delete(s.relayBatches, ev.Gen)
	freeRelayMemory()
	if b.ok > 0 {
		s.Log.Warn().Int("gen", ev.Gen).Int("connections", b.ok).Msg("queued connections relayed")
	}
	if b.failed > 0 {
		s.Log.Error().Err(b.err).Int("gen", ev.Gen).Int("connections", b.failed).Msg("relay failed")
	}
	if s.stopAfterRelay && len(s.relayBatches) == 0 {
		s.stopAll()
	}
}

// freeRelayMemory returns to the kernel what relays no longer use: what
// their dials left to collect once a batch is dialled, their stacks once
// the last has ended. Go's scavenger would return it only slowly, and a
// burst of relays (up to handoff.MaxRelays) would leave PID 1 megabytes larger for
// minutes. Relays are rare (a generation that left connections queued),
// and a collection of baton's small heap takes about a millisecond.
func freeRelayMemory() { debug.FreeOSMemory() }

func (s *Supervisor) checkDone() {
	if !s.stopping || len(s.byPID) > 0 || s.checking != nil || len(s.checkLeft) > 0 {
		return
	}
	if s.PID1 && s.HasChildren() {
		return // orphans and daemons still finishing: wait for them
	}
	if len(s.groups) > 0 {
		// Helpers of exited workers still finishing. Their exits come
		// back to baton as their subreaper, and each reap drops a group
		// that emptied; a member that is no descendant of its worker's
		// would not come back, so the groups are also looked at every
		// groupPollEvery until they are gone (SIGKILL bounds that).
		if !s.groupPoll {
			s.groupPoll = true
			s.after(groupPollEvery, timerEvent{kind: evGroupPoll})
		}
		return
	}
	if s.relaysAnswering > 0 && !s.stopExpired {
		// Relays still carry what exited workers answered: wait for them,
		// until the stop timeout at most (a relay whose worker's side has
		// ended has nothing more for its client). Nobody will accept from the
		// listening sockets any more: closed, they reset what is queued,
		// and a relay into that queue ends now rather than at the timeout.
		if !s.socketsClosed {
			s.socketsClosed = true
			s.Sockets.CloseAll()
		}
		return
	}
	if !s.codeFixed {
		s.exitCode = s.firstNonZero
	}
	s.done = true
}

func (s *Supervisor) recycleCheck() {
	if s.stopping || s.draining || s.next != nil || s.replacing != nil {
		return
	}
	// One at a time, the most deserving first: the oldest worker past its
	// age, else the largest past BATON_MAX_RSS. Taking the first slot that
	// qualifies would recycle slot 0 over and over when BATON_MAX_AGE is
	// shorter than the check interval, and never the others.
	now := s.Now()
	var pick *worker
	reason := ""
	for _, w := range s.current.workers {
		if w == nil || !w.ready || w.maxAge <= 0 || now.Sub(w.started) < w.maxAge {
			continue
		}
		if pick == nil || w.started.Before(pick.started) {
			pick, reason = w, "max age"
		}
	}
	if pick == nil && s.MaxRSS > 0 {
		var worst int64
		for _, w := range s.current.workers {
			if w == nil || !w.ready {
				continue
			}
			if r, err := s.RSS(w.pid); err == nil && r > s.MaxRSS && r > worst {
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
		s.Log.Error().Err(err).Int("gen", pick.gen.num).Int("worker", pick.idx).Msg("worker start failed")
		return
	}
	s.replacing = nw
	s.after(s.ReadyTimeout, timerEvent{kind: evRecycleTimeout, pid: nw.pid, w: nw})
}

func (s *Supervisor) status() Status {
	st := Status{Stats: s.stats, Stopping: s.draining || s.stopping}
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
		st.Canary, st.CanaryStep, st.CanaryPercent = c.g.num, c.step+1, s.Canary[c.step].Percent
	}
	if s.parked != nil {
		st.Parked, st.BakeLeft = s.parked.num, max(s.bakeEnds.Sub(s.Now()), 0)
	}
	st.Healthy = st.Serving+st.Starting > 0 && !s.stopping
	st.Ready = anyReady && !st.Stopping && s.current != nil && s.current.ready
	return st
}
