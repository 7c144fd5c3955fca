//go:build linux

package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/reaper"
)

// scriptedWorker records the signals its "process group" received.
type scriptedWorker struct {
	pid  int
	fg   bool          // started with the terminal's foreground
	exec chan struct{} // non-nil: in the shim until closed
	mu   sync.Mutex
	sigs []unix.Signal
}

// shimWorker is a scriptedWorker started through the shim.
type shimWorker struct{ *scriptedWorker }

func (w shimWorker) InShim() bool { return true }
func (w shimWorker) WaitExec()    { <-w.exec }

func (w *scriptedWorker) PID() int { return w.pid }

func (w *scriptedWorker) got() []unix.Signal {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]unix.Signal(nil), w.sigs...)
}
func (w *scriptedWorker) Signal(s unix.Signal) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sigs = append(w.sigs, s)
	return nil
}

// rig drives a Supervisor with no processes and no clock: exits are
// scripted, timers fire only when the test fires them.
type rig struct {
	t       *testing.T
	s       *Supervisor
	sigs    chan os.Signal
	notes   chan handoff.Note
	started chan *scriptedWorker
	exits   chan []reaper.Exit
	logs    chan string // the message of every log event, in order
	done    chan int
	nextPID int

	shim bool // start workers in the shim
	// armed are the timers the loop armed and the test has not fired, by
	// kind. No timer fires by itself: fire hands the loop those of a kind.
	armed     map[timerKind][]armedTimer
	armedNow  chan struct{} // a token each time the loop arms a timer
	mu        sync.Mutex
	killed    []string     // KillAll and KillGroup calls, "all SIGTERM", "-101 SIGKILL"
	deadGroup map[int]bool // groups KillGroup reports empty
	fgs       []int        // Foreground calls
}

func (r *rig) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.killed...)
}

// logSink hands each log event's message to the test: the loop logs a
// state change in the same step that makes it, so a message seen means
// the state it announces is in place.
type logSink chan string

func (l logSink) Write(p []byte) (int, error) {
	var ev struct{ Message string }
	if json.Unmarshal(p, &ev) == nil {
		l <- ev.Message
	}
	return len(p), nil
}

// newRig starts the loop; setup, if given, runs just before it, for seams
// the rig itself does not set.
func newRig(t *testing.T, opts Options, setup ...func(*rig)) *rig {
	r := &rig{t: t, sigs: make(chan os.Signal, 16), notes: make(chan handoff.Note, 16),
		started: make(chan *scriptedWorker, 64), exits: make(chan []reaper.Exit, 1),
		logs: make(chan string, 4096), done: make(chan int, 1), nextPID: 100,
		armed: map[timerKind][]armedTimer{}, armedNow: make(chan struct{}, 1)}
	s := New(opts, zerolog.New(logSink(r.logs)))
	r.deadGroup = map[int]bool{}
	s.Start = func(gen, idx int, _ []int, fg bool) (Worker, error) {
		r.nextPID++
		w := &scriptedWorker{pid: r.nextPID, fg: fg}
		r.started <- w
		if r.shim {
			w.exec = make(chan struct{})
			return shimWorker{w}, nil
		}
		return w, nil
	}
	s.Reap = func() ([]reaper.Exit, error) {
		select {
		case e := <-r.exits:
			return e, nil
		default:
			return nil, nil
		}
	}
	s.HasChildren = func() bool { return false }
	s.KillAll = func(sig unix.Signal) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.killed = append(r.killed, "all "+unix.SignalName(sig))
		return nil
	}
	s.KillGroup = func(pgid int, sig unix.Signal) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.deadGroup[pgid] {
			return unix.ESRCH
		}
		if sig != 0 {
			r.killed = append(r.killed, fmt.Sprintf("-%d %s", pgid, unix.SignalName(sig)))
		}
		return nil
	}
	s.arm = func(d time.Duration, ev timerEvent) {
		r.mu.Lock()
		r.armed[ev.kind] = append(r.armed[ev.kind], armedTimer{d, ev})
		r.mu.Unlock()
		select {
		case r.armedNow <- struct{}{}:
		default: // a token is there already
		}
	}
	s.Notes = r.notes
	r.s = s
	for _, f := range setup {
		f(r)
	}
	go func() { r.done <- s.Run(r.sigs) }()
	return r
}

func (r *rig) worker() *scriptedWorker {
	r.t.Helper()
	select {
	case w := <-r.started:
		return w
	case <-time.After(5 * time.Second):
		r.t.Fatal("no worker started")
		return nil
	}
}

// ended returns baton's exit status once the loop has ended.
func (r *rig) ended(what string) int {
	r.t.Helper()
	select {
	case code := <-r.done:
		return code
	case <-time.After(5 * time.Second):
		r.t.Fatalf("the loop did not end: %s", what)
		return 0
	}
}

func (r *rig) exit(pid, code int) {
	r.exits <- []reaper.Exit{{PID: pid, Status: unix.WaitStatus(code << 8)}}
	r.sigs <- unix.SIGCHLD
}

// expect waits for the next log event with message msg, skipping others.
// Signals, notes and queries reach the loop on different channels, so a
// query is only ordered after a change once the change's event was seen.
func (r *rig) expect(msg string) {
	r.t.Helper()
	awaitValue(r.t, r.logs, msg, fmt.Sprintf("no %q logged", msg))
}

// awaitValue takes values from c until one equals want, or fails the test
// with failure after 5 s.
func awaitValue[T comparable](t *testing.T, c <-chan T, want T, failure string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case v := <-c:
			if v == want {
				return
			}
		case <-deadline:
			t.Fatal(failure)
		}
	}
}

// ready sends w's READY=1 and waits until the loop has taken it. Notes and
// signals reach the loop on different channels: a signal or an exit sent
// right after a bare note may be handled first (seen under -race: the
// first worker's exit taken for a failure before ready, ending the loop).
func (r *rig) ready(w *scriptedWorker) {
	r.t.Helper()
	r.notes <- handoff.Note{PID: w.pid, Ready: true}
	r.expect("worker ready")
}

// expectStatus checks a status snapshot taken after the events awaited.
func (r *rig) expectStatus(what string, pred func(Status) bool) {
	r.t.Helper()
	if st := r.status(); !pred(st) {
		r.t.Fatalf("%s: status %+v", what, st)
	}
}

