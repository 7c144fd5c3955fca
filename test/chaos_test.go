package test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Chaos: what the phase injects, and for how long.
const (
	chaosWorkers  = 3
	chaosDuration = 5 * time.Second
	chaosTail     = 1500 * time.Millisecond // the end of the phase, without reloads
	chaosOrphans  = 500                     // grandchildren per orphan storm
	chaosSignals  = 100                     // forwarded signals per burst
	cleanReloads  = 10
)

// TestChaos: under load, with reloads all along, baton's workers are
// SIGKILLed at random, orphan storms land on it and bursts of signals for
// it to forward arrive, for 5 s. Requests may fail then. Afterwards, with
// no more faults, baton must recover on its own (every killed worker of the
// serving generation restarted, nothing left half-swapped), then reload
// under load with 0 failed requests and end with exactly one generation of
// N workers, no zombie in its namespace, every orphan reaped, and the
// descriptors it held after start-up, no more.
func TestChaos(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the orphan storms enter baton's PID namespace with setns(2), which needs root")
	}
	py := python(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	b, addr := serve(t, []string{
		"BATON_WORKERS=" + strconv.Itoa(chaosWorkers), "BATON_READY=notify",
		// Every kill of a serving worker is a restart: far more than the
		// default 5 a minute.
		"BATON_RESTART_LIMIT=10000/60s",
		// "orphan reaped" and "worker left the shim" are debug events.
		"BATON_LOG_LEVEL=debug",
	}, batonBin, "hello")
	waitPool(t, b, "start-up")
	fdsBefore := batonFDs(t, b)
	t.Logf("baton holds %d descriptors after start-up", len(fdsBefore))
	settle(t, b, chaosWorkers)

	// --- chaos ---------------------------------------------------------
	stopLoad := load(t, addr, 16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Every way out of the phase, t.Fatal's included, ends the injectors
	// first: none may signal a pid after the test is done with it.
	endChaos := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer endChaos()
	var kills, storms, bursts, hups atomic.Int64
	errs := make(chan error, 4) // one per injector at most
	// pace waits a random time in [lo, hi): it spaces the injections out,
	// it is not a wait for any event. It reports false once the phase is
	// over.
	pace := func(rng *rand.Rand, lo, hi time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(lo + time.Duration(rng.Int64N(int64(hi-lo)))):
			return true
		}
	}
	injectors := uint64(0)
	chaos := func(name string, lo, hi time.Duration, inject func(rng *rand.Rand) error) {
		injectors++
		rng := rand.New(rand.NewPCG(seed, injectors))
		wg.Go(func() {
			for pace(rng, lo, hi) {
				if err := inject(rng); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
			}
		})
	}
	// Reloads stop before the rest: the kills of the phase's tail land on
	// one serving generation that no swap replaces, so a restart missed
	// there shows at the end.
	reloadsUntil := time.Now().Add(chaosDuration - chaosTail)
	chaos("reloads", 20*time.Millisecond, 250*time.Millisecond, func(*rand.Rand) error {
		if time.Now().After(reloadsUntil) {
			return nil
		}
		hups.Add(1)
		return unix.Kill(b.PID(), unix.SIGHUP)
	})
	chaos("kills", 50*time.Millisecond, 300*time.Millisecond, func(rng *rand.Rand) error {
		// Every other kill aims at the serving generation, so that
		// restarts (not only aborted and shortened swaps) are exercised.
		if killWorker(b, rng, kills.Load()%2 == 0) {
			kills.Add(1)
		}
		return nil
	})
	chaos("orphans", 100*time.Millisecond, 600*time.Millisecond, func(*rand.Rand) error {
		storms.Add(1)
		return runInPIDNS(b.PID(), py, testdata("orphans.py"), strconv.Itoa(chaosOrphans))
	})
	chaos("signals", 100*time.Millisecond, 400*time.Millisecond, func(rng *rand.Rand) error {
		bursts.Add(1)
		for range chaosSignals {
			sig := unix.SIGUSR1
			if rng.IntN(2) == 0 {
				sig = unix.SIGWINCH
			}
			if err := unix.Kill(b.PID(), sig); err != nil {
				return err
			}
		}
		return nil
	})
	select {
	case err := <-errs:
		t.Fatal(err)
	case <-b.Exited():
		t.Fatalf("baton exited during the chaos")
	case <-time.After(chaosDuration): // the length of the phase, not a wait for an event
	}
	endChaos()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	r := stopLoad()
	t.Logf("chaos: %d reloads sent, %d workers killed, %d orphan storms of %d, %d bursts of %d signals; "+
		"%d requests, %d failed %v; %d swaps complete, %d aborted, %d restarts",
		hups.Load(), kills.Load(), storms.Load(), chaosOrphans, bursts.Load(), chaosSignals,
		r.Requests, r.Failures, r.ByKind, b.Count("swap complete"), b.Count("swap aborted"), b.Count("worker restarting"))
	if kills.Load() == 0 || b.Count("worker restarting") == 0 {
		t.Fatalf("%d kills, %d restarts: the chaos did not reach the serving generation", kills.Load(), b.Count("worker restarting"))
	}

	// --- recovery: on its own, with nothing more sent ------------------
	// Every orphan is reaped (the last storm's may still run as the phase
	// ends, baton's children until then): the storms' own processes
	// (python, the middle one) are not baton's, so each storm leaves it
	// exactly chaosOrphans. Every serving worker killed is restarted, a
	// swap in flight ends, and the retired drain: N ready workers of one
	// generation. A missed restart stays at N-1 until the deadline.
	want := int(storms.Load()) * chaosOrphans
	b.Err.waitFor(t, fmt.Sprintf("%d orphans reaped (%d storms of %d)", want, storms.Load(), chaosOrphans), deadline,
		func(_ []string, evs []Event) bool {
			n := 0
			for _, ev := range evs {
				if ev.Msg() == "orphan reaped" {
					n++
				}
			}
			return n >= want
		})
	waitPool(t, b, "recovery")
	settle(t, b, chaosWorkers)

	// --- clean phase: reloads under load, nothing may fail -------------
	stopLoad = load(t, addr, 16)
	first := poolOf(b.Events()).maxGen + 1
	for gen := first; gen < first+cleanReloads; gen++ {
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", gen)
	}
	last := first + cleanReloads - 1
	waitGenerationServes(t, addr, strconv.Itoa(last))
	r = stopLoad()
	checkNoFailures(t, r)
	for gen := first; gen <= last; gen++ {
		if r.Generations[strconv.Itoa(gen)] == 0 {
			t.Errorf("generation %d never answered", gen)
		}
	}
	waitPool(t, b, "the clean phase")
	fdsAfter := batonFDs(t, b)
	settle(t, b, chaosWorkers)
	if gens := poolOf(b.Events()).gens(); !slices.Equal(gens, []int{last}) {
		t.Fatalf("live workers of generations %v, want only %d", gens, last)
	}

	// --- what is left -------------------------------------------------
	if z := nsZombies(b.PID()); len(z) != 0 {
		t.Fatalf("zombies in baton's namespace (host pids): %v", z)
	}
	if len(fdsAfter) != len(fdsBefore) {
		t.Fatalf("baton holds %d descriptors, %d after start-up:\nnow:    %s\nbefore: %s",
			len(fdsAfter), len(fdsBefore), strings.Join(fdsAfter, " "), strings.Join(fdsBefore, " "))
	}
	b.Signal(unix.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d after TERM, want 0", code)
	}
}

