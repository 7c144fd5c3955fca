package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/baton-init/baton/bench/internal/stats"
)

var (
	workerOrder = []string{"hello", "gunicorn"}
	configOrder = []string{"plain", "canary", "bake", "both"}
)

// cmdCanaryReport writes the medians of every worker kind and configuration
// as TSV (-tsv) and, on stdout, the Markdown table and checks that
// docs/benchmarks.md quotes. It exits 3 when a measurement failed or a
// request did.
func cmdCanaryReport(args []string) int {
	fs := flag.NewFlagSet("canary-report", flag.ExitOnError)
	dir := fs.String("dir", "", "directory of the JSON results")
	tsv := fs.String("tsv", "", "also write the medians here, one measurement a line")
	_ = fs.Parse(args)
	var all []*canaryResult
	if err := readResults(*dir, func(kind string) any {
		if kind != "canary" {
			return nil
		}
		all = append(all, new(canaryResult))
		return all[len(all)-1]
	}); err != nil {
		fmt.Fprintf(os.Stderr, "reloadbench canary-report: %v\n", err)
		return 1
	}
	var checks []string
	by := map[string][]canaryResult{}
	for _, r := range all {
		if r.Error != "" {
			checks = append(checks, fmt.Sprintf("**Measurement failed**: %s / %s, run %d: %s", r.Worker, r.Config, r.Run, oneLine(r.Error)))
			continue
		}
		by[r.Worker+"/"+r.Config] = append(by[r.Worker+"/"+r.Config], *r)
	}
	failed := len(checks) > 0
	totalReq, totalFail := 0, 0
	var t strings.Builder
	t.WriteString("worker\tconfig\truns\toutcome_s\tlast_old_exit_s\ttwo_gens_s\trss_base_kb\trss_peak_kb\tpss_base_kb\tpss_peak_kb" +
		"\tbaton_rss_base_kb\tbaton_rss_peak_kb\trequests\tfailed\tparked_requests\tparked_cpu_ms\tcurrent_cpu_ms\n")
	fmt.Println("| workers | reload | runs | outcome after | two generations alive | workers' PSS: baseline → peak | workers' RSS: baseline → peak | baton's RSS | requests | failed | to the new generation: each canary step; after the cutover | parked generation during the bake: requests, CPU (current's CPU) |")
	fmt.Println("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
	for _, w := range workerOrder {
		for _, c := range configOrder {
			rs := by[w+"/"+c]
			if len(rs) == 0 {
				continue
			}
			v := []float64{}
			for _, f := range []func(canaryResult) float64{
				func(r canaryResult) float64 { return r.Outcome }, func(r canaryResult) float64 { return r.LastOldExit },
				func(r canaryResult) float64 { return r.TwoGens },
				func(r canaryResult) float64 { return float64(r.Base.RSS) }, func(r canaryResult) float64 { return float64(r.Peak.RSS) },
				func(r canaryResult) float64 { return float64(r.Base.PSS) }, func(r canaryResult) float64 { return float64(r.Peak.PSS) },
				func(r canaryResult) float64 { return float64(r.Base.BatonRSS) }, func(r canaryResult) float64 { return float64(r.Peak.BatonRSS) },
			} {
				v = append(v, stats.MedianOf(rs, f))
			}
			// Requests and shares are pooled over the runs.
			req, fail, parkedReq := 0, 0, 0
			shares := map[string][2]int{} // phase -> new, answered
			var steps []string
			var parked, current []float64
			for _, r := range rs {
				req, fail = req+r.Requests, fail+r.Failed
				for _, ph := range r.Phases {
					name := ph.Name
					if !strings.HasPrefix(name, "canary ") {
						if name == "before the reload" || name == "new generation starting" {
							continue
						}
						name = "after"
					} else if !slices.Contains(steps, name) {
						steps = append(steps, name)
					}
					s := shares[name]
					shares[name] = [2]int{s[0] + ph.New, s[1] + ph.Old + ph.New}
				}
				if r.Bake != nil {
					parkedReq += r.Bake.ParkedReq
					parked, current = append(parked, float64(r.Bake.Parked.NS)/1e6), append(current, float64(r.Bake.Current.NS)/1e6)
				}
				if r.ReloadOutput != "" && !strings.HasPrefix(r.ReloadOutput, "generation 2 serving") {
					checks = append(checks, fmt.Sprintf("%s / %s run %d: `baton reload` printed %q", w, c, r.Run, r.ReloadOutput))
				}
			}
			totalReq, totalFail = totalReq+req, totalFail+fail
			var shareTxt []string
			for _, n := range append(steps, "after") {
				s := shares[n]
				shareTxt = append(shareTxt, fmt.Sprintf("%s: %.1f%% (%d of %d)", n, pct(s[0], s[1]), s[0], s[1]))
				var want float64
				if _, err := fmt.Sscanf(n, "canary %f%%", &want); err == nil && s[1] > 0 {
					// Each connection's generation is drawn at random: the
					// count is binomial around the step's share.
					p := want / 100
					mean, sd := p*float64(s[1]), math.Sqrt(float64(s[1])*p*(1-p))
					z := (float64(s[0]) - mean) / math.Max(sd, 1e-9)
					line := fmt.Sprintf("%s / %s, %s: %d of %d new connections to the new generation; expected %.0f ± %.1f (binomial), z = %+.1f", w, c, n, s[0], s[1], mean, sd, z)
					if math.Abs(z) > 3.5 {
						line = "**Unexpected share**: " + line
					}
					checks = append(checks, line)
				}
			}
			bake, pcpu, ccpu := "–", math.NaN(), math.NaN()
			if len(parked) > 0 {
				pcpu, ccpu = stats.Median(parked), stats.Median(current)
				bake = fmt.Sprintf("%d, %.2f ms (%.0f ms)", parkedReq, pcpu, ccpu)
				if parkedReq > 0 {
					checks = append(checks, fmt.Sprintf("%s / %s: the parked generation answered %d requests during the bake (expected 0 with a new connection per request)", w, c, parkedReq))
				}
			}
			fmt.Printf("| %s | %s | %d | %s | %s | %.1f → %.1f MB (%.1f×) | %.1f → %.1f MB | %.1f → %.1f MB | %d | **%d** | %s | %s |\n",
				w, c, len(rs), dur(v[0]), dur(v[2]), v[5]/1024, v[6]/1024, v[6]/v[5], v[3]/1024, v[4]/1024, v[7]/1024, v[8]/1024,
				req, fail, strings.Join(shareTxt, "; "), bake)
			fmt.Fprintf(&t, "%s\t%s\t%d", w, c, len(rs))
			for _, x := range append(v, float64(req), float64(fail), float64(parkedReq), pcpu, ccpu) {
				fmt.Fprintf(&t, "\t%.6g", x)
			}
			t.WriteString("\n")
		}
	}
	fmt.Printf("\n- Failed requests: **%d** of %d.\n", totalFail, totalReq)
	for _, c := range checks {
		fmt.Printf("- %s\n", c)
	}
	if *tsv != "" {
		if err := os.WriteFile(*tsv, []byte(t.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if failed || totalFail > 0 {
		return 3
	}
	return 0
}

func dur(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