func (r *rig) status() Status {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.s.Query(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// barrier returns once the loop has finished the step it was in, since it
// answers a query only between steps. A step may log its message before it
// is done: the held signals are sent after "worker left the shim", the
// terminal moves after "swap complete".
func (r *rig) barrier() {
	r.t.Helper()
	r.status()
}

// armedTimer is a timer the loop armed: for how long, and its event.
type armedTimer struct {
	d  time.Duration
	ev timerEvent
}

var kindNames = map[timerKind]string{
	evReadyDelay: "ready delay", evReadyTimeout: "ready timeout", evRestart: "restart",
	evRetireKill: "retire kill", evShutdownDelay: "shutdown delay", evStopKill: "stop kill",
	evRecycle: "recycle", evRecycleTimeout: "recycle timeout", evHandover: "handover",
	evCheckTimeout: "check timeout", evWatchdog: "watchdog", evWatchdogKill: "watchdog kill",
	evCanaryStep: "canary step", evBakeEnd: "bake end", evCheckKill: "check kill",
	evGroupPoll: "group poll", evIdlePoll: "idle poll",
}

// fire hands the loop every timer of kind k that it has armed and the test
// has not fired, in the order armed, and returns their durations; it fails
// the test if there is none. It waits for the loop's step first: a timer
// armed in the step that logged (or answered) is then armed. Timers reach
// the loop on a channel of their own: a barrier after fire does not show
// that the loop has handled them; a log line or a timer armed in reply does.
func (r *rig) fire(k timerKind) []time.Duration {
	r.t.Helper()
	r.barrier()
	r.mu.Lock()
	ts := r.armed[k]
	delete(r.armed, k)
	r.mu.Unlock()
	if len(ts) == 0 {
		r.t.Fatalf("no %s timer armed", kindNames[k])
	}
	var ds []time.Duration
	for _, a := range ts {
		r.s.timers <- a.ev
		ds = append(ds, a.d)
	}
	return ds
}

// fireArmedFor is fire for a kind whose timers must all have been armed
// for d.
func (r *rig) fireArmedFor(k timerKind, d time.Duration) {
	r.t.Helper()
	for _, got := range r.fire(k) {
		if got != d {
			r.t.Fatalf("%s timer armed for %v, want %v", kindNames[k], got, d)
		}
	}
}

// awaitArmed waits until the loop has armed a timer of kind k that the
// test has not fired, and fails the test unless each such timer was armed
// for d.
func (r *rig) awaitArmed(k timerKind, d time.Duration) {
	r.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		ts := r.armed[k]
		r.mu.Unlock()
		for _, a := range ts {
			if a.d != d {
				r.t.Fatalf("%s timer armed for %v, want %v", kindNames[k], a.d, d)
			}
		}
		if len(ts) > 0 {
			return
		}
		select {
		case <-r.armedNow:
		case <-deadline:
			r.t.Fatalf("no %s timer armed", kindNames[k])
		}
	}
}

// workers takes the next n workers started.
func (r *rig) workers(n int) []*scriptedWorker {
	r.t.Helper()
	out := make([]*scriptedWorker, n)
	for i := range out {
		out[i] = r.worker()
	}
	return out
}

func baseOpts() Options {
	return Options{Workers: 1, Ready: ReadyMode{Kind: "notify"}, ReadyTimeout: time.Minute,
		ReloadSignal: unix.SIGHUP, StopSignal: unix.SIGTERM, StopTimeout: time.Second,
		Restart: RestartOnFailure, RestartLimit: RestartLimit{Count: 5, Window: time.Minute}}
}

// TestSwapCoalescesAndRetires: HUPs during a swap become one more swap;
// the old generation gets the stop signal only once the new one is ready.
func TestSwapCoalescesAndRetires(t *testing.T) {
	r := newRig(t, baseOpts())
	w1 := r.worker()
	r.ready(w1)
	r.sigs <- unix.SIGHUP
	w2 := r.worker()
	r.sigs <- unix.SIGHUP
	r.sigs <- unix.SIGHUP
	r.expect("reload coalesced")
	r.expect("reload coalesced")
	r.expectStatus("during swap", func(st Status) bool { return st.Gen == 1 && st.Stats.ReloadsCoalesced == 2 && st.Ready })
	if len(w1.got()) != 0 {
		t.Fatalf("old worker signalled before the new one was ready: %v", w1.got())
	}
	r.notes <- handoff.Note{PID: w2.pid, Ready: true}
	w3 := r.worker() // the coalesced swap, begun in the step that completed the first
	r.expect("swap complete")
	r.expectStatus("after swap", func(st Status) bool { return st.Gen == 2 && st.Stats.ReloadsOK == 1 })
	if len(w1.got()) != 1 || w1.got()[0] != unix.SIGTERM {
		t.Fatalf("old worker got %v, want [SIGTERM]", w1.got())
	}
	r.notes <- handoff.Note{PID: w3.pid, Ready: true}
	r.expect("swap complete")
	r.expectStatus("after coalesced swap", func(st Status) bool { return st.Gen == 3 && st.Stats.ReloadsOK == 2 })
}

// TestRollbackOnExitAndTimeout: a new worker that exits, or a generation
// whose ready timer fires, is stopped; the old one stays current.
func TestRollbackOnExitAndTimeout(t *testing.T) {
	r := newRig(t, baseOpts())
	w1 := r.worker()
	r.ready(w1)
	r.sigs <- unix.SIGHUP
	w2 := r.worker()
	r.exit(w2.pid, 1)
	r.expect("swap aborted")
	r.expectStatus("after a crashed new worker", func(st Status) bool { return st.Gen == 1 && st.Stats.ReloadsFailed == 1 && st.Ready })
	r.sigs <- unix.SIGHUP
	w3 := r.worker()
	r.fire(evReadyTimeout) // generation 3 is not ready in time
	r.expect("swap aborted")
	r.expectStatus("after a never-ready generation", func(st Status) bool { return st.Gen == 1 && st.Stats.ReloadsFailed == 2 })
	if len(w3.got()) == 0 || w3.got()[0] != unix.SIGTERM {
		t.Fatalf("never-ready worker got %v, want SIGTERM", w3.got())
	}
	if len(w1.got()) != 0 {
		t.Fatalf("old worker was signalled: %v", w1.got())
	}
}

// TestExitCodeFirstNonZero: on shutdown, the status is the first non-zero
// among the current generation's workers.
func TestExitCodeFirstNonZero(t *testing.T) {
	o := baseOpts()
	o.Workers = 3
	r := newRig(t, o)
	ws := []*scriptedWorker{r.worker(), r.worker(), r.worker()}
	r.sigs <- unix.SIGTERM
	r.exit(ws[0].pid, 0)
	r.exit(ws[1].pid, 3)
	r.exit(ws[2].pid, 4)
	if code := r.ended("after TERM and every worker's exit"); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
}

// TestRestartOnFailureThenCleanExit: a ready worker that crashes is
// restarted after its backoff; under on-failure a clean exit is not
// restarted, and with every slot empty baton ends with 0.
func TestRestartOnFailureThenCleanExit(t *testing.T) {
	r := newRig(t, baseOpts())
	w1 := r.worker()
	r.ready(w1)
	r.exit(w1.pid, 3)
	r.expect("worker restarting")
	r.fire(evRestart) // its backoff
	w2 := r.worker()
	// w2 was started by the restart timer, after the restart was counted.
	r.expectStatus("restarted", func(st Status) bool { return st.Stats.Restarts == 1 })
	r.ready(w2)
	r.exit(w2.pid, 0)
	if code := r.ended("after a clean exit under on-failure"); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// TestStartedHookThenReap: the loop reaps once after the Started hook, so
// a worker that exited while the hook ran is seen even if its SIGCHLD was
// lost (here it never comes).
func TestStartedHookThenReap(t *testing.T) {
	o := baseOpts()
	o.Restart = RestartNever
	r := newRig(t, o, func(r *rig) {
		r.s.Started = func() {
			// The worker (the last one started) is gone; no SIGCHLD follows.
			r.exits <- []reaper.Exit{{PID: r.nextPID, Status: unix.WaitStatus(7 << 8)}}
		}
	})
	if code := r.ended("an exit from before SIGCHLD was subscribed was missed"); code != 7 {
		t.Fatalf("exit %d, want the worker's 7", code)
	}
}

// TestSignalsHeldWhileInShim: a worker still in the shim gets no signal;
// once it runs its command it gets the held ones in order, a standard
// signal once however often it was sent, a real-time one each time.
func TestSignalsHeldWhileInShim(t *testing.T) {
	r := newRig(t, baseOpts(), func(r *rig) { r.shim = true })
	w := r.worker()
	for _, sig := range []unix.Signal{unix.SIGUSR1, unix.SIGUSR2, unix.SIGUSR1, unix.Signal(40), unix.Signal(40)} {
		r.sigs <- sig
	}
	for i := 0; i < 4; i++ {
		r.expect("signal held")
	}
	if got := w.got(); len(got) != 0 {
		t.Fatalf("a worker in the shim got %v", got)
	}
	close(w.exec)
	r.expect("worker left the shim")
	r.barrier()
	want := []unix.Signal{unix.SIGUSR1, unix.SIGUSR2, unix.Signal(40), unix.Signal(40)}
	if got := w.got(); !slices.Equal(got, want) {
		t.Fatalf("after the exec the worker got %v, want %v", got, want)
	}
	r.sigs <- unix.SIGUSR1
	r.sigs <- unix.SIGTERM
	r.expect("stopping")
	r.barrier()
	if got := w.got(); len(got) != 6 || got[4] != unix.SIGUSR1 || got[5] != unix.SIGTERM {
		t.Fatalf("a worker out of the shim got %v, want its signals at once", got)
	}
}

// TestKillAllWaitsForShim: as PID 1 the stop signal goes out with one
// kill(-1), and not while a worker is in the shim, whose Go runtime would
// get it (a crash dump for QUIT); a SIGKILL never waits.
func TestKillAllWaitsForShim(t *testing.T) {
	o := baseOpts()
	o.PID1 = true
	r := newRig(t, o, func(r *rig) { r.shim = true })
	w := r.worker()
	r.sigs <- unix.SIGQUIT
	r.expect("stopping")
	if c := r.calls(); len(c) != 0 {
		t.Fatalf("kill(-1) while a worker is in the shim: %v", c)
	}
	close(w.exec)
	r.expect("worker left the shim")
	r.barrier()
	if c := r.calls(); !slices.Equal(c, []string{"all SIGQUIT"}) {
		t.Fatalf("after the exec: %v, want one kill(-1, SIGQUIT)", c)
	}
	r.exit(w.pid, 131)
	if code := r.ended("after QUIT"); code != 131 {
		t.Fatalf("exit %d, want 131", code)
	}
}

// TestSubreaperWaitsForLeftGroup: not PID 1 but a subreaper, baton ends
// when its worker exits; helpers left in the worker's process group get
// the stop signal, and baton exits only once the group is empty.
func TestSubreaperWaitsForLeftGroup(t *testing.T) {
	o := baseOpts()
	o.Restart, o.Subreaper = RestartNever, true
	r := newRig(t, o)
	w := r.worker()
	r.ready(w)
	r.exit(w.pid, 3)
	r.expect("stopping")
	r.barrier() // still running: the group has members
	if c := r.calls(); !slices.Contains(c, fmt.Sprintf("-%d SIGTERM", w.pid)) {
		t.Fatalf("the worker's group was not stopped: %v", c)
	}
	// Its timers (the ready timeout, the stop timeout, the look at the
	// group) fire; it waits on while the group has members, and looks
	// again.
	r.fire(evReadyTimeout)
	r.fire(evStopKill)
	r.fire(evGroupPoll)
	r.awaitArmed(evGroupPoll, groupPollEvery)
	select {
	case code := <-r.done:
		t.Fatalf("baton ended (exit %d) with its worker's group not empty", code)
	default:
	}
	r.groupGone(w.pid)
	r.fire(evGroupPoll)
	if code := r.ended("baton did not end once the group was empty"); code != 3 {
		t.Fatalf("exit %d, want the worker's 3", code)
	}
}

// TestNoReadyWhileStopping: a worker whose ready timer fires after the
// stop signal went out is not logged ready: it is being stopped.
func TestNoReadyWhileStopping(t *testing.T) {
	o := baseOpts()
	o.Ready = ReadyMode{Kind: "delay", Delay: 5 * time.Second}
	r := newRig(t, o)
	w := r.worker()
	r.sigs <- unix.SIGTERM
	r.expect("stopping")
	r.fireArmedFor(evReadyDelay, o.Ready.Delay)
	r.exit(w.pid, 143)
	for {
		select {
		case m := <-r.logs:
			if m == "worker ready" || m == "generation ready" {
				t.Fatalf("%q logged while stopping", m)
			}
		case code := <-r.done:
			if code != 143 {
				t.Fatalf("exit %d, want 143", code)
			}
			for len(r.logs) > 0 {
				if m := <-r.logs; m == "worker ready" || m == "generation ready" {
					t.Fatalf("%q logged while stopping", m)
				}
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatal("the loop did not end")
		}
	}
}

// TestRetireKillSparesEmptiedGroup: the SIGKILL armed when a worker
// retires goes to its group only while the group may still have members;
// once a reap has seen it empty, the id may be someone else's.
func TestRetireKillSparesEmptiedGroup(t *testing.T) {
	swap := func(r *rig) (old, cur *scriptedWorker) {
		old = r.worker()
		r.ready(old)
		r.sigs <- unix.SIGHUP
		cur = r.worker()
		r.notes <- handoff.Note{PID: cur.pid, Ready: true}
		r.expect("worker retiring")
		return old, cur
	}
	t.Run("empty-at-exit", func(t *testing.T) {
		r := newRig(t, baseOpts())
		old, _ := swap(r)
		r.mu.Lock()
		r.deadGroup[old.pid] = true
		r.mu.Unlock()
		r.exit(old.pid, 0)
		r.expect("worker exited")
		r.fire(evRetireKill)
		r.expect("retired group already empty")
		if c := r.calls(); len(c) != 0 {
			t.Fatalf("signals to an emptied group: %v", c)
		}
	})
	t.Run("helpers-then-empty", func(t *testing.T) {
		r := newRig(t, baseOpts())
		old, _ := swap(r)
		r.exit(old.pid, 0) // its helpers live on: the group is not empty
		r.expect("worker exited")
		r.mu.Lock()
		r.deadGroup[old.pid] = true
		r.mu.Unlock()
		r.exit(999, 0) // the last helper, an orphan, reaped by baton
		r.expect("orphan reaped")
		r.fire(evRetireKill)
		r.expect("retired group already empty")
		if c := r.calls(); len(c) != 0 {
			t.Fatalf("signals to an emptied group: %v", c)
		}
	})
	t.Run("helpers-linger", func(t *testing.T) {
		r := newRig(t, baseOpts())
		old, _ := swap(r)
		r.exit(old.pid, 0)
		r.expect("worker exited")
		r.fire(evRetireKill)
		r.expect("worker killed after stop timeout")
		if c := r.calls(); !slices.Equal(c, []string{fmt.Sprintf("-%d SIGKILL", old.pid)}) {
			t.Fatalf("got %v, want the lingering group SIGKILLed", c)
		}
	})
}

// TestForegroundFollowsCurrent: when the workers own the terminal (plain
// mode), the current generation's worker holds it: a new generation takes
// it when its swap completes, never before (a rolled-back one never), and
// while the slot is empty baton holds it, so Ctrl-C reaches somebody.
func TestForegroundFollowsCurrent(t *testing.T) {
	r := newRig(t, baseOpts(), func(r *rig) {
		r.s.Foreground = func(pgid int) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.fgs = append(r.fgs, pgid)
			return nil
		}
	})
	fgs := func() []int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return append([]int(nil), r.fgs...)
	}
	w1 := r.worker()
	if !w1.fg {
		t.Fatal("the first worker did not take the terminal")
	}
	r.ready(w1)
	r.sigs <- unix.SIGHUP
	w2 := r.worker()
	r.exit(w2.pid, 1)
	r.expect("swap aborted")
	r.sigs <- unix.SIGHUP
	w3 := r.worker()
	r.notes <- handoff.Note{PID: w3.pid, Ready: true}
	r.expect("swap complete")
	r.barrier() // the terminal moves after "swap complete" is logged
	if w2.fg || w3.fg {
		t.Fatal("a new generation took the terminal as it started")
	}
	if got := fgs(); !slices.Equal(got, []int{w3.pid}) {
		t.Fatalf("foreground moves %v, want only to %d at its swap", got, w3.pid)
	}
	r.exit(w3.pid, 3) // a crash: restarted after a backoff
	r.expect("worker restarting")
	if got := fgs(); !slices.Equal(got, []int{w3.pid, 0}) {
		t.Fatalf("foreground moves %v, want back to baton (0) while the slot is empty", got)
	}
	r.fire(evRestart)
	if w4 := r.worker(); !w4.fg {
		t.Fatal("the restarted current worker did not take the terminal")
	}
}

// nextOf waits for the next log event whose message is one of msgs and
// returns it.
func (r *rig) nextOf(msgs ...string) string {
	r.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-r.logs:
			if slices.Contains(msgs, m) {
				return m
			}
		case <-deadline:
			r.t.Fatalf("none of %q logged", msgs)
			return ""
		}
	}
}