// pool is baton's pool as its log tells it: live workers (pid in baton's
// namespace) with their generation and readiness, retiring ones, and swaps
// begun but not ended.
type pool struct {
	live     map[int]*poolWorker
	retiring map[int]bool
	pending  int
	current  int // the generation of the last "swap complete" (1 before any)
	maxGen   int // the highest generation number used so far
}

type poolWorker struct {
	gen   int
	ready bool
	// exec'd: baton has seen it leave the shim, and closed the pipe it
	// watched that by (a debug event)
	execd bool
}

func poolOf(evs []Event) pool {
	p := pool{live: map[int]*poolWorker{}, retiring: map[int]bool{}, current: 1}
	pending := map[int]bool{}
	for _, ev := range evs {
		pid, gen := ev.Int("pid"), ev.Int("gen")
		p.maxGen = max(p.maxGen, gen)
		switch ev.Msg() {
		case "worker started":
			p.live[pid] = &poolWorker{gen: gen}
		case "worker ready":
			if w := p.live[pid]; w != nil {
				w.ready = true
			}
		case "worker left the shim":
			if w := p.live[pid]; w != nil {
				w.execd = true
			}
		case "worker retiring":
			p.retiring[pid] = true
		case "worker exited":
			delete(p.live, pid)
			delete(p.retiring, pid)
		case "swap begun":
			pending[gen] = true
		case "swap complete":
			p.current = gen
			delete(pending, gen)
		case "swap aborted":
			delete(pending, gen)
		}
	}
	p.pending = len(pending)
	return p
}

