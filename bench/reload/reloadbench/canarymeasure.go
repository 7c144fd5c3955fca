package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-init/baton/bench/internal/harness"
	"github.com/baton-init/baton/bench/internal/procfs"
	"github.com/baton-init/baton/bench/internal/stats"
)

// canarySpec is one measurement: a worker kind under one reload configuration.
type canarySpec struct {
	Kind, Config string
	Run          int
	Argv         []string
	Env          []string // baton's settings (the rest of the environment is cleaned of BATON_*)
	Workers      int      // BATON_WORKERS
	Procs        int      // processes per generation (gunicorn: arbiter + its workers)
	Addr         string
	Baton        string // the baton binary, for `baton reload`

	Warmup, Baseline, Tail, Stagger time.Duration
	Clients                         int
	Rate                            float64
	// Gate, when set, is held from sending the reload until the new
	// generation is ready, plus Stagger: two measurements running side by
	// side never start (or, since every later step is on a timer, switch
	// or retire) generations at the same moment.
	Gate *sync.Mutex
	// Expect bounds the whole reload (canary steps and bake included).
	Expect time.Duration
	Raw    string // file for baton's raw output ("" for none)
}

// Mem is the memory of baton's descendants and of baton itself (kB).
type Mem struct{ RSS, PSS, BatonRSS int64 }

// Phase counts the answers to the requests whose connection began in
// [From, To) s after the reload, by generation.
type Phase struct {
	Name     string
	From, To float64
	Old, New int
}

// CPU is what a generation's processes used over a window
// (/proc/PID/task/*/schedstat, all threads; Procs at the end of it).
type CPU struct {
	NS    int64
	Procs int
}

// BakeCPU is the CPU of both generations between "bake begun" and "bake
// done", read as those lines arrive, and the requests the parked one
// answered meanwhile.
type BakeCPU struct {
	Window          float64
	Parked, Current CPU
	ParkedReq       int
}

// canaryResult is one measurement, written as JSON for the report. Times
// are in seconds from sending the reload.
type canaryResult struct {
	Type           string `json:"kind"` // "canary"
	Worker, Config string
	Run            int
	Error          string `json:",omitempty"`
	ReloadOutput   string // what `baton reload` printed
	ReloadCode     int    // its exit status
	Outcome        float64
	LastOldExit    float64 // the old generation's last "worker exited"
	TwoGens        float64 // first new "worker started" to last old "worker exited"
	Base, Peak     Mem     // baseline: median over the second before the reload
	Requests       int
	Failed         int
	ByKind         map[string]int
	Phases         []Phase
	Bake           *BakeCPU `json:",omitempty"`
}

// cpuOf reads, in one pass over /proc, the CPU used so far by every
// process below root whose process group is a worker of generation gen.
func cpuOf(root int, genOf map[int]int, gen int) map[int]int64 {
	out := map[int]int64{}
	for _, p := range procfs.Descendants(root) {
		if ns, ok := procfs.SchedNS(p.PID); ok && genOf[p.PGID] == gen {
			out[p.PID] = ns
		}
	}
	return out
}

// cpuDelta is the CPU used between two reads: a process seen only at the
// end was born meanwhile and counts whole (gunicorn forks its workers
// after READY=1, so after the cutover); one seen only at the start exited
// meanwhile and is lost (none does in a bake).
func cpuDelta(a, b map[int]int64) CPU {
	c := CPU{Procs: len(b)}
	for pid, y := range b {
		c.NS += y - a[pid]
	}
	return c
}