// TestPoolSurvivesCorrelatedCrashes: the whole pool crashing at once (the
// OOM killer, a dependency outage), twice, is not a crash loop: every slot
// is restarted and the pool is whole again. A slot that does crash in a
// loop still ends baton with the worker's code.
func TestPoolSurvivesCorrelatedCrashes(t *testing.T) {
	o := baseOpts()
	o.Workers = 8
	r := newRig(t, o)
	ws := make([]*scriptedWorker, 8)
	for i := range ws {
		ws[i] = r.worker()
	}
	for round := 0; round < 2; round++ {
		var exits []reaper.Exit
		for _, w := range ws {
			r.notes <- handoff.Note{PID: w.pid, Ready: true}
			exits = append(exits, reaper.Exit{PID: w.pid, Status: unix.WaitStatus(137)}) // SIGKILLed
			r.expect("worker ready")
		}
		r.exits <- exits
		r.sigs <- unix.SIGCHLD
		for range ws {
			r.expect("worker restarting")
		}
		r.fire(evRestart)
		ws = r.workers(8)
	}
	for _, w := range ws {
		r.notes <- handoff.Note{PID: w.pid, Ready: true}
		r.expect("worker ready")
	}
	r.expectStatus("after two crashes of the whole pool", func(st Status) bool {
		return st.Serving == 8 && st.Stats.Restarts == 16 && !st.Stopping
	})

	// A real crash loop: one slot crashes on every start. It was restarted
	// twice above; three more restarts reach the limit of 5 in the window,
	// and the next crash ends baton.
	w := ws[0]
	for i := 2; i < o.RestartLimit.Count; i++ {
		r.exit(w.pid, 3)
		r.expect("worker restarting")
		r.fire(evRestart)
		w = r.worker()
	}
	r.exit(w.pid, 3)
	r.expect("restart limit reached")
	r.expectStatus("after a crash loop", func(st Status) bool { return st.Stopping })
}

