package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/bench/internal/harness"
	"github.com/baton-init/baton/bench/internal/stats"
	"github.com/baton-init/baton/demo"
	"golang.org/x/sys/unix"
)

// runResult is what one run of one design produced (one JSON file).
type runResult struct {
	Kind       string  `json:"kind"` // "reloads"
	Design     string  `json:"design"`
	Label      string  `json:"label"`
	Run        int     `json:"run"`
	IntervalMs float64 `json:"interval_ms"`       // 0: back-to-back
	Control    bool    `json:"control,omitempty"` // no SIGHUP sent: the noise floor
	Reloads    int     `json:"reloads"`           // asked for
	Swaps      int     `json:"swaps"`             // completed
	Error      string  `json:"error,omitempty"`

	Requests     int64            `json:"requests"`
	Failures     int64            `json:"failures"`
	ByKind       map[string]int64 `json:"by_kind"`
	Reused       int64            `json:"reused_failures"` // failures on a reused keep-alive connection
	GensAnswered int              `json:"gens_answered"`   // generations that answered at least one request
	GensTotal    int              `json:"gens_total"`      // generations started (1 + swaps)

	ReloadSpanS float64 `json:"reload_span_s"` // first SIGHUP to the end of the reload window
	BaselineP99 float64 `json:"baseline_p99_ms"`
	ReloadP50   float64 `json:"reload_p50_ms"`
	ReloadP99   float64 `json:"reload_p99_ms"`
	BaselineRPS float64 `json:"baseline_rps"` // requests started per second in the window
	ReloadRPS   float64 `json:"reload_rps"`

	// Per swap: the server's own SIGHUP-to-ready ("swap complete" elapsed),
	// SIGHUP-to-"swap complete" as seen by this driver, the boot time of the
	// worker whose READY=1 completed the generation ("worker ready" elapsed,
	// measured from its start), and the difference.
	SwapMs        []float64 `json:"swap_ms"`
	SeenMs        []float64 `json:"seen_ms"`
	WorkerReadyMs []float64 `json:"worker_ready_ms,omitempty"`
	OverheadMs    []float64 `json:"overhead_ms,omitempty"`
}

// plotData is the latency-over-time series of one run, for plot.py.
type plotData struct {
	Label    string     `json:"label"`
	BucketMs float64    `json:"bucket_ms"`
	T        []float64  `json:"t"` // bucket start, s since the load began
	P50      []float64  `json:"p50_ms"`
	P99      []float64  `json:"p99_ms"`
	Max      []float64  `json:"max_ms"`
	N        []int      `json:"n"`
	FailT    []float64  `json:"fail_t"`   // s, one per failed request
	ReloadT  []float64  `json:"reload_t"` // s, SIGHUPs
	Baseline [2]float64 `json:"baseline"`
	Window   [2]float64 `json:"window"`
}

type reloadOpts struct {
	design, label                    string
	run                              int
	baton, node, seed, reuseport     string
	express                          string
	workers, reloads, clients        int
	keepAlive                        float64
	interval, warmup, baseline, tail time.Duration
	timeout, swapTimeout, maxTime    time.Duration
	out, plot                        string
	verbose, control                 bool
}

