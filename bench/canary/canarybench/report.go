//go:build linux

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

var (
	kindOrder   = []string{"hello", "gunicorn"}
	configOrder = []string{"plain", "canary", "bake", "both"}
	kindTitle   = map[string]string{
		"hello": "`baton hello`, BATON_WORKERS=4 (4 Go processes per generation)",
		"gunicorn": "gunicorn, sync workers: BATON_WORKERS=1, GUNICORN_WORKERS=4 (one baton worker, the arbiter, " +
			"which forks 4 workers: 5 Python processes per generation; test/workers/gunicorn, as test/thirdparty_test.go runs it)",
	}
)

func configTitle(r Result) string {
	var parts []string
	for _, kv := range r.Env {
		if strings.HasPrefix(kv, "BATON_CANARY=") || strings.HasPrefix(kv, "BATON_BAKE=") {
			parts = append(parts, "`"+kv+"`")
		}
	}
	if len(parts) == 0 {
		return "plain steer reload"
	}
	return strings.Join(parts, " + ")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// med is the median of f over the runs.
func med(rs []Result, f func(Result) float64) float64 {
	v := make([]float64, 0, len(rs))
	for _, r := range rs {
		v = append(v, f(r))
	}
	return median(v)
}

func mb(kb float64) string { return fmt.Sprintf("%.1f MB", kb/1024) }

func dur(s float64) string {
	switch {
	case math.IsNaN(s):
		return "–"
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func cmdReport(args []string) int {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "directory of the JSON results")
	_ = fs.Parse(args)
	files, _ := filepath.Glob(filepath.Join(*dir, "*.json"))
	if len(files) == 0 {
		fmt.Fprintf(os.Stderr, "canarybench report: no results in %s\n", *dir)
		return 1
	}
	by := map[string]map[string][]Result{}
	var errs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			return 1
		}
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("%s / %s, run %d: %s", r.Kind, r.Config, r.Run, r.Error))
			continue
		}
		if by[r.Kind] == nil {
			by[r.Kind] = map[string][]Result{}
		}
		by[r.Kind][r.Config] = append(by[r.Kind][r.Config], r)
	}

	var checks, shareChecks []string
	totalReq, totalFail := 0, 0
	for _, k := range kindOrder {
		cs := by[k]
		if cs == nil {
			continue
		}
		fmt.Printf("### %s\n\n", kindTitle[k])
		plain := cs["plain"]
		pTwo := med(plain, func(r Result) float64 { return r.TwoGens })
		pExtra := med(plain, func(r Result) float64 { return r.ExtraPSS })

		fmt.Println("**Memory and time** (medians of the runs; memory summed over baton's descendants, baton itself apart)")
		fmt.Println()
		fmt.Println("| reload | runs | reload → `baton reload` returns | reload → last old worker exited | two generations alive (log) | ÷ plain | RSS: baseline → peak | peak ÷ baseline | RSS > 1.5× baseline for | PSS: baseline → peak | peak ÷ baseline | PSS > 1.5× baseline for | extra PSS × time | ÷ plain | baton's own RSS: baseline → peak |")
		fmt.Println("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
		for _, c := range configOrder {
			rs := cs[c]
			if len(rs) == 0 {
				continue
			}
			two := med(rs, func(r Result) float64 { return r.TwoGens })
			extra := med(rs, func(r Result) float64 { return r.ExtraPSS })
			fmt.Printf("| %s | %d | %s | %s | %s | %s | %s → %s | %.2f× | %.1f s | %s → %s | %.2f× | %.1f s | %.1f MB·s | %s | %s → %s |\n",
				configTitle(rs[0]), len(rs),
				dur(med(rs, func(r Result) float64 { return r.Outcome })),
				dur(med(rs, func(r Result) float64 { return r.LastOldExit })),
				dur(two), ratio(two, pTwo, c),
				mb(med(rs, func(r Result) float64 { return float64(r.Base.RSS) })),
				mb(med(rs, func(r Result) float64 { return float64(r.Peak.RSS) })),
				med(rs, func(r Result) float64 { return float64(r.Peak.RSS) / float64(r.Base.RSS) }),
				med(rs, func(r Result) float64 { return r.AboveRSS }),
				mb(med(rs, func(r Result) float64 { return float64(r.Base.PSS) })),
				mb(med(rs, func(r Result) float64 { return float64(r.Peak.PSS) })),
				med(rs, func(r Result) float64 { return float64(r.Peak.PSS) / float64(r.Base.PSS) }),
				med(rs, func(r Result) float64 { return r.AbovePSS }),
				extra, ratio(extra, pExtra, c),
				mb(med(rs, func(r Result) float64 { return float64(r.Base.BatonRSS) })),
				mb(med(rs, func(r Result) float64 { return float64(r.Peak.BatonRSS) })))
		}
		fmt.Println()

		fmt.Println("**Timeline** (median seconds after the reload was sent, from baton's log as read)")
		fmt.Println()
		fmt.Println("| reload | new generation ready | canary steps | swap complete (all new connections to it) | bake done | old generation told to stop | last old worker exited | `baton reload` returned |")
		fmt.Println("|---|--:|--:|--:|--:|--:|--:|--:|")
		for _, c := range configOrder {
			rs := cs[c]
			if len(rs) == 0 {
				continue
			}
			evT := func(msg string, pick func(TEvent) bool) float64 {
				return med(rs, func(r Result) float64 {
					for _, e := range r.Events {
						if e.Msg == msg && pick(e) {
							return e.T
						}
					}
					return math.NaN()
				})
			}
			var steps []string
			for i := 1; ; i++ {
				t := evT("canary step", func(e TEvent) bool { return e.Gen == 2 && e.Step == i })
				if math.IsNaN(t) {
					break
				}
				pct := 0
				for _, e := range rs[0].Events {
					if e.Msg == "canary step" && e.Step == i {
						pct = e.Percent
					}
				}
				steps = append(steps, fmt.Sprintf("%d%% at %.2f", pct, t))
			}
			st := "–"
			if len(steps) > 0 {
				st = strings.Join(steps, ", ")
			}
			fmt.Printf("| %s | %.3f | %s | %.3f | %s | %s | %.3f | %.3f |\n", configTitle(rs[0]),
				med(rs, func(r Result) float64 { return r.NewReady }), st,
				med(rs, func(r Result) float64 { return r.SwapComplete }),
				num3(evT("bake done", func(e TEvent) bool { return e.Gen == 2 })),
				num3(evT("worker retiring", func(e TEvent) bool { return e.Gen == 1 })),
				med(rs, func(r Result) float64 { return r.LastOldExit }),
				med(rs, func(r Result) float64 { return r.Outcome }))
		}
		fmt.Println()

		fmt.Println("**Under load** (requests and shares pooled over the runs; CPU medians of the runs)")
		fmt.Println()
		fmt.Println("| reload | requests | failed | answered by the new generation: during each canary step | after the cutover | parked generation: requests answered during the bake | its CPU during the bake | current generation's CPU, same window | parked ÷ current |")
		fmt.Println("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
		for _, c := range configOrder {
			rs := cs[c]
			if len(rs) == 0 {
				continue
			}
			req, fail := 0, 0
			kinds := map[string]int{}
			type share struct{ n, new int }
			steps := map[string]*share{}
			var stepNames []string
			after := &share{}
			parkedReq := 0
			for _, r := range rs {
				req += r.Load.Requests
				fail += r.Load.Failed
				for kk, v := range r.Load.ByKind {
					kinds[kk] += v
				}
				for _, p := range r.Load.Phases {
					switch {
					case strings.HasPrefix(p.Name, "canary "):
						if steps[p.Name] == nil {
							steps[p.Name] = &share{}
							stepNames = append(stepNames, p.Name)
						}
						steps[p.Name].n += p.Old + p.New
						steps[p.Name].new += p.New
					case p.Name == "bake" || strings.HasPrefix(p.Name, "cutover") || strings.HasPrefix(p.Name, "bake done") || p.Name == "after":
						after.n += p.Old + p.New
						after.new += p.New
					}
				}
				if r.Bake != nil {
					parkedReq += r.Bake.ParkedReq
				}
			}
			totalReq += req
			totalFail += fail
			failTxt := fmt.Sprintf("**%d**", fail)
			if fail > 0 {
				var ks []string
				for kk, v := range kinds {
					ks = append(ks, fmt.Sprintf("%s %d", kk, v))
				}
				slices.Sort(ks)
				failTxt += " (" + strings.Join(ks, ", ") + ")"
			}
			var stx []string
			for _, n := range stepNames {
				s := steps[n]
				stx = append(stx, fmt.Sprintf("%s: %.1f%% (%d of %d)", n, pctOf(s.new, s.n), s.new, s.n))
				// The kernel draws each connection's generation at random:
				// the count is binomial around the step's share.
				var want float64
				if _, err := fmt.Sscanf(n, "canary %f%%", &want); err == nil && s.n > 0 {
					p := want / 100
					mean, sd := p*float64(s.n), math.Sqrt(float64(s.n)*p*(1-p))
					z := (float64(s.new) - mean) / math.Max(sd, 1e-9)
					line := fmt.Sprintf("%s / %s, %s: %d of %d new connections to the new generation, %.1f%%; expected %.0f ± %.1f (binomial), z = %+.1f",
						k, c, n, s.new, s.n, pctOf(s.new, s.n), mean, sd, z)
					if math.Abs(z) > 3.5 {
						line = "**Unexpected share**: " + line
					}
					shareChecks = append(shareChecks, line)
				}
			}
			stepTxt := "–"
			if len(stx) > 0 {
				stepTxt = strings.Join(stx, "; ")
			}
			bakeReq, bakeCPU, curCPU, rat := "–", "–", "–", "–"
			var withBake []Result
			for _, r := range rs {
				if r.Bake != nil {
					withBake = append(withBake, r)
				}
			}
			if len(withBake) > 0 {
				pNS := med(withBake, func(r Result) float64 { return float64(r.Bake.Parked.NS) })
				cNS := med(withBake, func(r Result) float64 { return float64(r.Bake.Current.NS) })
				win := med(withBake, func(r Result) float64 { return r.Bake.Window })
				bakeReq = fmt.Sprintf("%d", parkedReq)
				bakeCPU = fmt.Sprintf("%.2f ms in %.1f s (%.0f ticks; %d procs)", pNS/1e6, win,
					med(withBake, func(r Result) float64 { return float64(r.Bake.Parked.Ticks) }),
					withBake[0].Bake.Parked.Procs)
				curCPU = fmt.Sprintf("%.0f ms (%.0f ticks)", cNS/1e6, med(withBake, func(r Result) float64 { return float64(r.Bake.Current.Ticks) }))
				if cNS > 0 {
					rat = fmt.Sprintf("%.4f", pNS/cNS)
				}
				if parkedReq > 0 {
					checks = append(checks, fmt.Sprintf("%s / %s: the parked generation answered %d requests during the bake (expected 0 with a new connection per request)", k, c, parkedReq))
				}
			}
			fmt.Printf("| %s | %d | %s | %s | %.1f%% (%d of %d) | %s | %s | %s | %s |\n", configTitle(rs[0]), req, failTxt, stepTxt,
				pctOf(after.new, after.n), after.new, after.n, bakeReq, bakeCPU, curCPU, rat)
			for _, r := range rs {
				if r.ReloadOutput != "" && !strings.HasPrefix(r.ReloadOutput, "generation 2 serving") {
					checks = append(checks, fmt.Sprintf("%s / %s run %d: `baton reload` printed %q", k, c, r.Run, r.ReloadOutput))
				}
			}
		}
		fmt.Println()
	}

	fmt.Println("### Checks")
	fmt.Println()
	if totalFail == 0 {
		fmt.Printf("- Failed requests: **0** of %d.\n", totalReq)
	} else {
		fmt.Printf("- Failed requests: **%d** of %d (see the tables).\n", totalFail, totalReq)
	}
	if len(errs) == 0 {
		fmt.Println("- Every measurement completed: `baton reload` exited 0 with \"generation 2 serving\", and baton logged no `swap aborted`, `canary aborted` or `swap reverted`.")
	}
	for _, e := range errs {
		fmt.Printf("- **Measurement failed**: %s\n", oneLine(e))
	}
	for _, c := range checks {
		fmt.Printf("- %s\n", c)
	}
	for _, c := range shareChecks {
		fmt.Printf("- %s\n", c)
	}
	if totalFail > 0 || len(errs) > 0 {
		return 3
	}
	return 0
}

func ratio(v, plain float64, config string) string {
	if config == "plain" || plain <= 0 {
		return "1×"
	}
	return fmt.Sprintf("%.0f×", v/plain)
}

func num3(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.3f", v)
}

func pctOf(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}