// recycleRig starts one worker under BATON_MAX_AGE (every worker is past
// its age at once), marks it ready and fires the recycling timer: its
// recycling begins. It returns the old worker and the replacement.
func recycleRig(t *testing.T) (*rig, *scriptedWorker, *scriptedWorker) {
	o := baseOpts()
	o.MaxAge = time.Nanosecond
	r := newRig(t, o)
	old := r.worker()
	r.notes <- handoff.Note{PID: old.pid, Ready: true}
	r.expect("generation ready")
	r.fireArmedFor(evRecycle, recycleEvery)
	repl := r.worker()
	r.expect("recycle begun")
	return r, old, repl
}

// TestRecycleReplacementBoundedByReadyTimeout: a replacement that never
// says READY=1 is stopped after BATON_READY_TIMEOUT, the old worker serves
// on, and recycling goes on (a new replacement is started).
func TestRecycleReplacementBoundedByReadyTimeout(t *testing.T) {
	r, old, repl := recycleRig(t)
	r.fireArmedFor(evRecycleTimeout, baseOpts().ReadyTimeout)
	r.expect("recycle aborted")
	r.barrier() // the loop logs, then signals, in one step
	if got := repl.got(); len(got) == 0 || got[0] != unix.SIGTERM {
		t.Fatalf("the never-ready replacement got %v, want SIGTERM", got)
	}
	if len(old.got()) != 0 {
		t.Fatalf("the old worker was signalled: %v", old.got())
	}
	r.exit(repl.pid, 143)
	r.expect("worker exited")
	r.fire(evRecycle) // recycling goes on
	r.worker()
}

