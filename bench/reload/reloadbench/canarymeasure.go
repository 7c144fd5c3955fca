package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"sort"
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

// Sample is one look at baton's descendants (kB), T seconds after the
// reload was sent (negative: before).
type Sample struct {
	T        float64 `json:"t"`
	N        int     `json:"n"`
	RSS      int64   `json:"rss"`
	PSS      int64   `json:"pss"`
	BatonRSS int64   `json:"baton_rss"`
	BatonPSS int64   `json:"baton_pss"`
}

// Mem is a memory figure of the descendants and of baton itself (kB).
type Mem struct {
	RSS      int64 `json:"rss"`
	PSS      int64 `json:"pss"`
	BatonRSS int64 `json:"baton_rss"`
	BatonPSS int64 `json:"baton_pss"`
}

// Phase counts the requests whose connection began in [From, To).
type Phase struct {
	Name     string  `json:"name"`
	From     float64 `json:"from"`
	To       float64 `json:"to"`
	Requests int     `json:"requests"`
	Old      int     `json:"old"`
	New      int     `json:"new"`
	Failed   int     `json:"failed"`
}

// LoadStat sums up the load of a measurement.
type LoadStat struct {
	Clients  int               `json:"clients"`
	Rate     float64           `json:"rate"`
	Requests int               `json:"requests"`
	Failed   int               `json:"failed"`
	ByKind   map[string]int    `json:"by_kind,omitempty"`
	Examples map[string]string `json:"examples,omitempty"`
	Phases   []Phase           `json:"phases"`
}

// CPU is what a generation's processes used over a window.
type CPU struct {
	NS    int64 `json:"ns"`    // /proc/PID/task/*/schedstat, all threads
	Ticks int64 `json:"ticks"` // utime+stime of /proc/PID/stat (USER_HZ)
	Procs int   `json:"procs"` // processes at the end of the window
}

// BakeCPU is the CPU of both generations between "bake begun" and "bake
// done", read as those lines arrive.
type BakeCPU struct {
	Window    float64 `json:"window"`
	Parked    CPU     `json:"parked"`
	Current   CPU     `json:"current"`
	ParkedReq int     `json:"parked_requests"` // requests the parked generation answered meanwhile
}

// canaryResult is one measurement, written as JSON for the report.
type canaryResult struct {
	Type          string `json:"kind"` // "canary"
	Worker        string `json:"worker"`
	Config        string
	Run           int
	Argv, Env     []string
	Workers       int
	Procs         int
	Error         string  `json:",omitempty"`
	ReloadOutput  string  // what `baton reload` printed
	ReloadCode    int     // its exit status
	Outcome       float64 // s from sending the reload to `baton reload` returning
	NewReady      float64 // ... to the new generation being ready (first canary step or swap complete)
	SwapComplete  float64 // ... to "swap complete"
	LastOldExit   float64 // ... to the old generation's last "worker exited"
	OldGone       float64 // ... to no process of the old generation left in /proc
	TwoGens       float64 // first new "worker started" to last old "worker exited"
	BaselineFrom  float64 // the baseline window is [BaselineFrom, 0)
	Base, Peak    Mem
	AboveRSS      float64 // s with the descendants' RSS above 1.5x the baseline
	AbovePSS      float64
	ExtraPSS      float64 // integral of (PSS - baseline), from the reload until the old generation is gone, MB*s
	Load          LoadStat
	Bake          *BakeCPU `json:",omitempty"`
	Events        []harness.Event
	Samples       []Sample
	OldGenWorkers []int
}

// cpuOf reads, in one pass over /proc, the CPU used so far by every
// process below root whose process group is a worker of generation a or b.
func cpuOf(root int, genOf map[int]int, a, b int) (ofA, ofB map[int][2]int64) {
	ofA, ofB = map[int][2]int64{}, map[int][2]int64{}
	for _, p := range procfs.Descendants(root) {
		var out map[int][2]int64
		switch genOf[p.PGID] {
		case a:
			out = ofA
		case b:
			out = ofB
		default:
			continue
		}
		if ns, ok := procfs.SchedNS(p.PID); ok {
			out[p.PID] = [2]int64{ns, p.Ticks}
		}
	}
	return ofA, ofB
}

// cpuDelta is the CPU used between two reads: a process seen only at the
// end was born meanwhile and counts whole (gunicorn forks its workers
// after READY=1, so after the cutover); one seen only at the start exited
// meanwhile and is lost (none does in a bake).
func cpuDelta(a, b map[int][2]int64) CPU {
	var c CPU
	for pid, y := range b {
		x := a[pid]
		c.NS += y[0] - x[0]
		c.Ticks += y[1] - x[1]
		c.Procs++
	}
	return c
}

func sec(d time.Duration) float64 { return d.Seconds() }