func cmdReloads(args []string) error {
	var o reloadOpts
	fs := flag.NewFlagSet("reloads", flag.ContinueOnError)
	fs.StringVar(&o.design, "design", "", "baton, steer, baton-naive, steer-naive, express, seed or reuseport")
	fs.StringVar(&o.label, "label", "", "name in the report (default: the design, plus the cadence)")
	fs.IntVar(&o.run, "run", 1, "run number (for the report)")
	fs.StringVar(&o.baton, "baton", "", "the baton binary")
	fs.StringVar(&o.node, "node", "node", "the node binary (seed)")
	fs.StringVar(&o.seed, "seed", "", "seed/master.js")
	fs.StringVar(&o.reuseport, "reuseport", "", "the reuseport binary")
	fs.StringVar(&o.express, "express", "", "the unchanged Express app (express design)")
	fs.IntVar(&o.workers, "workers", 2, "workers per generation")
	fs.IntVar(&o.reloads, "reloads", 100, "reloads (SIGHUP)")
	fs.IntVar(&o.clients, "clients", 64, "concurrent clients")
	fs.Float64Var(&o.keepAlive, "keepalive", 0.5, "fraction of clients using keep-alive")
	fs.DurationVar(&o.interval, "interval", 200*time.Millisecond, "SIGHUP every interval, and never before the previous swap completed; 0: back-to-back")
	fs.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "load before the baseline window")
	fs.DurationVar(&o.baseline, "baseline", 1500*time.Millisecond, "no-reload baseline window")
	fs.DurationVar(&o.tail, "tail", time.Second, "load after the last swap completed (covers the last drain)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "per-request timeout")
	fs.DurationVar(&o.swapTimeout, "swap-timeout", 15*time.Second, "wait for one swap (or the first generation)")
	fs.DurationVar(&o.maxTime, "max-time", 90*time.Second, "stop sending reloads after this long (a design whose swaps are slow then does fewer)")
	fs.StringVar(&o.out, "out", "", "result JSON file")
	fs.StringVar(&o.plot, "plot", "", "also write the latency-over-time series here (JSON)")
	fs.BoolVar(&o.verbose, "v", false, "forward the server's output to stderr")
	fs.BoolVar(&o.control, "control", false, "control run: the same timeline, but no SIGHUP is sent (-interval must be > 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.control && o.interval <= 0 {
		return errors.New("-control needs -interval > 0")
	}
	if o.out == "" || o.reloads < 1 || o.clients < 1 || o.workers < 1 {
		return errors.New("want -out, -reloads >= 1, -clients >= 1, -workers >= 1")
	}
	if o.label == "" {
		o.label = o.design
	}
	res, pd, err := runReloads(o)
	if res == nil {
		return err
	}
	if err != nil {
		res.Error = err.Error()
		fmt.Fprintf(os.Stderr, "reloadbench reloads %s run %d: %v (result kept)\n", o.label, o.run, err)
	}
	if err := writeJSON(o.out, res); err != nil {
		return err
	}
	if o.plot != "" && pd != nil {
		if err := writeJSON(o.plot, pd); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "  %-22s run %d: %6d requests, %4d failed %v, gens %d/%d, p99 %.2f ms (baseline %.2f ms), swaps %d in %.1fs\n",
		o.label, o.run, res.Requests, res.Failures, compactKinds(res.ByKind), res.GensAnswered, res.GensTotal,
		res.ReloadP99, res.BaselineP99, res.Swaps, res.ReloadSpanS)
	return nil
}