// TestRecycleOldWorkerCrashes: when the worker being recycled crashes
// while its replacement starts, the replacement takes the slot: no restart
// is scheduled (which could later put a third process in the slot, or
// leave a stale pending restart that keeps baton alive with no worker).
func TestRecycleOldWorkerCrashes(t *testing.T) {
	r, old, repl := recycleRig(t)
	r.exit(old.pid, 3)
	if m := r.nextOf("worker restarting", "replacement took over"); m != "replacement took over" {
		t.Fatalf("the old worker's crash logged %q: a restart next to its replacement", m)
	}
	r.notes <- handoff.Note{PID: repl.pid, Ready: true}
	r.expect("worker ready")
	r.expectStatus("the replacement serves", func(st Status) bool { return st.Serving == 1 && st.Starting == 0 })
	// Under on-failure a clean exit of the only worker ends baton: no
	// stale pending restart may keep it alive with no worker.
	r.exit(repl.pid, 0)
	if code := r.ended("the last worker exited 0 under on-failure"); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// fakeSockets records what the loop asks of the sockets in steer mode.
type fakeSockets struct {
	mu      sync.Mutex
	calls   []string
	pending map[int]int
}

func (f *fakeSockets) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeSockets) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeSockets) Open(gen int) ([]int, error) {
	f.record(fmt.Sprintf("open %d", gen))
	return []int{100 + gen}, nil
}
func (f *fakeSockets) Steer(gen int) error { f.record(fmt.Sprintf("steer %d", gen)); return nil }
func (f *fakeSockets) Split(from, to, pct int) error {
	f.record(fmt.Sprintf("split %d %d %d%%", from, to, pct))
	return nil
}
func (f *fakeSockets) Release(gen int) { f.record(fmt.Sprintf("release %d", gen)) }
func (f *fakeSockets) Relay(gen int, _ time.Duration, _ func(handoff.RelayEvent)) int {
	f.record(fmt.Sprintf("relay %d", gen))
	return 0
}
func (f *fakeSockets) CloseAll() { f.record("close all") }

// wantLast fails the test unless the last call recorded is want.
func (f *fakeSockets) wantLast(t *testing.T, want, what string) {
	t.Helper()
	if got := f.got(); len(got) == 0 || got[len(got)-1] != want {
		t.Fatalf("calls %v, want %s", got, what)
	}
}

func (f *fakeSockets) Pending(gen int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending[gen]
}

// groupGone makes KillGroup report pgid's group empty.
func (r *rig) groupGone(pgid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadGroup[pgid] = true
}

// steerRig is a rig in steer mode.
func steerRig(t *testing.T) (*rig, *fakeSockets) {
	return steerRigWith(t, baseOpts())
}

// steerRigWith is steerRig with options o (its SteerSettle is set) and
// more setup.
func steerRigWith(t *testing.T, o Options, setup ...func(*rig)) (*rig, *fakeSockets) {
	o.SteerSettle = steerTestSettle
	fs := &fakeSockets{pending: map[int]int{}}
	r := newRig(t, o, append([]func(*rig){func(r *rig) { r.s.Sockets = fs }}, setup...)...)
	return r, fs
}

// swapOnce makes generation 1's one worker ready, reloads, and makes
// generation 2's ready: the swap is complete.
func (r *rig) swapOnce() (w1, w2 *scriptedWorker) {
	r.t.Helper()
	w1 = r.worker()
	r.notes <- handoff.Note{PID: w1.pid, Ready: true}
	r.expect("generation ready")
	r.sigs <- unix.SIGHUP
	w2 = r.worker()
	r.notes <- handoff.Note{PID: w2.pid, Ready: true}
	r.expect("swap complete")
	return w1, w2
}

// steerTestSettle is BATON_STEER_SETTLE in steer mode's tests.
const steerTestSettle = 3 * time.Second

// TestSteerHandover: the new generation is steered to once ready; the old
// one keeps accepting until its queue is empty, then gets the stop signal,
// and its sockets leave the group once its workers are gone.
func TestSteerHandover(t *testing.T) {
	r, fs := steerRig(t)
	w1, _ := r.swapOnce()
	r.barrier()
	// (Generation 1 is steered to by NewSteering, before the loop.)
	if got := fs.got(); !slices.Equal(got, []string{"open 1", "open 2", "steer 2"}) {
		t.Fatalf("calls %v", got)
	}
	if len(w1.got()) != 0 {
		t.Fatalf("the old generation was signalled at the switch: %v", w1.got())
	}
	fs.mu.Lock()
	fs.pending[1] = 3 // connections still queued for generation 1
	fs.mu.Unlock()
	r.fireArmedFor(evHandover, steerTestSettle)
	r.awaitArmed(evHandover, steerPoll) // the loop found them queued and will look again
	if len(w1.got()) != 0 {
		t.Fatalf("the old generation was signalled with its queue not empty: %v", w1.got())
	}
	fs.mu.Lock()
	fs.pending[1] = 0
	fs.mu.Unlock()
	r.fireArmedFor(evHandover, steerPoll) // the next look finds it empty
	r.expect("worker retiring")
	r.barrier()
	if got := w1.got(); len(got) != 1 || got[0] != unix.SIGTERM {
		t.Fatalf("old worker got %v, want SIGTERM", got)
	}
	if slices.Contains(fs.got(), "release 1") {
		t.Fatal("released while its worker still runs")
	}
	r.groupGone(w1.pid) // no helper of its lingers
	r.exit(w1.pid, 0)
	r.expect("worker exited")
	r.barrier()
	if !slices.Contains(fs.got(), "release 1") {
		t.Fatalf("generation 1 not released after its worker left: %v", fs.got())
	}
}