func measureCanary(sp canarySpec, logf func(string, ...any)) (res canaryResult, err error) {
	res = canaryResult{Type: "canary", Worker: sp.Kind, Config: sp.Config, Run: sp.Run, Argv: sp.Argv, Env: sp.Env, Workers: sp.Workers, Procs: sp.Procs}
	res.Load.Clients, res.Load.Rate = sp.Clients, sp.Rate
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
		bakeA     [2]map[int][2]int64 // parked, current
		bake      *BakeCPU
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
			parked, cur := cpuOf(root, genOf, ev.Parked, ev.Gen)
			if ev.Message == "bake begun" {
				bakeStart, bakeA = ev.Seen, [2]map[int][2]int64{parked, cur}
			} else if bakeA[0] != nil {
				bake = &BakeCPU{Window: sec(ev.Seen.Sub(bakeStart)), Parked: cpuDelta(bakeA[0], parked), Current: cpuDelta(bakeA[1], cur)}
			}
		}
	}
	genMap := func() map[int]int {
		hmu.Lock()
		defer hmu.Unlock()
		g := make(map[int]int, len(genOf))
		for k, v := range genOf {
			g[k] = v
		}
		return g
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
		return res, fmt.Errorf("generation 1 never had %d processes (%d): %w", want, len(procfs.Descendants(root)), err)
	}

	// Sampler: every 100 ms, baton's descendants and baton itself.
	type rawSample struct {
		at time.Time
		s  Sample
	}
	var (
		smu     sync.Mutex
		samples []rawSample
	)
	sampStop, sampDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			at := time.Now()
			s := Sample{}
			for _, p := range procfs.Descendants(root) {
				rss, pss, ok := procfs.Rollup(p.PID)
				if !ok {
					continue
				}
				s.N++
				s.RSS += rss
				s.PSS += pss
			}
			s.BatonRSS, s.BatonPSS, _ = procfs.Rollup(root)
			smu.Lock()
			samples = append(samples, rawSample{at, s})
			smu.Unlock()
			select {
			case <-sampStop:
				return
			case <-tick.C:
			}
		}
	}()
	stopSampler := sync.OnceFunc(func() {
		close(sampStop)
		<-sampDone
	})
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
	var (
		outcomeAt time.Time
		rlCode    int
	)
	go func() {
		e := rl.Wait()
		outcomeAt = time.Now()
		var xe *exec.ExitError
		if errors.As(e, &xe) {
			rlCode = xe.ExitCode()
		} else if e != nil {
			rlCode = -1
		}
		close(rlDone)
	}()
	logf("%s/%s run %d: reload sent", sp.Kind, sp.Config, sp.Run)

	ready, err := b.Await(&cur, "the new generation ready", 60*time.Second, func(ev harness.Event) bool {
		return ev.Gen == 2 && (ev.Message == "swap complete" || ev.Message == "canary step")
	})
	if err != nil {
		return res, err
	}
	if gateHeld {
		gateHeld = false // the timer releases it
		time.AfterFunc(sp.Stagger, sp.Gate.Unlock)
	}

	// Every worker of generation 1 exits.
	for _, ev := range b.Events() {
		if ev.Message == "worker started" && ev.Gen == 1 {
			res.OldGenWorkers = append(res.OldGenWorkers, ev.PID)
		}
	}
	for range res.OldGenWorkers {
		if _, err = b.Await(&cur, "the old generation's \"worker exited\"", sp.Expect+30*time.Second,
			harness.Message("worker exited", 1)); err != nil {
			return res, err
		}
	}
	select {
	case <-rlDone:
	case <-time.After(30 * time.Second):
		return res, fmt.Errorf("baton reload had not returned 30 s after the old generation left")
	}
	res.ReloadOutput, res.ReloadCode = strings.TrimSpace(out.String()), rlCode
	g := genMap()
	if err = harness.PollUntil(10*time.Second, func() bool {
		for _, p := range procfs.Descendants(root) {
			if g[p.PGID] == 1 {
				return false
			}
		}
		return true
	}); err != nil {
		return res, fmt.Errorf("processes of generation 1 still there: %w", err)
	}
	oldGone := time.Now()
	time.Sleep(sp.Tail)
	stopLoad()
	stopSampler()

	// --- analysis ---
	rel := func(t time.Time) float64 { return sec(t.Sub(t0)) }
	res.Outcome = rel(outcomeAt)
	res.OldGone = rel(oldGone)
	res.BaselineFrom = rel(baselineFrom)
	firstNewStart, lastOldExit := -1.0, -1.0
	res.Events = b.Events()
	for _, ev := range res.Events {
		t := rel(ev.Seen)
		switch {
		case ev.Message == "worker started" && ev.Gen == 2 && firstNewStart < 0:
			firstNewStart = t
		case ev.Message == "worker exited" && ev.Gen == 1:
			lastOldExit = t
		case ev.Message == "swap complete" && ev.Gen == 2:
			res.SwapComplete = t
		}
	}
	res.NewReady = rel(ready.Seen)
	res.LastOldExit = lastOldExit
	res.TwoGens = lastOldExit - firstNewStart

	smu.Lock()
	for _, rs := range samples {
		rs.s.T = rel(rs.at)
		res.Samples = append(res.Samples, rs.s)
	}
	smu.Unlock()
	memStats(&res)

	loadStats(&res, reqs, t0)
	hmu.Lock()
	res.Bake = bake
	hmu.Unlock()
	if res.Bake != nil {
		for _, p := range res.Load.Phases {
			if p.Name == "bake" {
				res.Bake.ParkedReq = p.Old
			}
		}
	}
	if res.ReloadCode != 0 {
		return res, fmt.Errorf("baton reload exited %d: %s", res.ReloadCode, res.ReloadOutput)
	}
	return res, nil
}