func compactKinds(m map[string]int64) string {
	s := ""
	for _, k := range demo.Kinds {
		if m[k] > 0 {
			s += fmt.Sprintf(" %s=%d", k, m[k])
		}
	}
	if s == "" {
		return "(none)"
	}
	return "(" + s[1:] + ")"
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (o reloadOpts) command(addr string) ([]string, []string, error) {
	_, port, _ := strings.Cut(addr, ":")
	switch o.design {
	case "baton", "baton-naive", "steer", "steer-naive":
		// baton in its two handoff modes, with hello's careful drain or
		// none (HELLO_DRAIN=0: stop at once, as most apps do).
		if o.baton == "" {
			return nil, nil, errors.New("-baton is required")
		}
		env := []string{"BATON_LISTEN=" + addr, "BATON_WORKERS=" + strconv.Itoa(o.workers), "BATON_READY=notify",
			"BATON_LOG_FORMAT=json", "BATON_LOG_LEVEL=info", "BATON_HANDOFF=shared"}
		if strings.HasPrefix(o.design, "steer") {
			env[len(env)-1] = "BATON_HANDOFF=steer"
		}
		if strings.HasSuffix(o.design, "-naive") {
			env = append(env, "HELLO_DRAIN=0")
		}
		return []string{o.baton, "--", o.baton, "hello"}, harness.CleanEnv(env...), nil
	case "express":
		// The seed's kind of app, unchanged: it binds $PORT itself, has no
		// signal handler; BATON_BIND=intercept and nothing else.
		if o.baton == "" || o.express == "" {
			return nil, nil, errors.New("-baton and -express are required")
		}
		return []string{o.baton, "--", o.node, o.express}, harness.CleanEnv("BATON_LISTEN="+addr, "BATON_BIND=intercept",
			"BATON_WORKERS="+strconv.Itoa(o.workers), "BATON_LOG_FORMAT=json", "PORT="+port, "NODE_PATH=/usr/share/nodejs"), nil
	case "seed":
		if o.seed == "" {
			return nil, nil, errors.New("-seed is required")
		}
		return []string{o.node, o.seed}, harness.CleanEnv("PORT="+port, "WORKERS="+strconv.Itoa(o.workers)), nil
	case "reuseport":
		if o.reuseport == "" || o.baton == "" {
			return nil, nil, errors.New("-reuseport and -baton are required")
		}
		return []string{o.reuseport, "super", "-addr", addr, "-workers", strconv.Itoa(o.workers), "--", o.baton, "hello"},
			harness.CleanEnv(), nil
	}
	return nil, nil, fmt.Errorf("unknown -design %q", o.design)
}

type swapTimes struct {
	hup, seen time.Time
	ev        harness.Event
}

func runReloads(o reloadOpts) (*runResult, *plotData, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, nil, err
	}
	argv, env, err := o.command(addr)
	if err != nil {
		return nil, nil, err
	}
	srv, err := harness.Start(argv, env, harness.Options{Verbose: o.verbose})
	if err != nil {
		return nil, nil, err
	}
	cursor := 0
	if _, err := srv.Await(&cursor, `"generation ready"`, o.swapTimeout, harness.Message("generation ready", 1)); err != nil {
		_ = srv.Stop(15 * time.Second)
		return nil, nil, fmt.Errorf("%s: first generation: %w", o.label, err)
	}

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	results := make(chan *demo.Result, 1)
	go func() {
		results <- demo.Load(ctx, demo.LoadConfig{Addr: addr, Clients: o.clients, KeepAlive: o.keepAlive,
			Timeout: o.timeout, Record: true})
	}()

	time.Sleep(o.warmup + o.baseline)
	var swaps []swapTimes
	var runErr error
	gen := 1
	next := time.Now()
	stopAt := next.Add(o.maxTime)
	for i := 0; i < o.reloads; i++ {
		if time.Now().After(stopAt) {
			runErr = fmt.Errorf("-max-time %v reached after %d of %d reloads", o.maxTime, i, o.reloads)
			break
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		hup := time.Now()
		if o.control {
			// Same windows as a real run, without the reloads.
			swaps = append(swaps, swapTimes{hup: hup, seen: hup})
			next = hup.Add(o.interval)
			continue
		}
		if err := srv.Signal(unix.SIGHUP); err != nil {
			runErr = fmt.Errorf("reload %d: SIGHUP: %w", i+1, err)
			break
		}
		ev, err := srv.Await(&cursor, `"swap complete"`, o.swapTimeout, func(e harness.Event) bool {
			return e.Message == "swap complete" && e.Gen > gen
		})
		if err != nil {
			runErr = fmt.Errorf("reload %d: %w", i+1, err)
			break
		}
		gen = ev.Gen
		swaps = append(swaps, swapTimes{hup: hup, seen: ev.Seen, ev: ev})
		next = hup.Add(o.interval)
	}
	time.Sleep(o.tail)
	stopLoad()
	res := <-results
	if err := srv.Stop(15 * time.Second); err != nil && runErr == nil {
		runErr = err
	}

	r := &runResult{
		Kind: "reloads", Design: o.design, Label: o.label, Run: o.run,
		IntervalMs: ms(o.interval), Reloads: o.reloads, Swaps: len(swaps), Control: o.control,
		Requests: res.Requests, Failures: res.Failures, ByKind: res.ByKind, Reused: res.Reused, GensTotal: 1 + len(swaps),
	}
	if o.control {
		r.Swaps, r.GensTotal = 0, 1
	}
	for g, n := range res.Generations {
		if n > 0 && g != "" {
			r.GensAnswered++
		}
	}

	rel := func(t time.Time) time.Duration { return t.Sub(res.Start) }
	baseFrom := o.warmup
	var baseTo, winFrom, winTo time.Duration
	if len(swaps) > 0 {
		baseTo = rel(swaps[0].hup)
		winFrom = baseTo
		// The window covers the last drain: the tail, less a little for the
		// load's own stop.
		winTo = rel(swaps[len(swaps)-1].seen) + o.tail - 100*time.Millisecond
	} else {
		baseTo = res.Elapsed
		winFrom, winTo = baseTo, baseTo
	}
	r.ReloadSpanS = (winTo - winFrom).Seconds()
	r.BaselineP99 = ms(res.Percentile(99, baseFrom, baseTo))
	r.ReloadP50 = ms(res.Percentile(50, winFrom, winTo))
	r.ReloadP99 = ms(res.Percentile(99, winFrom, winTo))
	var baseN, winN float64
	for _, s := range res.Samples {
		baseN += float64(btoi(s.At >= baseFrom && s.At < baseTo))
		winN += float64(btoi(s.At >= winFrom && s.At < winTo))
	}
	if d := (baseTo - baseFrom).Seconds(); d > 0 {
		r.BaselineRPS = baseN / d
	}
	if d := (winTo - winFrom).Seconds(); d > 0 {
		r.ReloadRPS = winN / d
	}

	// Swap timing, and for designs whose log has "worker ready", the boot of
	// the worker that completed each generation.
	events := srv.Events()
	for _, s := range swaps {
		if o.control {
			break
		}
		r.SwapMs = append(r.SwapMs, s.ev.Elapsed)
		r.SeenMs = append(r.SeenMs, ms(s.seen.Sub(s.hup)))
		var last *harness.Event
		for i := range events {
			e := &events[i]
			if e.Message == "worker ready" && e.Gen == s.ev.Gen && !e.Seen.After(s.ev.Seen) {
				last = e
			}
		}
		if last != nil {
			r.WorkerReadyMs = append(r.WorkerReadyMs, last.Elapsed)
			r.OverheadMs = append(r.OverheadMs, s.ev.Elapsed-last.Elapsed)
		}
	}

	var pd *plotData
	if o.plot != "" {
		pd = buckets(o.label, res, 100*time.Millisecond)
		for _, s := range swaps {
			if !o.control {
				pd.ReloadT = append(pd.ReloadT, rel(s.hup).Seconds())
			}
		}
		pd.Baseline = [2]float64{baseFrom.Seconds(), baseTo.Seconds()}
		pd.Window = [2]float64{winFrom.Seconds(), winTo.Seconds()}
	}
	return r, pd, runErr
}

func buckets(label string, res *demo.Result, width time.Duration) *plotData {
	pd := &plotData{Label: label, BucketMs: ms(width)}
	var cur []time.Duration
	idx := 0
	flush := func() {
		if len(cur) == 0 {
			return
		}
		slices.Sort(cur)
		pd.T = append(pd.T, (time.Duration(idx) * width).Seconds())
		pd.P50 = append(pd.P50, ms(stats.Rank(cur, 50)))
		pd.P99 = append(pd.P99, ms(stats.Rank(cur, 99)))
		pd.Max = append(pd.Max, ms(cur[len(cur)-1]))
		pd.N = append(pd.N, len(cur))
		cur = cur[:0]
	}
	for _, s := range res.Samples { // sorted by At
		if b := int(s.At / width); b != idx {
			flush()
			idx = b
		}
		cur = append(cur, s.Latency)
		if !s.OK {
			pd.FailT = append(pd.FailT, s.At.Seconds())
		}
	}
	flush()
	return pd
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