// TestSteerWaitsForLeaving: a generation ready before the one leaving has
// left waits, and is steered to once it has; a rolled-back one whose
// workers are all gone already is released at once.
func TestSteerWaitsForLeaving(t *testing.T) {
	r, fs := steerRig(t)
	w1, _ := r.swapOnce()
	r.sigs <- unix.SIGHUP
	w3 := r.worker()
	r.exit(w3.pid, 1) // generation 3 fails at boot
	r.expect("swap aborted")
	r.barrier()
	if !slices.Contains(fs.got(), "release 3") {
		t.Fatalf("a rolled-back generation was not released: %v", fs.got())
	}
	r.sigs <- unix.SIGHUP
	w4 := r.worker()
	r.notes <- handoff.Note{PID: w4.pid, Ready: true}
	r.expect("swap waits for the old generation to leave")
	r.barrier()
	if slices.Contains(fs.got(), "steer 4") {
		t.Fatal("steered to generation 4 with generation 1 still in the group")
	}
	r.fireArmedFor(evHandover, steerTestSettle) // generation 1's queue is empty: it retires
	r.expect("worker retiring")
	r.groupGone(w1.pid)
	r.exit(w1.pid, 0)
	r.expect("swap complete") // generation 4, once 1 has left
	r.barrier()
	got := fs.got()
	if i, j := slices.Index(got, "release 1"), slices.Index(got, "steer 4"); i < 0 || j < i {
		t.Fatalf("want generation 1 released, then 4 steered to: %v", got)
	}
}

// TestSteerRollbackLeaves: a rolled-back generation's sockets stay in the
// group while a process of it may still hold them (a UDP socket leaves only
// at its last close; a TCP listener taken out by shutdown comes back at its
// holder's next listen()), as a leaving generation's do; a generation
// ready meanwhile waits for them to go.
func TestSteerRollbackLeaves(t *testing.T) {
	r, fs := steerRig(t)
	w1 := r.worker()
	r.ready(w1)
	r.expect("generation ready")
	r.sigs <- unix.SIGHUP
	w2 := r.worker()
	r.expect("swap begun")
	r.fire(evReadyTimeout) // generation 2 never became ready
	r.expect("swap aborted")
	r.barrier()
	if got := w2.got(); len(got) != 1 || got[0] != unix.SIGTERM {
		t.Fatalf("the rolled-back worker got %v, want SIGTERM", got)
	}
	if slices.Contains(fs.got(), "release 2") {
		t.Fatalf("released while its worker still runs: %v", fs.got())
	}
	r.sigs <- unix.SIGHUP
	w3 := r.worker()
	r.notes <- handoff.Note{PID: w3.pid, Ready: true}
	r.expect("swap waits for the old generation to leave")
	r.barrier()
	if slices.Contains(fs.got(), "steer 3") {
		t.Fatal("steered to generation 3 with generation 2 still in the group")
	}
	r.groupGone(w2.pid) // no helper of its lingers
	r.exit(w2.pid, 0)
	r.expect("swap complete") // generation 3, once 2 has left
	r.barrier()
	got := fs.got()
	if i, j := slices.Index(got, "release 2"), slices.Index(got, "steer 3"); i < 0 || j < i {
		t.Fatalf("want generation 2 released, then 3 steered to: %v", got)
	}
	if len(w1.got()) != 0 {
		t.Fatalf("generation 1 was signalled before it handed over: %v", w1.got())
	}
}

// steerRefused is fakeSockets whose Steer to one generation fails.
type steerRefused struct {
	*fakeSockets
	gen int
}

func (f steerRefused) Steer(gen int) error {
	f.record(fmt.Sprintf("steer %d", gen))
	if gen == f.gen {
		return fmt.Errorf("steer refused for generation %d", gen)
	}
	return nil
}

// TestSteerFailedRollsBack: a generation whose steer fails (perhaps after
// some listeners were steered to it) is rolled back: every listener is
// steered back to the current generation, and its sockets leave once its
// workers are gone.
func TestSteerFailedRollsBack(t *testing.T) {
	r, fs := steerRigWith(t, baseOpts(), func(r *rig) {
		r.s.Sockets = steerRefused{r.s.Sockets.(*fakeSockets), 2}
	})
	w1 := r.worker()
	r.ready(w1)
	r.expect("generation ready")
	r.sigs <- unix.SIGHUP
	w2 := r.worker()
	r.notes <- handoff.Note{PID: w2.pid, Ready: true}
	r.expect("swap aborted")
	r.barrier()
	if got := fs.got(); !slices.Equal(got, []string{"open 1", "open 2", "steer 2", "steer 1"}) {
		t.Fatalf("calls %v, want generation 1 steered to again and nothing released yet", got)
	}
	r.groupGone(w2.pid)
	r.exit(w2.pid, 0)
	r.expect("worker exited")
	r.barrier()
	fs.wantLast(t, "release 2", "generation 2 released once its worker is gone")
}

// reloadAsync asks the loop for a reload from a goroutine and returns where
// its outcome arrives.
func (r *rig) reloadAsync() <-chan Outcome {
	out := make(chan Outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		o, err := r.s.Reload(ctx, "test")
		if err != nil {
			o.Reason = "no outcome: " + err.Error()
		}
		out <- o
	}()
	return out
}

// reloadWaiter asks the loop for a reload as Reload does, and returns the
// loop's own reply channel: once a barrier has passed, an outcome the loop
// has given is in it (reloadAsync's goroutine adds a hop).
func (r *rig) reloadWaiter() <-chan Outcome {
	reply := make(chan Outcome, 1)
	r.s.reloadReqs <- reloadReq{why: "test", reply: reply}
	return reply
}