// memStats computes the baseline (median over the baseline window), the
// peak, and how long the total stayed above 1.5x the baseline.
func memStats(res *canaryResult) {
	var base []Sample
	var all []Sample
	for _, s := range res.Samples {
		if s.T < res.BaselineFrom {
			continue
		}
		all = append(all, s)
		if s.T < 0 {
			base = append(base, s)
		}
	}
	if len(base) == 0 {
		return
	}
	med := func(f func(Sample) int64) int64 {
		return int64(stats.MedianOf(base, func(s Sample) float64 { return float64(f(s)) }))
	}
	res.Base = Mem{med(func(s Sample) int64 { return s.RSS }), med(func(s Sample) int64 { return s.PSS }),
		med(func(s Sample) int64 { return s.BatonRSS }), med(func(s Sample) int64 { return s.BatonPSS })}
	for i, s := range all {
		res.Peak.RSS = max(res.Peak.RSS, s.RSS)
		res.Peak.PSS = max(res.Peak.PSS, s.PSS)
		res.Peak.BatonRSS = max(res.Peak.BatonRSS, s.BatonRSS)
		res.Peak.BatonPSS = max(res.Peak.BatonPSS, s.BatonPSS)
		dt := 0.1
		if i+1 < len(all) {
			dt = all[i+1].T - s.T
		}
		if float64(s.RSS) > 1.5*float64(res.Base.RSS) {
			res.AboveRSS += dt
		}
		if float64(s.PSS) > 1.5*float64(res.Base.PSS) {
			res.AbovePSS += dt
		}
		if s.T >= 0 && s.T <= res.OldGone && s.PSS > res.Base.PSS {
			res.ExtraPSS += dt * float64(s.PSS-res.Base.PSS) / 1024
		}
	}
}

// loadStats counts the requests, their failures, and which generation
// answered in each phase of the reload (by when the connection began).
func loadStats(res *canaryResult, reqs []request, t0 time.Time) {
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].at.Before(reqs[j].at) })
	ls := &res.Load
	ls.ByKind, ls.Examples = map[string]int{}, map[string]string{}
	// Phase boundaries from baton's events.
	type mark struct {
		t    float64
		name string
	}
	marks := []mark{{res.BaselineFrom, "before the reload"}, {0, "new generation starting"}}
	for _, ev := range res.Events {
		t := sec(ev.Seen.Sub(t0))
		switch {
		case ev.Message == "canary step" && ev.Gen == 2:
			marks = append(marks, mark{t, fmt.Sprintf("canary %d%%", ev.Percent)})
		case ev.Message == "swap complete" && ev.Gen == 2:
			marks = append(marks, mark{t, "cutover → old gone"})
		case ev.Message == "bake begun" && ev.Gen == 2:
			// "swap complete" and "bake begun" are one moment: the bake is
			// that phase.
			marks[len(marks)-1].name = "bake"
		case ev.Message == "bake done" && ev.Gen == 2:
			marks = append(marks, mark{t, "bake done → old gone"})
		}
	}
	marks = append(marks, mark{res.OldGone, "after"})
	for i, m := range marks {
		to := 1e9
		if i+1 < len(marks) {
			to = marks[i+1].t
		}
		ls.Phases = append(ls.Phases, Phase{Name: m.name, From: m.t, To: to})
	}
	for _, r := range reqs {
		t := sec(r.at.Sub(t0))
		if t < res.BaselineFrom {
			continue // warm-up
		}
		ls.Requests++
		var ph *Phase
		for i := range ls.Phases {
			if t >= ls.Phases[i].From && t < ls.Phases[i].To {
				ph = &ls.Phases[i]
			}
		}
		if ph != nil {
			ph.Requests++
		}
		if r.fail != "" {
			ls.Failed++
			ls.ByKind[r.fail]++
			if ls.Examples[r.fail] == "" {
				ls.Examples[r.fail] = r.err
			}
			if ph != nil {
				ph.Failed++
			}
			continue
		}
		if ph != nil {
			switch r.gen {
			case 1:
				ph.Old++
			case 2:
				ph.New++
			}
		}
	}
}
