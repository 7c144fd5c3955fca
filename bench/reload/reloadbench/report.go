package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/baton-init/baton/bench/internal/stats"
	"github.com/baton-init/baton/demo"
)

// designOrder is the order of the rows; unknown labels follow, sorted.
var designOrder = []string{"baton", "baton-b2b", "control", "steer", "steer-b2b", "baton-naive", "steer-naive", "express", "seed", "reuseport"}

// readResults reads every JSON file of dir into fresh values of new (by the
// file's "kind" field, "reloads" or "canary").
func readResults(dir string, new func(kind string) any) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no results in %s (%v)", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var k struct {
			Kind string `json:"kind"`
		}
		if json.Unmarshal(b, &k) != nil {
			continue
		}
		if v := new(k.Kind); v != nil {
			if err := json.Unmarshal(b, v); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	return nil
}

// cmdReport writes the medians of every design as TSV (-tsv) and, on
// stdout, the Markdown tables docs/benchmarks.md quotes.
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of result JSON files")
	tsv := fs.String("tsv", "", "also write the medians here, one design a line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("want -dir")
	}
	var all []*runResult
	err := readResults(*dir, func(kind string) any {
		if kind != "reloads" {
			return nil
		}
		all = append(all, new(runResult))
		return all[len(all)-1]
	})
	if err != nil {
		return err
	}
	byLabel := map[string][]*runResult{}
	for _, r := range all {
		byLabel[r.Label] = append(byLabel[r.Label], r)
	}
	labels := slices.Sorted(func(yield func(string) bool) {
		for l := range byLabel {
			if !yield(l) {
				return
			}
		}
	})
	slices.SortStableFunc(labels, func(a, b string) int { return order(a) - order(b) })
	var rows []reloadRow
	for _, l := range labels {
		rows = append(rows, summarize(l, byLabel[l]))
	}
	if *tsv != "" {
		if err := writeTSV(*tsv, rows); err != nil {
			return err
		}
	}
	writeReport(os.Stdout, rows)
	return nil
}

func order(label string) int {
	if i := slices.Index(designOrder, label); i >= 0 {
		return i
	}
	return len(designOrder)
}

// reloadRow is one design's medians over its runs.
type reloadRow struct {
	Label                       string
	Runs                        int
	IntervalMs, Swaps, SpanS    float64
	Requests, Failed            float64
	FailedMin, FailedMax, Hard  float64
	Kinds                       []float64 // by demo.Kinds
	Reused, GensAns, GensTotal  float64
	P50, P99, BaseP99, P99Ratio float64 // ms, ms, ms, ×
	RPS, BaseRPS                float64
	SwapMs, BootMs, OverheadMs  float64 // pooled medians over every swap
	OverheadP90, SeenMs         float64
	NSwaps                      int
	Errors                      []string
}

func summarize(label string, rs []*runResult) reloadRow {
	col := func(f func(*runResult) float64) float64 { return stats.MedianOf(rs, f) }
	n := func(f func(*runResult) int64) func(*runResult) float64 {
		return func(r *runResult) float64 { return float64(f(r)) }
	}
	fails := make([]float64, len(rs))
	var swap, boot, ovh, seen []float64
	row := reloadRow{Label: label, Runs: len(rs), IntervalMs: rs[0].IntervalMs}
	for i, r := range rs {
		fails[i] = float64(r.Failures)
		swap, boot = append(swap, r.SwapMs...), append(boot, r.WorkerReadyMs...)
		ovh, seen = append(ovh, r.OverheadMs...), append(seen, r.SeenMs...)
		if r.Error != "" {
			row.Errors = append(row.Errors, fmt.Sprintf("run %d stopped early (%d of %d reloads): %s", r.Run, r.Swaps, r.Reloads, oneLine(r.Error)))
		}
	}
	row.Swaps = col(func(r *runResult) float64 { return float64(r.Swaps) })
	row.SpanS = col(func(r *runResult) float64 { return r.ReloadSpanS })
	row.Requests = col(n(func(r *runResult) int64 { return r.Requests }))
	row.Failed = stats.Median(fails)
	row.FailedMin, row.FailedMax = stats.MinMax(fails)
	row.Hard = col(n(func(r *runResult) int64 { return r.Failures - r.Reused }))
	for _, k := range demo.Kinds {
		row.Kinds = append(row.Kinds, col(n(func(r *runResult) int64 { return r.ByKind[k] })))
	}
	row.Reused = col(n(func(r *runResult) int64 { return r.Reused }))
	row.GensAns = col(func(r *runResult) float64 { return float64(r.GensAnswered) })
	row.GensTotal = col(func(r *runResult) float64 { return float64(r.GensTotal) })
	row.P50 = col(func(r *runResult) float64 { return r.ReloadP50 })
	row.P99 = col(func(r *runResult) float64 { return r.ReloadP99 })
	row.BaseP99 = col(func(r *runResult) float64 { return r.BaselineP99 })
	row.P99Ratio = col(func(r *runResult) float64 { return r.ReloadP99 / r.BaselineP99 })
	row.RPS = col(func(r *runResult) float64 { return r.ReloadRPS })
	row.BaseRPS = col(func(r *runResult) float64 { return r.BaselineRPS })
	row.NSwaps = len(swap)
	row.SwapMs, row.BootMs, row.OverheadMs, row.SeenMs = stats.Median(swap), stats.Median(boot), stats.Median(ovh), stats.Median(seen)
	row.OverheadP90 = math.NaN()
	if len(ovh) > 0 {
		row.OverheadP90 = stats.Rank(slices.Sorted(slices.Values(ovh)), 90)
	}
	return row
}