func (r *rig) outcome(c <-chan Outcome) Outcome {
	r.t.Helper()
	select {
	case o := <-c:
		return o
	case <-time.After(5 * time.Second):
		r.t.Fatal("no outcome")
		return Outcome{}
	}
}

// TestReloadOutcome: a reload reports the outcome of the swap that covers
// it: its own, or, when a swap was already in progress, the one after; a
// rolled-back swap reports why.
func TestReloadOutcome(t *testing.T) {
	r := newRig(t, baseOpts())
	w1 := r.worker()
	r.notes <- handoff.Note{PID: w1.pid, Ready: true}
	r.expect("generation ready")
	first := r.reloadAsync()
	w2 := r.worker()
	second := r.reloadAsync() // during swap 2: covered by swap 3
	r.expect("reload coalesced")
	r.notes <- handoff.Note{PID: w2.pid, Ready: true}
	if o := r.outcome(first); !o.OK || o.Gen != 2 {
		t.Fatalf("first reload: %+v, want generation 2", o)
	}
	w3 := r.worker() // the coalesced swap
	r.exit(w3.pid, 1)
	if o := r.outcome(second); o.OK || o.Gen != 2 || !strings.Contains(o.Reason, "rolled back") {
		t.Fatalf("second reload: %+v, want generation 3 rolled back, 2 serving", o)
	}
}

// TestReloadCheck: a failing check refuses the reload before any worker
// starts, with its exit status and last line; a passing one lets it go on;
// one that does not finish in time is killed and refuses it.
func TestReloadCheck(t *testing.T) {
	type run struct {
		w     *scriptedWorker
		lines chan string
	}
	checks := make(chan run, 4)
	r := newRig(t, baseOpts(), func(r *rig) {
		r.s.Check = func(gen int) (Worker, <-chan string, error) {
			r.nextPID++
			c := run{&scriptedWorker{pid: r.nextPID}, make(chan string, 1)}
			checks <- c
			return c.w, c.lines, nil
		}
	})
	w1 := r.worker()
	r.notes <- handoff.Note{PID: w1.pid, Ready: true}
	r.expect("generation ready")

	out := r.reloadAsync()
	c := <-checks
	c.lines <- "config error: line 3"
	r.exit(c.w.pid, 2)
	if o := r.outcome(out); o.OK || !strings.Contains(o.Reason, "exited 2: config error: line 3") {
		t.Fatalf("failed check: %+v", o)
	}
	r.barrier() // the step that answered is over: a worker it started is in r.started
	select {
	case w := <-r.started:
		t.Fatalf("a worker (%d) started after a failed check", w.pid)
	default:
	}

	out = r.reloadAsync()
	c = <-checks
	c.lines <- "ok"
	r.exit(c.w.pid, 0)
	w2 := r.worker()
	r.notes <- handoff.Note{PID: w2.pid, Ready: true}
	if o := r.outcome(out); !o.OK || o.Gen != 2 {
		t.Fatalf("passed check: %+v", o)
	}

	out = r.reloadAsync()
	c = <-checks
	r.expect("reload check begun")
	r.fireArmedFor(evCheckTimeout, baseOpts().ReadyTimeout)
	// The timer reaches the loop on a channel of its own: a barrier alone
	// could be answered first (21 runs in 100 failed so under -race).
	r.expect("reload check timed out")
	r.barrier()
	if got := c.w.got(); len(got) != 1 || got[0] != unix.SIGKILL {
		t.Fatalf("the hung check got %v, want SIGKILL", got)
	}
	c.lines <- ""
	r.exit(c.w.pid, 137)
	if o := r.outcome(out); o.OK || !strings.Contains(o.Reason, "did not finish") {
		t.Fatalf("hung check: %+v", o)
	}
}

// TestRollingSwap: with 4 workers and a surge of 1, never more than 5 are
// alive: each new worker that is ready lets one old one go, and the next
// new one starts once an old one has exited. A new worker that fails halts
// the rollout: the ready new workers and the old ones left serve on.
func TestRollingSwap(t *testing.T) {
	o := baseOpts()
	o.Workers, o.Surge = 4, 1
	r := newRig(t, o)
	var old []*scriptedWorker
	for i := 0; i < 4; i++ {
		old = append(old, r.worker())
		r.notes <- handoff.Note{PID: old[i].pid, Ready: true}
	}
	r.expect("generation ready")
	out := r.reloadAsync()
	alive := map[int]bool{}
	for _, w := range old {
		alive[w.pid] = true
	}
	var gen2 []*scriptedWorker
	for i := 0; i < 4; i++ {
		nw := r.worker()
		gen2 = append(gen2, nw)
		alive[nw.pid] = true
		if len(alive) > 5 {
			t.Fatalf("%d workers alive during a rolling swap, want at most 5", len(alive))
		}
		r.barrier() // the loop starts a worker within a step: any other is in r.started
		select {
		case extra := <-r.started:
			t.Fatalf("worker %d started before an old one exited", extra.pid)
		default:
		}
		r.notes <- handoff.Note{PID: nw.pid, Ready: true}
		r.expect("worker retiring")
		r.barrier()
		for _, w := range old {
			if alive[w.pid] && len(w.got()) > 0 {
				delete(alive, w.pid)
				r.exit(w.pid, 0)
				r.expect("worker exited")
			}
		}
	}
	if oc := r.outcome(out); !oc.OK || oc.Gen != 2 {
		t.Fatalf("rolling swap: %+v", oc)
	}

	// Halt: the second new worker fails.
	out = r.reloadAsync()
	n1 := r.worker()
	r.notes <- handoff.Note{PID: n1.pid, Ready: true}
	r.expect("worker retiring")
	r.barrier()
	for _, w := range gen2 {
		if len(w.got()) > 0 {
			r.exit(w.pid, 0) // the one it let go
			break
		}
	}
	n2 := r.worker()
	r.exit(n2.pid, 1)
	oc := r.outcome(out)
	if oc.OK || !strings.Contains(oc.Reason, "halted after 1 of 4") {
		t.Fatalf("halted rollout: %+v", oc)
	}
	r.expectStatus("after the halt", func(st Status) bool { return st.Gen == 2 && st.Serving == 4 })
}