func measureCanary(sp canarySpec, logf func(string, ...any)) (res canaryResult, err error) {
	res = canaryResult{Type: "canary", Worker: sp.Kind, Config: sp.Config, Run: sp.Run, ByKind: map[string]int{}}
	defer func() {
		if err != nil {
			res.Error = err.Error()
		}
	}()

	// genOf maps a worker's pid (its process group) to its generation,
	// kept by the hook from "worker started"; the CPU of both
	// generations is read when "bake begun" and "bake done" arrive.
	var (
		hmu       sync.Mutex
		genOf     = map[int]int{}
		bakeStart time.Time
		bakeA     [2]map[int]int64 // parked, current
		root      int
	)
	rootSet := make(chan struct{})
	hook := func(ev harness.Event) {
		hmu.Lock()
		defer hmu.Unlock()
		switch ev.Message {
		case "worker started":
			genOf[ev.PID] = ev.Gen
		case "bake begun", "bake done":
			<-rootSet
			parked, cur := cpuOf(root, genOf, ev.Parked), cpuOf(root, genOf, ev.Gen)
			if ev.Message == "bake begun" {
				bakeStart, bakeA = ev.Seen, [2]map[int]int64{parked, cur}
			} else if bakeA[0] != nil {
				res.Bake = &BakeCPU{Window: ev.Seen.Sub(bakeStart).Seconds(), Parked: cpuDelta(bakeA[0], parked), Current: cpuDelta(bakeA[1], cur)}
			}
		}
	}
	b, err := harness.Start(sp.Argv, harness.CleanEnv(sp.Env...), harness.Options{Raw: sp.Raw, Hook: hook})
	if err != nil {
		return res, err
	}
	root = b.PID()
	close(rootSet)
	defer func() {
		if e := b.Stop(15 * time.Second); e != nil && err == nil {
			err = e
		}
	}()
	cur := 0
	if _, err = b.Await(&cur, `"generation ready" of generation 1`, 60*time.Second, harness.Message("generation ready", 1)); err != nil {
		return res, err
	}
	// gunicorn sends READY=1 before it forks its workers: the baseline
	// starts once the whole generation exists.
	want := sp.Workers * sp.Procs
	if err = harness.PollUntil(15*time.Second, func() bool { return len(procfs.Descendants(root)) >= want }); err != nil {
		return res, fmt.Errorf("generation 1 never had %d processes: %w", want, err)
	}

	// Sampler: every 100 ms, baton's descendants and baton itself.
	type sample struct {
		at time.Time
		m  Mem
	}
	var samples []sample
	sampStop, sampDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampDone)
		for tick := time.NewTicker(100 * time.Millisecond); ; {
			s := sample{at: time.Now()}
			for _, p := range procfs.Descendants(root) {
				if rss, pss, ok := procfs.Rollup(p.PID); ok {
					s.m.RSS, s.m.PSS = s.m.RSS+rss, s.m.PSS+pss
				}
			}
			s.m.BatonRSS, _, _ = procfs.Rollup(root)
			samples = append(samples, s)
			select {
			case <-sampStop:
				tick.Stop()
				return
			case <-tick.C:
			}
		}
	}()
	stopSampler := sync.OnceFunc(func() { close(sampStop); <-sampDone })
	defer stopSampler()
	ld := startLoad(sp.Addr, sp.Clients, sp.Rate)
	var reqs []request
	stopLoad := sync.OnceFunc(func() { reqs = ld.finish() })
	defer stopLoad()

	time.Sleep(sp.Warmup)
	baselineFrom := time.Now()
	time.Sleep(sp.Baseline)

	// The reload. With a gate, it waits its turn; the gate is released
	// Stagger after the new generation is ready, or on an early return.
	gateHeld := sp.Gate != nil
	if gateHeld {
		sp.Gate.Lock()
	}
	defer func() {
		if gateHeld {
			sp.Gate.Unlock()
		}
	}()
	var out bytes.Buffer
	rl := exec.Command(sp.Baton, "reload", "--pid", strconv.Itoa(root), "--timeout", (sp.Expect + time.Minute).String())
	rl.Stdout, rl.Stderr = &out, &out
	t0 := time.Now()
	if err = rl.Start(); err != nil {
		return res, fmt.Errorf("baton reload: %w", err)
	}
	rlDone := make(chan struct{})
	var outcomeAt time.Time
	go func() {
		e := rl.Wait()
		outcomeAt = time.Now()
		var xe *exec.ExitError
		if errors.As(e, &xe) {
			res.ReloadCode = xe.ExitCode()
		} else if e != nil {
			res.ReloadCode = -1
		}
		close(rlDone)
	}()
	logf("%s/%s run %d: reload sent", sp.Kind, sp.Config, sp.Run)
	if _, err = b.Await(&cur, "the new generation ready", 60*time.Second, func(ev harness.Event) bool {
		return ev.Gen == 2 && (ev.Message == "swap complete" || ev.Message == "canary step")
	}); err != nil {
		return res, err
	}
	if gateHeld {
		gateHeld = false // the timer releases it
		time.AfterFunc(sp.Stagger, sp.Gate.Unlock)
	}
	// Every worker of generation 1 exits.
	for _, ev := range b.Events() {
		if ev.Message == "worker started" && ev.Gen == 1 {
			if _, err = b.Await(&cur, "the old generation's \"worker exited\"", sp.Expect+30*time.Second,
				harness.Message("worker exited", 1)); err != nil {
				return res, err
			}
		}
	}
	select {
	case <-rlDone:
	case <-time.After(30 * time.Second):
		return res, fmt.Errorf("baton reload had not returned 30 s after the old generation left")
	}
	res.ReloadOutput = strings.TrimSpace(out.String())
	if err = harness.PollUntil(10*time.Second, func() bool {
		hmu.Lock()
		defer hmu.Unlock()
		for _, p := range procfs.Descendants(root) {
			if genOf[p.PGID] == 1 {
				return false
			}
		}
		return true
	}); err != nil {
		return res, fmt.Errorf("processes of generation 1 still there: %w", err)
	}
	rel := func(t time.Time) float64 { return t.Sub(t0).Seconds() }
	oldGone := rel(time.Now())
	time.Sleep(sp.Tail)
	stopLoad()
	stopSampler()

	// --- analysis ---
	res.Outcome = rel(outcomeAt)
	firstNewStart := -1.0
	marks := []Phase{{Name: "before the reload", From: rel(baselineFrom)}, {Name: "new generation starting"}}
	for _, ev := range b.Events() {
		t := rel(ev.Seen)
		switch {
		case ev.Message == "worker started" && ev.Gen == 2 && firstNewStart < 0:
			firstNewStart = t
		case ev.Message == "worker exited" && ev.Gen == 1:
			res.LastOldExit = t
		case ev.Message == "canary step" && ev.Gen == 2:
			marks = append(marks, Phase{Name: fmt.Sprintf("canary %d%%", ev.Percent), From: t})
		case ev.Message == "swap complete" && ev.Gen == 2:
			marks = append(marks, Phase{Name: "cutover → old gone", From: t})
		case ev.Message == "bake begun" && ev.Gen == 2:
			// "swap complete" and "bake begun" are one moment: the bake is
			// that phase.
			marks[len(marks)-1].Name = "bake"
		case ev.Message == "bake done" && ev.Gen == 2:
			marks = append(marks, Phase{Name: "bake done → old gone", From: t})
		}
	}
	res.TwoGens = res.LastOldExit - firstNewStart
	res.Phases = append(marks, Phase{Name: "after", From: oldGone, To: 1e9})
	for i := range len(res.Phases) - 1 {
		res.Phases[i].To = res.Phases[i+1].From
	}

	// Memory: the baseline is the median over the baseline window, the
	// peak the maximum from then on.
	var base []Mem
	for _, s := range samples {
		if t := rel(s.at); t >= res.Phases[0].From {
			if t < 0 {
				base = append(base, s.m)
			}
			res.Peak = Mem{max(res.Peak.RSS, s.m.RSS), max(res.Peak.PSS, s.m.PSS), max(res.Peak.BatonRSS, s.m.BatonRSS)}
		}
	}
	med := func(f func(Mem) int64) int64 {
		return int64(stats.MedianOf(base, func(m Mem) float64 { return float64(f(m)) }))
	}
	if len(base) > 0 {
		res.Base = Mem{med(func(m Mem) int64 { return m.RSS }), med(func(m Mem) int64 { return m.PSS }), med(func(m Mem) int64 { return m.BatonRSS })}
	}

	// The load: failures, and which generation answered in each phase
	// (by when the connection began).
	for _, r := range reqs {
		t := rel(r.at)
		if t < res.Phases[0].From {
			continue // warm-up
		}
		res.Requests++
		if r.fail != "" {
			res.Failed++
			res.ByKind[r.fail]++
			continue
		}
		for i := range res.Phases {
			if ph := &res.Phases[i]; t >= ph.From && t < ph.To {
				ph.Old += btoi(r.gen == 1)
				ph.New += btoi(r.gen == 2)
			}
		}
	}
	hmu.Lock()
	defer hmu.Unlock()
	for _, p := range res.Phases {
		if p.Name == "bake" && res.Bake != nil {
			res.Bake.ParkedReq = p.Old
		}
	}
	if res.ReloadCode != 0 {
		return res, fmt.Errorf("baton reload exited %d: %s", res.ReloadCode, res.ReloadOutput)
	}
	return res, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
