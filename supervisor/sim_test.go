//go:build linux

package supervisor

import (
	"cmp"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-init/baton/handoff"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The loop under simulation (FoundationDB's deterministic simulation,
// TigerBeetle's VOPR): the real loop, driven step by step by a seeded
// scheduler through its seams, against the world of simworld_test.go,
// with invariants checked after every step. A seed replays exactly:
//
//	go test ./supervisor -run '^TestSim$' -sim.seed S -sim.seeds 1 -sim.trace
//	go run ./test/sim -seed S        (the same, through go test)
//	go run ./test/sim -seeds 1000000 (a campaign)
var (
	simSeeds = flag.Int("sim.seeds", 10000, "TestSim: how many seeds")
	simSeed  = flag.Uint64("sim.seed", 1, "TestSim: the first seed")
	simTrace = flag.Bool("sim.trace", false, "TestSim: print the event trace of every seed run")
	simList  = flag.Bool("sim.list", false, "TestSim: list every failing seed and its violation, then fail")
	// Workers that take a leaving generation's socket out of the group
	// with shutdown(SHUT_RD) while alive: baton's copy of the group then
	// drifts from the kernel's (an open defect, see docs/development.md),
	// so they are off unless asked for.
	simShutRD = flag.Bool("sim.shutrd", false, "TestSim: workers may shut their sockets down (SHUT_RD) while alive")
)

// simRegressions are seeds that broke an invariant once, each with what
// it found; they run in every TestSim.
var simRegressions = []uint64{
	23,     // a stale bake timer ended a later bake of the same parked generation 8 s early
	11775,  // a recycle replacement of the reverted generation stayed in replacing: recycling stopped for good
	5875,   // a revert never restarted a parked slot whose restart was pending: 0 of 1 serving
	78178,  // a halted rolling swap's ready worker that found no slot served on outside any: 5 serving of 4
	66741,  // a halted rolling swap whose ready workers filled every slot left /readyz not ready for good
	109869, // a reload asked for while an aborted canary's check still ran was never begun nor answered
	10395,  // a halted rolling swap left a slot whose old worker it had let go with nobody: 3 of 4 serving
	12997,  // a halted rolling swap put a ready worker in a slot whose restart was pending: another slot stayed empty
	1988,   // a left-behind group emptied by the same batch of exits got the stop signal
	614,    // a worker's exit 0 during BATON_SHUTDOWN_DELAY decided baton's status (0, not the 137 that came after)
	110,    // the watchdog sent SIGABRT to a worker of the generation parked during a bake
	6,      // a restart during a rolling swap made 5 workers alive with BATON_WORKERS=3 BATON_SURGE=1
	117,    // a worker reaped in the same wait4 batch as the one whose exit ended baton got the stop signal
	15,     // a reload check that ended during BATON_SHUTDOWN_DELAY never answered its waiter
}

func TestSim(t *testing.T) {
	start := time.Now()
	first, n := *simSeed, *simSeeds
	var failed atomic.Uint64 // lowest failing seed+1
	var next atomic.Uint64
	next.Store(0)
	seeds := append([]uint64(nil), simRegressions...)
	var wg sync.WaitGroup
	var steps atomic.Int64
	total := uint64(len(seeds)) + uint64(n)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				seed := first + i - uint64(len(seeds))
				if i < uint64(len(seeds)) {
					seed = seeds[i]
				}
				if f := failed.Load(); f != 0 && seed+1 >= f && !*simList {
					continue
				}
				r := simRun(seed, *simTrace)
				steps.Add(int64(r.steps))
				if *simTrace {
					fmt.Fprintf(os.Stderr, "seed %d: %s\n%s\n", seed, r.opts, strings.Join(r.trace, "\n"))
				}
				if len(r.viol) > 0 && *simList {
					fmt.Fprintf(os.Stderr, "seed %d: %s\n", seed, r.viol[0])
				}
				if len(r.viol) > 0 {
					for {
						f := failed.Load()
						if f != 0 && f <= seed+1 {
							break
						}
						if failed.CompareAndSwap(f, seed+1) {
							break
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d seeds (%d regressions), %d steps in %v", total, len(seeds), steps.Load(), time.Since(start).Round(time.Millisecond))
	if f := failed.Load(); f != 0 {
		seed := f - 1
		r := simRun(seed, true)
		tr := r.trace
		if len(tr) > 300 && !*simTrace {
			tr = append([]string{fmt.Sprintf("... %d earlier events", len(tr)-300)}, tr[len(tr)-300:]...)
		}
		t.Fatalf("seed %d broke an invariant (replay: go test ./supervisor -run '^TestSim$' -sim.seed %d -sim.seeds 1 -sim.trace)\noptions: %s\n%s\nviolation: %s",
			seed, seed, r.opts, strings.Join(tr, "\n"), strings.Join(r.viol, "; "))
	}
}

type simResult struct {
	opts  string
	steps int
	viol  []string
	trace []string
}

// simOptions draws a configuration from the option space, as validate
// allows it.
func simOptions(rng *rand.Rand, w *simWorld) (Options, string) {
	o := Options{
		Workers:      1 + rng.IntN(4),
		Ready:        ReadyMode{Kind: "notify"},
		ReadyTimeout: []time.Duration{time.Second, 3 * time.Second, 10 * time.Second}[rng.IntN(3)],
		ReloadSignal: unix.SIGHUP,
		StopSignal:   unix.SIGTERM,
		StopTimeout:  []time.Duration{time.Second, 5 * time.Second}[rng.IntN(2)],
		Restart:      []Restart{RestartAlways, RestartOnFailure}[rng.IntN(2)],
		RestartLimit: RestartLimit{Count: 2 + rng.IntN(10), Window: []time.Duration{10 * time.Second, time.Minute}[rng.IntN(2)]},
		PID1:         rng.IntN(5) > 0,
	}
	o.Subreaper = !o.PID1
	switch rng.IntN(6) {
	case 0:
		o.Ready = ReadyMode{Kind: "delay", Delay: 500 * time.Millisecond}
	case 1:
		o.Ready = ReadyMode{Kind: "auto"}
	}
	if o.Workers == 1 && rng.IntN(6) == 0 {
		o.Restart = RestartNever
	}
	if rng.IntN(4) == 0 {
		o.ShutdownDelay = time.Second
	}
	if rng.IntN(3) == 0 {
		o.MaxAge = time.Duration(3+rng.IntN(20)) * time.Second
	}
	if rng.IntN(4) == 0 {
		o.MaxRSS = 100 << 20
	}
	if rng.IntN(3) == 0 {
		o.Watchdog = 2 * time.Second
	}
	w.steer = rng.IntN(2) == 0
	if w.steer {
		o.SteerSettle = 100 * time.Millisecond
		if rng.IntN(3) == 0 {
			o.Canary = []CanaryStep{{Percent: 10, Duration: time.Second}}
			if rng.IntN(2) == 0 {
				o.Canary = append(o.Canary, CanaryStep{Percent: 50, Duration: 5 * time.Second})
			}
		}
		if rng.IntN(5) < 2 {
			o.Bake = time.Duration(3+rng.IntN(8)) * time.Second
		}
	} else if rng.IntN(5) < 2 {
		o.Surge = 1 + rng.IntN(o.Workers)
	}
	w.failStart = []float64{0, 0.01, 0.05}[rng.IntN(3)]
	w.stubborn = []float64{0, 0.1, 0.3}[rng.IntN(3)]
	w.shimP = []float64{0, 0.3}[rng.IntN(2)]
	w.helperP = []float64{0, 0.1}[rng.IntN(2)]
	w.shutRDP = []float64{0, 0.3, 0.8}[rng.IntN(3)]
	if !*simShutRD {
		w.shutRDP = 0
	}
	w.checkFail = 0.3
	w.checkHang = 0.1
	desc := fmt.Sprintf("workers=%d ready=%s timeout=%v stop=%v restart=%s limit=%d/%v pid1=%v delay=%v age=%v rss=%v watchdog=%v steer=%v surge=%d canary=%v bake=%v failstart=%v stubborn=%v shim=%v helper=%v shutrd=%v",
		o.Workers, o.Ready.Kind, o.ReadyTimeout, o.StopTimeout, o.Restart, o.RestartLimit.Count, o.RestartLimit.Window, o.PID1,
		o.ShutdownDelay, o.MaxAge, o.MaxRSS > 0, o.Watchdog, w.steer, o.Surge, o.Canary, o.Bake,
		w.failStart, w.stubborn, w.shimP, w.helperP, w.shutRDP)
	return o, desc
}

// simRun runs one seed: a random schedule, then the world settles (only
// what happens by itself: processes exit as told, timers fire in order),
// then SIGTERM and the shutdown.
func simRun(seed uint64, trace bool) (res simResult) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed_ba70))
	w := &simWorld{hungBefore: map[*worker]bool{}, rng: rng, now: simEpoch, byPID: map[int]*simProc{}, fds: map[int]*simSock{}, nextFD: 2, lastPID: 1}
	if trace {
		w.trace = []string{}
	}
	opts, desc := simOptions(rng, w)
	res.opts = desc
	s := New(opts, zerolog.Nop())
	w.s = s
	s.Start = w.start
	s.Reap = w.reap
	s.HasChildren = w.hasChildren
	s.KillAll = w.killAll
	s.KillGroup = w.killGroup
	s.arm = w.arm
	s.Now = func() time.Time { return w.now }
	s.AfterFunc = nil
	s.RSS = func(int) (int64, error) { return w.rss, nil }
	hasCheck := rng.IntN(3) == 0
	if hasCheck {
		s.Check = w.check
	}
	if len(opts.Canary) > 0 && rng.IntN(2) == 0 {
		s.CanaryCheck = w.check
	}
	if w.steer {
		w.listeners = []*simListener{{current: 1}}
		if rng.IntN(2) == 0 {
			w.listeners = append(w.listeners, &simListener{udp: true, current: 1})
		}
		s.Sockets = simSockets{w}
	}
	sim := &simState{w: w, s: s, rng: rng, maxAge: map[*worker]bool{}}
	defer sim.cleanup()
	defer func() {
		res.viol, res.trace, res.steps = w.viol, w.trace, sim.steps
	}()

	// Run's start, step by step (supervisor.go).
	w.tracef("options: %s", desc)
	s.reap()
	if s.Sockets == nil {
		s.Sockets = handoff.Shared(nil)
	}
	s.current = s.newGeneration()
	if fds, err := s.Sockets.Open(s.current.num); err != nil {
		s.end(1)
	} else {
		s.current.fds = fds
	}
	for i := 0; i < s.opts.Workers && s.phase < phaseStopping; i++ {
		if wk, err := s.startWorker(s.current, i, s.owns(i)); err != nil {
			s.end(1)
		} else {
			wk.initial = true
		}
	}
	s.after(s.opts.ReadyTimeout, timerEvent{kind: evReadyTimeout, gen: s.current.num})
	if s.opts.MaxRSS > 0 || s.opts.MaxAge > 0 {
		s.after(recycleEvery, timerEvent{kind: evRecycle})
	}
	sim.afterStep()

	n := 30 + rng.IntN(300)
	for i := 0; i < n && s.phase != phaseDone && len(w.viol) == 0; i++ {
		sim.step(false)
	}
	if len(w.viol) > 0 || s.phase == phaseDone {
		sim.finish()
		return
	}
	sim.settle()
	if len(w.viol) > 0 {
		return
	}
	if s.phase == phaseRunning {
		sim.quiescent()
		if len(w.viol) > 0 {
			return
		}
	}
	sim.finish()
	return
}

type simState struct {
	w      *simWorld
	s      *Supervisor
	rng    *rand.Rand
	steps  int
	maxAge map[*worker]bool
	// waiters are the replies of baton reload calls, in order
	waiters []chan Outcome
	// the loop's state before the step, for invariants about changes
	prevParked   *generation
	prevCurrent  *generation
	prevBakeEnds time.Time
	prevAlive    int
	terms        int
	termUnset    bool // SIGTERM came while the exit status was undecided
}

type simAction struct {
	weight int
	do     func()
}

// step runs one event: any the world allows (natural: only what happens
// by itself).
func (sim *simState) step(natural bool) bool {
	w, s, rng := sim.w, sim.s, sim.rng
	var acts []simAction
	add := func(weight int, f func()) {
		if weight > 0 {
			acts = append(acts, simAction{weight, f})
		}
	}
	pick := func(ps []*simProc) *simProc { return ps[rng.IntN(len(ps))] }
	var inShim, drained, aborted, unready, alive, checks, lines, relisten []*simProc
	for _, p := range w.procs {
		if p.exited {
			if p.kind == kCheck && !p.lineSent && s.checkLines != nil && s.checkLines == (<-chan string)(p.lines) {
				lines = append(lines, p)
			}
			continue
		}
		alive = append(alive, p)
		if p.inShim {
			inShim = append(inShim, p)
		}
		if p.stopped || (p.kind == kHelper && natural) {
			drained = append(drained, p)
		}
		if p.aborted {
			aborted = append(aborted, p)
		}
		if p.kind == kWorker && !p.readySent && !p.stopped {
			unready = append(unready, p)
		}
		if p.kind == kCheck && (!p.checkHang || false) {
			checks = append(checks, p)
		}
		if p.kind == kCheck && !p.lineSent && s.checkLines != nil && s.checkLines == (<-chan string)(p.lines) && !natural {
			lines = append(lines, p)
		}
		if p.relisten && p.kind == kWorker {
			for _, so := range p.socks {
				if so.shut {
					relisten = append(relisten, p)
					break
				}
			}
		}
	}
	if w.sigchld {
		add(25, func() {
			w.sigchld = false
			w.tracef("SIGCHLD")
			s.onSignal(unix.SIGCHLD)
		})
	}
	if len(w.execMsgs) > 0 {
		add(20, func() {
			lw := w.execMsgs[0]
			w.execMsgs = w.execMsgs[1:]
			w.tracef("loop hears pid %d left the shim", lw.pid)
			s.onExec(lw)
		})
	}
	if len(inShim) > 0 {
		add(15, func() {
			p := pick(inShim)
			w.tracef("pid %d leaves the shim", p.pid)
			p.inShim = false
			w.leaveShim(p)
		})
	}
	if len(drained) > 0 {
		add(15, func() {
			p := pick(drained)
			code := 0
			if !natural && rng.IntN(5) == 0 {
				code = 1
			}
			w.tracef("pid %d (gen %d worker %d) exits %d after its drain", p.pid, p.gen, p.idx, code)
			w.exit(p, code)
		})
	}
	if len(aborted) > 0 {
		add(10, func() {
			p := pick(aborted)
			w.tracef("pid %d dies of SIGABRT", p.pid)
			w.exit(p, 128+int(unix.SIGABRT))
		})
	}
	readyKind := s.opts.Ready.Kind != "delay"
	if len(unready) > 0 && readyKind {
		add(20, func() {
			p := pick(unready)
			p.readySent = true
			w.tracef("pid %d (gen %d worker %d): READY=1", p.pid, p.gen, p.idx)
			s.onNote(handoff.Note{PID: p.pid, PGID: p.pgid, Ready: true})
		})
	}
	if len(checks) > 0 {
		add(10, func() {
			p := pick(checks)
			if p.checkHang {
				return
			}
			w.tracef("check pid %d exits %d", p.pid, p.checkCode)
			w.exit(p, p.checkCode)
		})
	}
	if len(lines) > 0 {
		add(10, func() {
			p := pick(lines)
			p.lineSent = true
			w.tracef("check pid %d: its output ends", p.pid)
			s.onCheckLine("check output")
		})
	}
	if len(relisten) > 0 {
		add(3, func() {
			p := pick(relisten)
			w.tracef("pid %d calls listen() again", p.pid)
			w.relisten(p)
		})
	}
	if !natural {
		var workers []*simProc
		for _, p := range alive {
			if p.kind != kCheck {
				workers = append(workers, p)
			}
		}
		if len(workers) > 0 {
			add(4, func() {
				p := pick(workers)
				code := []int{0, 1, 2, 137, 143}[rng.IntN(5)]
				w.tracef("pid %d (gen %d worker %d) exits %d on its own", p.pid, p.gen, p.idx, code)
				w.exit(p, code)
			})
			add(3, func() {
				p := pick(workers)
				w.tracef("pid %d (gen %d worker %d): READY=1 (again or early)", p.pid, p.gen, p.idx)
				p.readySent = true
				s.onNote(handoff.Note{PID: p.pid, PGID: p.pgid, Ready: true})
			})
			add(1, func() {
				p := pick(workers)
				w.tracef("pid %d (gen %d worker %d): STOPPING=1", p.pid, p.gen, p.idx)
				s.onNote(handoff.Note{PID: p.pid, PGID: p.pgid, Stopping: true})
			})
			if s.opts.Watchdog > 0 {
				add(6, func() {
					p := pick(workers)
					w.tracef("pid %d (gen %d worker %d): WATCHDOG=1", p.pid, p.gen, p.idx)
					s.onNote(handoff.Note{PID: p.pid, PGID: p.pgid, Watchdog: true})
				})
				add(1, func() {
					p := pick(workers)
					w.tracef("pid %d (gen %d worker %d): WATCHDOG=trigger", p.pid, p.gen, p.idx)
					s.onNote(handoff.Note{PID: p.pid, PGID: p.pgid, Trigger: true})
				})
			}
		}
		add(4, func() {
			w.tracef("SIGHUP (reload signal)")
			s.onSignal(unix.SIGHUP)
		})
		add(4, func() {
			reply := make(chan Outcome, 2)
			sim.waiters = append(sim.waiters, reply)
			w.tracef("baton reload (waiter %d)", len(sim.waiters))
			s.requestReload("control", reply)
		})
		add(1, func() {
			w.tracef("file watch reload")
			s.requestReload("watch", nil)
		})
		if sim.terms < 2 {
			add(1, func() { sim.sigterm() })
		}
		if s.opts.MaxRSS > 0 {
			add(2, func() {
				w.rss = int64(rng.IntN(2)) * 200 << 20
				w.tracef("RSS now %d MiB", w.rss>>20)
			})
		}
		add(2, func() {
			st := s.status()
			w.tracef("status: gen %d ready %v serving %d starting %d retiring %d parked %d", st.Gen, st.Ready, st.Serving, st.Starting, st.Retiring, st.ParkedWorkers)
			if st.Ready && st.Stopping {
				w.violate("/readyz ready while stopping")
			}
		})
	}
	// Timers: mostly the earliest; sometimes any, so that timers fire
	// late relative to each other.
	var ts []*simTimer
	for _, t := range w.timers {
		if natural && s.phase == phaseRunning && (t.ev.kind == evRecycle || t.ev.kind == evWatchdog) {
			continue // periodic: the world is settled without them
		}
		ts = append(ts, t)
	}
	if len(ts) > 0 {
		slices.SortFunc(ts, timerOrder)
		fire := func(t *simTimer) {
			w.timers = slices.DeleteFunc(w.timers, func(x *simTimer) bool { return x == t })
			if t.due.After(w.now) {
				w.now = t.due
			}
			w.tracef("timer %s fires (gen %d idx %d pid %d pgid %d; armed for %v)", kindNames[t.ev.kind], t.ev.gen, t.ev.idx, timerPID(t), t.ev.pgid, t.due.Sub(simEpoch).Seconds())
			s.onTimer(t.ev)
		}
		if natural {
			if len(acts) == 0 {
				add(1, func() { fire(ts[0]) })
			}
		} else {
			add(30, func() { fire(ts[0]) })
			add(5, func() { fire(ts[rng.IntN(len(ts))]) })
		}
	}
	if len(acts) == 0 {
		return false
	}
	sum := 0
	for _, a := range acts {
		sum += a.weight
	}
	r := rng.IntN(sum)
	for _, a := range acts {
		if r < a.weight {
			sim.beforeStep()
			a.do()
			sim.afterStep()
			break
		}
		r -= a.weight
	}
	return true
}

func timerPID(t *simTimer) int {
	if t.ev.w != nil {
		return t.ev.w.pid
	}
	return 0
}

// timerOrder is the order timers fire in: by when they are due, ties
// broken by what they are about, not by the order the loop armed them in
// (which follows its map iteration in places).
func timerOrder(a, b *simTimer) int {
	return cmp.Or(a.due.Compare(b.due), cmp.Compare(a.ev.kind, b.ev.kind), cmp.Compare(a.ev.gen, b.ev.gen),
		cmp.Compare(a.ev.idx, b.ev.idx), cmp.Compare(timerPID(a), timerPID(b)), cmp.Compare(a.ev.pgid, b.ev.pgid), cmp.Compare(a.seq, b.seq))
}

func (sim *simState) sigterm() {
	sim.terms++
	sim.w.tracef("SIGTERM")
	if sim.s.phase == phaseRunning && sim.s.exitCode == codeUnset {
		sim.termUnset = true
	}
	sim.w.termSent = true
	sim.s.onSignal(unix.SIGTERM)
}

func (sim *simState) beforeStep() {
	s := sim.s
	sim.prevParked, sim.prevCurrent, sim.prevBakeEnds = s.parked, s.current, s.bakeEnds
	sim.prevAlive = sim.aliveWorkers()
	clear(sim.w.hungBefore)
	for _, wk := range s.byPID {
		if wk.hung {
			sim.w.hungBefore[wk] = true
		}
	}
}

// aliveWorkers counts the worker processes that have not exited, draining
// ones included.
func (sim *simState) aliveWorkers() int {
	n := 0
	for _, p := range sim.w.procs {
		if p.kind == kWorker && !p.exited {
			n++
		}
	}
	return n
}

// afterStep ends a step as Run does (checkDone), then checks the
// invariants.
func (sim *simState) afterStep() {
	s, w := sim.s, sim.w
	s.checkDone()
	sim.steps++
	for _, e := range w.stepExits {
		if e.code != 0 && e.gen == s.current && e.gen == sim.prevCurrent {
			w.mustFail = true
		}
	}
	w.stepExits = w.stepExits[:0]
	// startWorker draws BATON_MAX_AGE's jitter from the global source:
	// replace it with the seed's, for an exact replay.
	for _, wk := range s.byPID {
		if !sim.maxAge[wk] && s.opts.MaxAge > 0 {
			sim.maxAge[wk] = true
			wk.maxAge = s.opts.MaxAge + time.Duration(sim.rng.Int64N(int64(s.opts.MaxAge)/10+1))
		}
	}
	sim.invariants()
	_ = w
}

func (sim *simState) invariants() {
	s, w := sim.s, sim.w
	for i, ch := range sim.waiters {
		if len(ch) > 1 {
			w.violate("reload waiter %d answered %d times", i+1, len(ch))
		}
	}
	if s.phase == phaseDone {
		return
	}
	// Rolling swaps: at most Workers+Surge alive, draining ones included;
	// a swap begun with more (a recycle's, a rolled-back generation's
	// still draining) starts none until they are fewer.
	if s.rolling() && s.next != nil {
		if n := sim.aliveWorkers(); n > s.opts.Workers+s.opts.Surge && n > sim.prevAlive {
			w.violate("%d workers alive during a rolling swap, more than BATON_WORKERS+BATON_SURGE = %d", n, s.opts.Workers+s.opts.Surge)
		}
	}
	// Every slot's worker is one the loop has not reaped, of its
	// generation.
	for _, g := range []*generation{s.current, s.next, s.parked} {
		if g == nil {
			continue
		}
		for i, sl := range g.slots {
			if sl.w != nil && (s.byPID[sl.w.pid] != sl.w || sl.w.gen != g || sl.w.idx != i) {
				w.violate("slot %d of generation %d holds pid %d, which is reaped or not its own", i, g.num, sl.w.pid)
			}
		}
	}
	// A recycle replacement is of the current generation and alive.
	if r := s.replacing; r != nil {
		if r.gen != s.current || r.retiring || s.byPID[r.pid] != r {
			w.violate("recycle replacement pid %d of generation %d left in replacing (current %d, retiring %v, reaped %v)",
				r.pid, r.gen.num, s.current.num, r.retiring, s.byPID[r.pid] != r)
		}
	}
	// A bake never ends before its time.
	if p := sim.prevParked; p != nil && s.parked != p && s.current == sim.prevCurrent && s.phase < phaseStopping && w.now.Before(sim.prevBakeEnds) {
		w.violate("the bake of generation %d (parked %d) ended %v before its time", s.current.num, p.num, sim.prevBakeEnds.Sub(w.now))
	}
	if s.parked != nil && s.parked == s.current {
		w.violate("generation %d is both parked and current", s.current.num)
	}
	if s.phase <= phaseDraining {
		w.checkSteered()
		if w.steer && s.canary == nil {
			for _, l := range w.listeners {
				if l.current != s.current.num && s.next == nil {
					w.violate("steered to generation %d, current is %d", l.current, s.current.num)
				}
			}
		}
	}
}

// settle lets the world run on its own: no new reload, crash or signal;
// workers become ready, drained ones exit, timers fire in order.
func (sim *simState) settle() {
	for i := 0; i < 5000 && sim.s.phase != phaseDone && len(sim.w.viol) == 0; i++ {
		if !sim.step(true) {
			return
		}
	}
	if sim.s.phase == phaseRunning && len(sim.w.viol) == 0 {
		sim.w.violate("the world did not settle in 5000 steps")
	}
}

// quiescent: nothing is pending, so the current generation has its full
// count of serving workers and /readyz says ready.
func (sim *simState) quiescent() {
	s, w := sim.s, sim.w
	w.tracef("settled: current %d, slots %s", s.current.num, slotsString(s.current))
	switch {
	case s.next != nil:
		w.violate("settled with generation %d still starting", s.next.num)
	case s.checking != nil:
		w.violate("settled with a check in progress")
	case s.parked != nil || s.canary != nil:
		w.violate("settled in a bake or a canary")
	case s.replacing != nil:
		w.violate("settled with recycle replacement pid %d in replacing", s.replacing.pid)
	case len(s.leaving) > 0:
		w.violate("settled with generation %d leaving", s.leaving[0].num)
	}
	for i, sl := range s.current.slots {
		if sl.w == nil && !sl.pending && s.opts.Restart == RestartOnFailure {
			continue // a clean exit is not restarted under on-failure
		}
		if sl.w == nil || !sl.w.ready || sl.w.retiring {
			w.violate("settled with slot %d of generation %d not serving (worker %v, restart pending %v)", i, s.current.num, sl.w != nil, sl.pending)
		}
	}
	short := false // a documented limit: under on-failure a clean exit leaves its slot empty
	for _, sl := range s.current.slots {
		short = short || (sl.w == nil && s.opts.Restart == RestartOnFailure)
	}
	if st := s.status(); !short && (!st.Ready || st.Serving != s.opts.Workers) {
		w.violate("settled, and /readyz says ready %v with %d serving of %d", st.Ready, st.Serving, s.opts.Workers)
	}
	for pid, wk := range s.byPID {
		if !wk.retiring && (wk.gen != s.current || wk.gen.slots[wk.idx].w != wk) {
			w.violate("settled with pid %d (generation %d, slot %d, ready %v) alive, not retiring, and not serving in a slot of the current generation", pid, wk.gen.num, wk.idx, wk.ready)
		}
	}
	for i, ch := range sim.waiters {
		if len(ch) != 1 {
			w.violate("settled, and reload waiter %d has %d answers", i+1, len(ch))
		}
	}
}

func slotsString(g *generation) string {
	var b strings.Builder
	for i, sl := range g.slots {
		fmt.Fprintf(&b, " %d:", i)
		if sl.w == nil {
			b.WriteString("empty")
		} else {
			fmt.Fprintf(&b, "pid %d gen %d ready %v retiring %v", sl.w.pid, sl.w.gen.num, sl.w.ready, sl.w.retiring)
		}
		if sl.pending {
			b.WriteString(" (restart pending)")
		}
	}
	return b.String()
}

// finish stops baton with SIGTERM (unless it is stopping already) and
// checks that the shutdown ends, with the documented status.
func (sim *simState) finish() {
	s, w := sim.s, sim.w
	if s.phase == phaseRunning && len(w.viol) == 0 {
		sim.sigterm()
		sim.afterStep()
	}
	for i := 0; i < 20000 && s.phase != phaseDone && len(w.viol) == 0; i++ {
		if !sim.step(true) {
			break
		}
	}
	if len(w.viol) > 0 {
		return
	}
	if s.phase != phaseDone {
		w.violate("shutdown did not end (phase %d, %d workers, check %v)", s.phase, len(s.byPID), s.checking != nil)
		return
	}
	code := s.opts.ExitMap.Apply(max(s.exitCode, 0))
	w.tracef("baton exits %d", code)
	if sim.termUnset && ((code != 0 && !w.shutdownCodes[code]) || (code == 0 && w.mustFail)) {
		w.violate("baton exited %d after SIGTERM; the non-zero exits of workers since were %v", code, w.shutdownCodes)
	}
	for _, p := range w.procs {
		if !p.reaped && (s.opts.PID1 || p.kind == kWorker) {
			w.violate("baton exited with pid %d not reaped", p.pid)
			break
		}
	}
	for i, ch := range sim.waiters {
		if len(ch) != 1 {
			w.violate("baton exited, and reload waiter %d has %d answers", i+1, len(ch))
		}
	}
}

// cleanup ends the loop's goroutines waiting for workers in the shim.
func (sim *simState) cleanup() {
	for _, p := range sim.w.procs {
		if p.inShim {
			p.inShim = false
			close(p.execCh)
			<-sim.s.execs
		}
	}
}
