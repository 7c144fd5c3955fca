package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/baton-init/baton/bench/internal/stats"
	"github.com/baton-init/baton/demo"
)

// p99Target and the others are the brief's targets for baton.
const (
	p99Target        = 1.2  // p99 during reloads / p99 without reloads
	throughputTarget = 0.98 // req/s through baton's listener / hello alone
	overheadTarget   = 10.0 // ms, swap complete minus the worker's own boot
)

// designOrder is the order of the rows; unknown labels follow, sorted.
var designOrder = []string{"baton", "baton-b2b", "control", "steer", "steer-b2b", "baton-naive", "steer-naive", "seed", "reuseport"}

var designText = map[string]string{
	"baton":       "baton: one shared socket, `baton hello` x2",
	"baton-b2b":   "baton, back-to-back reloads",
	"steer":       "baton, BATON_HANDOFF=steer, `baton hello` x2 (careful drain)",
	"steer-b2b":   "baton, BATON_HANDOFF=steer, back-to-back reloads",
	"baton-naive": "baton, shared socket, workers that drain badly (HELLO_DRAIN=0)",
	"steer-naive": "baton, BATON_HANDOFF=steer, workers that drain badly (HELLO_DRAIN=0)",
	"control":     "control: baton, same timeline, no SIGHUP sent",
	"seed":        "seed: Node 20 cluster, fork new, wait 'listening', SIGTERM old",
	"reuseport":   "per-worker SO_REUSEPORT, `baton hello` x2 (good drain)",
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of result JSON files")
	out := fs.String("out", "", "write the Markdown here (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("want -dir")
	}
	files, err := filepath.Glob(filepath.Join(*dir, "*.json"))
	if err != nil {
		return err
	}
	byLabel := map[string][]*runResult{}
	var tp *throughputResult
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var kind struct {
			Kind string `json:"kind"`
		}
		if json.Unmarshal(b, &kind) != nil {
			continue
		}
		switch kind.Kind {
		case "reloads":
			var r runResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			byLabel[r.Label] = append(byLabel[r.Label], &r)
		case "throughput":
			tp = new(throughputResult)
			if err := json.Unmarshal(b, tp); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	var labels []string
	for _, l := range designOrder {
		if byLabel[l] != nil {
			labels = append(labels, l)
		}
	}
	var rest []string
	for l := range byLabel {
		if !slices.Contains(designOrder, l) {
			rest = append(rest, l)
		}
	}
	slices.Sort(rest)
	labels = append(labels, rest...)

	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	writeReport(w, labels, byLabel, tp)
	return nil
}

func writeReport(w io.Writer, labels []string, byLabel map[string][]*runResult, tp *throughputResult) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }

	if len(labels) > 0 {
		p("### Reloads under load\n\n")
		p("Medians across runs (each column on its own); failures also as min–max across runs. " +
			"Latencies include failed requests (what the client waited).\n\n")
		p("| design | runs | reloads per run | requests | failed | hard: on a fresh connection | refused | reset | eof | timeout | status | other | of which on reused keep-alive conns | generations that answered | p50 during reloads | p99 during reloads | p99 without reloads | p99 ratio | req/s during reloads / without |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range labels {
			rs := byLabel[l]
			slices.SortFunc(rs, func(a, b *runResult) int { return a.Run - b.Run })
			col := func(f func(*runResult) float64) float64 {
				v := make([]float64, len(rs))
				for i, r := range rs {
					v[i] = f(r)
				}
				return stats.Median(v)
			}
			fails := make([]float64, len(rs))
			for i, r := range rs {
				fails[i] = float64(r.Failures)
			}
			name := designText[l]
			if name == "" {
				name = l
			}
			cadence := "200 ms apart"
			if rs[0].IntervalMs == 0 {
				cadence = "back-to-back"
			} else if rs[0].IntervalMs != 200 {
				cadence = fmt.Sprintf("%.0f ms apart", rs[0].IntervalMs)
			}
			reloads := fmt.Sprintf("%.0f, %s", col(func(r *runResult) float64 { return float64(r.Swaps) }), cadence)
			if rs[0].Control {
				reloads = fmt.Sprintf("none sent (timeline of %d)", rs[0].Reloads)
			}
			p("| %s | %d | %s (%.1f s) | %.0f | **%.0f** [%.0f–%.0f] |", name, len(rs), reloads,
				col(func(r *runResult) float64 { return r.ReloadSpanS }),
				col(func(r *runResult) float64 { return float64(r.Requests) }),
				stats.Median(fails), slices.Min(fails), slices.Max(fails))
			p(" %.0f |", col(func(r *runResult) float64 { return float64(r.Failures - r.Reused) }))
			for _, k := range demo.Kinds {
				p(" %.0f |", col(func(r *runResult) float64 { return float64(r.ByKind[k]) }))
			}
			p(" %.0f | %.0f of %.0f | %.2f ms | %.2f ms | %.2f ms | %.2f× | %.0f / %.0f |\n",
				col(func(r *runResult) float64 { return float64(r.Reused) }),
				col(func(r *runResult) float64 { return float64(r.GensAnswered) }),
				col(func(r *runResult) float64 { return float64(r.GensTotal) }),
				col(func(r *runResult) float64 { return r.ReloadP50 }),
				col(func(r *runResult) float64 { return r.ReloadP99 }),
				col(func(r *runResult) float64 { return r.BaselineP99 }),
				col(func(r *runResult) float64 { return ratio(r.ReloadP99, r.BaselineP99) }),
				col(func(r *runResult) float64 { return r.ReloadRPS }),
				col(func(r *runResult) float64 { return r.BaselineRPS }))
		}
		p("\n")
		for _, l := range labels {
			for _, r := range byLabel[l] {
				if r.Error != "" {
					p("- %s run %d stopped early (%d of %d reloads): %s\n", l, r.Run, r.Swaps, r.Reloads, oneLine(r.Error))
				}
			}
		}
		// One example error message per failure kind, for diagnosis.
		for _, l := range labels {
			ex := map[string]string{}
			for _, r := range byLabel[l] {
				for k, m := range r.Errors {
					if ex[k] == "" {
						ex[k] = m
					}
				}
			}
			for _, k := range demo.Kinds {
				if ex[k] != "" {
					p("- %s, %s: `%s`\n", l, k, oneLine(ex[k]))
				}
			}
		}
		p("\n")
	}

	if rs := byLabel["baton"]; len(rs) > 0 {
		p("### What a reload costs in time (baton)\n\n")
		p("Per swap: baton's \"swap complete\" `elapsed` (from the SIGHUP being handled to the new generation ready) " +
			"minus the \"worker ready\" `elapsed` of the worker whose READY=1 completed the generation (its own boot, " +
			"measured by baton from its start). Pooled over every swap of every run.\n\n")
		p("In steer mode \"swap complete\" is when new connections go to the new generation; the old one is asked to stop at least 100 ms later, " +
			"once its own queue is empty, and a new swap is steered to only after the generation before has left, " +
			"which is what back-to-back reloads pay for.\n\n")
		p("| design | reloads | swaps | swap complete, median | worker boot, median | overhead, median | overhead, p90 | SIGHUP sent to \"swap complete\" read, median |\n")
		p("|---|---|---|---|---|---|---|---|\n")
		for _, l := range []string{"baton", "baton-b2b", "steer", "steer-b2b", "baton-naive", "steer-naive"} {
			var swap, boot, ovh, seen []float64
			for _, r := range byLabel[l] {
				swap = append(swap, r.SwapMs...)
				boot = append(boot, r.WorkerReadyMs...)
				ovh = append(ovh, r.OverheadMs...)
				seen = append(seen, r.SeenMs...)
			}
			if len(swap) == 0 {
				continue
			}
			cad := "200 ms apart"
			if strings.HasSuffix(l, "-b2b") {
				cad = "back-to-back"
			}
			p("| %s | %s | %d | %.2f ms | %.2f ms | **%.2f ms** | %.2f ms | %.2f ms |\n", l, cad, len(swap),
				stats.Median(swap), stats.Median(boot), stats.Median(ovh), stats.Rank(slices.Sorted(slices.Values(ovh)), 90), stats.Median(seen))
		}
		p("\n")
	}

	if tp != nil {
		p("### Throughput through the held listener\n\n")
		p("`%s`, 64 keep-alive connections, one worker. Alternating runs (%s), median of each.\n\n",
			tp.Command, strings.Join(tp.Order, ", "))
		p("| worker | runs (req/s) | median req/s |\n|---|---|---|\n")
		p("| `baton hello` under baton (BATON_WORKERS=1, baton's socket) | %s | %.0f |\n", joinF(tp.Baton), tp.MedBaton)
		p("| `baton hello` alone (%s) | %s | %.0f |\n", tp.AloneHow, joinF(tp.Alone), tp.MedAlone)
		p("\nRatio baton / alone: **%.3f**", tp.Ratio)
		if len(tp.Errors) > 0 {
			p(" (wrk reported: %s)", strings.Join(tp.Errors, "; "))
		}
		p("\n\n")
	}

	p("### Targets (baton)\n\n| target | measured | met? |\n|---|---|---|\n")
	if rs := byLabel["baton"]; len(rs) > 0 {
		var fails, r99 []float64
		for _, r := range rs {
			fails = append(fails, float64(r.Failures))
			r99 = append(r99, ratio(r.ReloadP99, r.BaselineP99))
		}
		p("| no failed request during reloads | %.0f failed in total over %d runs | %s |\n", sum(fails), len(rs), yes(sum(fails) == 0))
		p("| p99 during reloads ≤ %.1f× p99 without | %.2f× (median; runs: %s) | %s |\n", p99Target, stats.Median(r99), joinX(r99), yes(stats.Median(r99) <= p99Target))
		if cs := byLabel["control"]; len(cs) > 0 {
			var c99 []float64
			for _, r := range cs {
				c99 = append(c99, ratio(r.ReloadP99, r.BaselineP99))
			}
			p("| (noise floor: the same ratio in the control run, no reloads) | %.2f× (median; runs: %s) | |\n", stats.Median(c99), joinX(c99))
		}
		var ovh []float64
		for _, r := range rs {
			ovh = append(ovh, r.OverheadMs...)
		}
		if len(ovh) > 0 {
			p("| swap overhead ≤ %.0f ms | %.2f ms (median) | %s |\n", overheadTarget, stats.Median(ovh), yes(stats.Median(ovh) <= overheadTarget))
		}
	}
	if tp != nil {
		p("| throughput ratio ≥ %.2f | %.3f | %s |\n", throughputTarget, tp.Ratio, yes(tp.Ratio >= throughputTarget))
	}
	p("\n")
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func sum(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func joinF(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

func joinX(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, ", ")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