func writeTSV(path string, rows []reloadRow) error {
	var b strings.Builder
	b.WriteString("design\truns\tinterval_ms\tswaps\treload_span_s\trequests\tfailed\tfailed_min\tfailed_max\thard")
	for _, k := range demo.Kinds {
		b.WriteString("\t" + k)
	}
	b.WriteString("\treused\tgens_answered\tgens_total\tp50_ms\tp99_ms\tbaseline_p99_ms\tp99_ratio\trps\tbaseline_rps" +
		"\tswaps_timed\tswap_ms\tworker_boot_ms\toverhead_ms\toverhead_p90_ms\tseen_ms\n")
	for _, r := range rows {
		v := append([]float64{float64(r.Runs), r.IntervalMs, r.Swaps, r.SpanS, r.Requests, r.Failed, r.FailedMin, r.FailedMax, r.Hard}, r.Kinds...)
		v = append(v, r.Reused, r.GensAns, r.GensTotal, r.P50, r.P99, r.BaseP99, r.P99Ratio, r.RPS, r.BaseRPS,
			float64(r.NSwaps), r.SwapMs, r.BootMs, r.OverheadMs, r.OverheadP90, r.SeenMs)
		b.WriteString(r.Label)
		for _, x := range v {
			fmt.Fprintf(&b, "\t%.6g", x)
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func writeReport(w io.Writer, rows []reloadRow) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("| design | runs | reloads | failed requests per run: median [min–max] | hard (fresh connection) | by kind (median) | generations that answered | p50 / p99 during reloads | p99 without reloads | p99 ratio |\n")
	p("|---|--:|---|---|--:|---|---|---|---|---|\n")
	for _, r := range rows {
		cadence := fmt.Sprintf("%.0f, %.0f ms apart (%.1f s)", r.Swaps, r.IntervalMs, r.SpanS)
		if r.IntervalMs == 0 {
			cadence = fmt.Sprintf("%.0f, back-to-back (%.1f s)", r.Swaps, r.SpanS)
		} else if r.Label == "control" {
			cadence = "none sent"
		}
		var kinds []string
		for i, k := range demo.Kinds {
			if r.Kinds[i] > 0 {
				kinds = append(kinds, fmt.Sprintf("%s %.0f", k, r.Kinds[i]))
			}
		}
		if len(kinds) == 0 {
			kinds = []string{"none"}
		}
		p("| %s | %d | %s | **%.0f** [%.0f–%.0f] | %.0f | %s | %.0f of %.0f | %.2f / %.2f ms | %.2f ms | %.2f× |\n",
			r.Label, r.Runs, cadence, r.Failed, r.FailedMin, r.FailedMax, r.Hard, strings.Join(kinds, ", "),
			r.GensAns, r.GensTotal, r.P50, r.P99, r.BaseP99, r.P99Ratio)
	}
	p("\n| design | swaps | swap complete | worker boot | overhead (p90) | SIGHUP sent → \"swap complete\" read |\n|---|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		if r.NSwaps > 0 && r.BootMs == r.BootMs { // designs whose log has "worker ready"
			p("| %s | %d | %.2f ms | %.2f ms | **%.2f ms** (%.2f ms) | %.2f ms |\n", r.Label, r.NSwaps, r.SwapMs, r.BootMs, r.OverheadMs, r.OverheadP90, r.SeenMs)
		}
	}
	p("\n")
	for _, r := range rows {
		for _, e := range r.Errors {
			p("- %s %s\n", r.Label, e)
		}
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "|", "/")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