// allUp reports whether every live worker is ready and out of the shim.
func (p pool) allUp() bool {
	for _, w := range p.live {
		if !w.ready || !w.execd {
			return false
		}
	}
	return true
}

// gens lists the generations of the live workers, sorted.
func (p pool) gens() []int {
	var out []int
	for _, w := range p.live {
		if !slices.Contains(out, w.gen) {
			out = append(out, w.gen)
		}
	}
	slices.Sort(out)
	return out
}

// killWorker SIGKILLs one of baton's live workers picked at random (of the
// serving generation when current is set) and reports whether it sent the
// signal. It goes through a pidfd: a host pid freed and reused by then can
// never be hit, only baton's own child.
func killWorker(b *Baton, rng *rand.Rand, current bool) bool {
	p := poolOf(b.Events())
	var targets []int // host pids
	for _, host := range childrenOf(b.PID()) {
		ns, _ := nsPIDs(host)
		if w := p.live[ns]; w != nil && (!current || (w.gen == p.current && !p.retiring[ns])) {
			targets = append(targets, host)
		}
	}
	if len(targets) == 0 {
		return false
	}
	host := targets[rng.IntN(len(targets))]
	fd, err := unix.PidfdOpen(host, 0)
	if err != nil {
		return false // gone already
	}
	defer unix.Close(fd)
	// The pidfd names whatever had the pid when it was opened: if that is
	// still baton's child, it is the worker (or, reused since, a process of
	// baton's namespace, never anything outside it).
	if _, ppid := nsPIDs(host); ppid != b.PID() {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}

// nsPIDs returns a process's pid in its innermost PID namespace (the last
// NSpid field of /proc/PID/status) and its parent's host pid.
func nsPIDs(host int) (ns, ppid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", host))
	if err != nil {
		return -1, -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		switch {
		case k == "NSpid" && len(f) > 0:
			ns, _ = strconv.Atoi(f[len(f)-1])
		case k == "PPid" && len(f) > 0:
			ppid, _ = strconv.Atoi(f[0])
		}
	}
	return ns, ppid
}

// runInPIDNS runs argv to completion as a process of the PID namespace
// that pid is in, as docker exec does: its parent is this test, but its
// orphans go to the namespace's init. setns(CLONE_NEWPID) moves only the
// calling thread's future children, so the goroutine keeps its thread
// locked and exits with it: the runtime then ends the thread, and no other
// goroutine ever forks from it.
func runInPIDNS(pid int, argv ...string) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWPID); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns.Name(), err)
			return
		}
		var stderr bytes.Buffer
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			done <- fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, stderr.String())
			return
		}
		done <- nil
	}()
	return <-done
}

// nsZombies lists the zombies (host pids) in the PID namespace of baton,
// whoever their parent.
func nsZombies(pid int) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range processes() {
		if p.state != "Z" {
			continue
		}
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); l == ns {
			out = append(out, p.pid)
		}
	}
	return out
}

// waitPool waits, on baton's log, until it has exactly chaosWorkers live
// workers, all ready, out of the shim and of one generation, with no swap
// pending and none retiring. Then baton holds no descriptor for a moment
// only: a worker's exec pipe is closed before "worker left the shim" is
// logged, and its READY=1 may come first.
func waitPool(t *testing.T, b *Baton, after string) {
	t.Helper()
	b.Err.waitFor(t, fmt.Sprintf("%d ready workers of one generation after %s", chaosWorkers, after), deadline,
		func(_ []string, evs []Event) bool {
			p := poolOf(evs)
			return p.pending == 0 && len(p.retiring) == 0 && len(p.live) == chaosWorkers && p.allUp() && len(p.gens()) == 1
		})
}

// batonFDs lists baton's descriptors as "fd=target". Take it before
// settle, whose status request has baton open a connection for a moment.
func batonFDs(t *testing.T, b *Baton) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", b.PID())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(dir + "/" + e.Name())
		out = append(out, e.Name()+"="+target)
	}
	return out
}