// TestWatchdog: a worker that pinged and then fell silent is aborted, and
// killed if still alive after the stop timeout; one that never pinged is
// left alone; WATCHDOG=trigger aborts at once.
func TestWatchdog(t *testing.T) {
	o := baseOpts()
	o.Workers = 3
	o.Watchdog = 3 * time.Minute
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	r := newRig(t, o, func(r *rig) {
		r.s.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		}
	})
	ws := []*scriptedWorker{r.worker(), r.worker(), r.worker()}
	for _, w := range ws {
		r.notes <- handoff.Note{PID: w.pid, Ready: true}
	}
	r.expect("generation ready")
	r.notes <- handoff.Note{PID: ws[0].pid, Watchdog: true} // pings, and once more 2 min later
	r.notes <- handoff.Note{PID: ws[2].pid, Trigger: true}  // says it is hung
	r.expect("worker hung")
	r.barrier()
	if got := ws[2].got(); len(got) != 1 || got[0] != unix.SIGABRT {
		t.Fatalf("WATCHDOG=trigger: the worker got %v, want SIGABRT", got)
	}
	advance(2 * time.Minute)
	r.notes <- handoff.Note{PID: ws[0].pid, Watchdog: true}
	r.barrier()
	advance(time.Minute)
	r.fireArmedFor(evWatchdog, o.Watchdog)  // 3 min after the first ping, 1 min after the last
	r.awaitArmed(evWatchdog, 2*time.Minute) // armed again for 3 min after the last
	if got := ws[0].got(); len(got) != 0 {
		t.Fatalf("a worker that pinged within BATON_WATCHDOG got %v", got)
	}
	advance(2 * time.Minute)
	r.fireArmedFor(evWatchdog, 2*time.Minute) // BATON_WATCHDOG after its last ping
	r.expect("worker hung")
	r.barrier()
	if got := ws[0].got(); len(got) != 1 || got[0] != unix.SIGABRT {
		t.Fatalf("silent worker got %v, want SIGABRT", got)
	}
	if got := ws[1].got(); len(got) != 0 {
		t.Fatalf("a worker that never pinged got %v", got)
	}
	r.fireArmedFor(evWatchdogKill, o.StopTimeout) // BATON_STOP_TIMEOUT: both hung ones are still there
	r.expect("hung worker killed")
	r.expect("hung worker killed")
	r.barrier()
	if got := ws[0].got(); len(got) != 2 || got[1] != unix.SIGKILL {
		t.Fatalf("silent worker got %v, want SIGABRT, then SIGKILL", got)
	}
	r.expectStatus("watchdog kills counted", func(st Status) bool { return st.Stats.WatchdogKills == 2 })
}

// TestStatusAcrossLifecycle: the status /readyz, /healthz and /metrics
// serve (control's TestHTTPFollowsStatus shows they follow it), through
// start, swaps, a coalesced and a failed reload and a delayed shutdown:
// ready only once the first generation is, never unready in the middle of
// a swap, unready from the moment shutdown begins, healthy until it ends.
func TestStatusAcrossLifecycle(t *testing.T) {
	o := baseOpts()
	o.Workers, o.ShutdownDelay = 2, time.Hour
	r := newRig(t, o)
	a, b := r.worker(), r.worker()
	r.expectStatus("before ready", func(st Status) bool {
		return !st.Ready && st.Healthy && st.Starting == 2 && st.Gen == 1
	})
	r.ready(a)
	r.expectStatus("one of two workers ready", func(st Status) bool { return st.Serving == 1 && !st.Ready })
	r.ready(b)
	r.expectStatus("generation 1 ready", func(st Status) bool { return st.Ready && st.Gen == 1 && st.Serving == 2 })

	// A swap: ready all along.
	r.sigs <- unix.SIGHUP
	c, d := r.worker(), r.worker()
	r.expectStatus("mid-swap", func(st Status) bool { return st.Ready && st.Gen == 1 && st.Serving == 2 && st.Starting == 2 })
	r.ready(c)
	r.expectStatus("one new worker ready", func(st Status) bool { return st.Ready && st.Serving == 3 })
	r.ready(d)
	r.expect("swap complete")
	r.expectStatus("after swap", func(st Status) bool { return st.Ready && st.Gen == 2 && st.Stats.ReloadsOK == 1 })
	for _, w := range []*scriptedWorker{a, b} {
		r.groupGone(w.pid)
		r.exit(w.pid, 0)
		r.expect("worker exited")
	}
	r.expectStatus("old generation gone", func(st Status) bool { return st.Ready && st.Retiring == 0 && st.Serving == 2 })

	// Two reloads at once: one swap, one coalesced, then the coalesced
	// swap fails (a new worker exits before ready): still ready.
	r.sigs <- unix.SIGHUP
	r.sigs <- unix.SIGHUP
	e, f := r.worker(), r.worker()
	r.expect("reload coalesced")
	r.expectStatus("second reload coalesced", func(st Status) bool { return st.Ready && st.Stats.ReloadsCoalesced == 1 })
	r.ready(e)
	r.ready(f)
	g, h := r.worker(), r.worker() // the coalesced swap
	r.expect("swap complete")
	r.expectStatus("coalesced swap begun", func(st Status) bool {
		return st.Ready && st.Gen == 3 && st.Starting == 2 && st.Stats.ReloadsCoalesced == 1
	})
	r.ready(g)
	r.exit(h.pid, 3)
	r.expect("swap aborted")
	r.expectStatus("after failed swap", func(st Status) bool {
		return st.Ready && st.Gen == 3 && st.Stats.ReloadsOK == 2 && st.Stats.ReloadsFailed == 1 && st.Stats.LastSwap >= 0
	})

	// Shutdown with a delay: unready at once, still healthy and serving.
	r.sigs <- unix.SIGTERM
	r.expect("shutdown begun")
	r.expectStatus("during shutdown delay", func(st Status) bool { return st.Stopping && !st.Ready && st.Healthy && st.Serving == 2 })
	// A reload during the delay is ignored. USR1 behind it is a barrier:
	// the signal channel is FIFO, so once USR1 was forwarded, the HUP was
	// handled.
	r.sigs <- unix.SIGHUP
	r.sigs <- unix.SIGUSR1
	r.expect("signal forwarded")
	r.expectStatus("reload during shutdown delay", func(st Status) bool { return !st.Ready && st.Starting == 0 && st.Gen == 3 })
	r.fireArmedFor(evShutdownDelay, o.ShutdownDelay)
	r.expect("stopping")
	for _, w := range []*scriptedWorker{c, d, e, f, g} { // generation 2 retiring, 3 serving, 4 rolled back
		r.exit(w.pid, 0)
	}
	if code := r.ended("after the shutdown delay and every worker's exit"); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
