package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/baton-init/baton/bench/internal/stats"
)

// cmdReport turns a results directory written by bench/init/run into a
// Markdown report on stdout. The directory holds:
//
//	inits.tsv        name TAB path TAB version TAB `file -b` output TAB size in bytes
//	                 (one init per line, tini-static first)
//	meta.txt         free text lines for the header (machine, settings)
//	hyperfine*.json  hyperfine --export-json, commands named "true" and by init name
//	rss-NAME.jsonl   benchinit rss lines
//	trickle-NAME.jsonl, backlog-NAME.jsonl   benchinit orphans lines
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "results directory")
	fs.Parse(args)
	if *dir == "" {
		return errors.New("-dir is required")
	}
	inits, err := readInits(filepath.Join(*dir, "inits.tsv"))
	if err != nil {
		return err
	}
	hfFiles, _ := filepath.Glob(filepath.Join(*dir, "hyperfine*.json"))
	hf, hfErr := readHyperfine(hfFiles)

	w := &strings.Builder{}
	p := func(f string, a ...any) { fmt.Fprintf(w, f, a...) }
	p("### Init footprint and speed: baton vs tini-static, dumb-init, catatonit\n\n")
	if meta, err := os.ReadFile(filepath.Join(*dir, "meta.txt")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(meta)), "\n") {
			p("%s  \n", l)
		}
		p("\n")
	}
	if hfErr != nil {
		p("(startup: %v)\n\n", hfErr)
	}

	type row struct {
		in                      initInfo
		size                    int64
		rss, anon, file         []float64
		startup, startCPU       []float64
		trickle, trickleCPU     []float64
		backlog, backlogCPU     []float64
		failedT, failedB, nOrph int
	}
	var rows []*row
	var allLag []float64
	var leftover []string
	for _, in := range inits {
		r := &row{in: in, size: -1}
		if n, err := strconv.ParseInt(in.size, 10, 64); err == nil {
			r.size = n
		} else if st, err := os.Stat(in.path); err == nil {
			r.size = st.Size()
		}
		for _, m := range readJSONL(filepath.Join(*dir, "rss-"+in.name+".jsonl")) {
			r.rss = append(r.rss, num(m["vmrss_kb"]))
			r.anon = append(r.anon, num(m["rss_anon_kb"]))
			r.file = append(r.file, num(m["rss_file_kb"]))
		}
		for _, m := range readJSONL(filepath.Join(*dir, "trickle-"+in.name+".jsonl")) {
			if num(m["remaining"]) != 0 {
				r.failedT++
				continue
			}
			r.nOrph = int(num(m["orphans"]))
			if z := num(m["zombies_after"]); z > 0 {
				leftover = append(leftover, fmt.Sprintf("%s: %.0f zombie(s) left in the namespace after a trickle run", in.name, z))
			}
			r.trickle = append(r.trickle, num(m["last_exit_to_zero_ms"]))
			allLag = append(allLag, num(m["last_exit_to_eof_ms"]))
			if c := num(m["init_cpu_ms"]); !math.IsNaN(c) {
				r.trickleCPU = append(r.trickleCPU, c)
			}
		}
		for _, m := range readJSONL(filepath.Join(*dir, "backlog-"+in.name+".jsonl")) {
			if num(m["remaining"]) != 0 {
				r.failedB++
				continue
			}
			r.nOrph = int(num(m["orphans"]))
			r.backlog = append(r.backlog, num(m["cont_to_zero_ms"]))
			if c := num(m["init_cpu_ms"]); !math.IsNaN(c) {
				r.backlogCPU = append(r.backlogCPU, c)
			}
		}
		r.startup = hf.times[in.name]
		r.startCPU = hf.cpu[in.name]
		rows = append(rows, r)
	}
	base := hf.times["true"]
	ref := rows[0] // tini-static
	p("**Footprint and startup**\n\n")
	p("| init | binary size | linkage | RSS supervising `sleep` | anon + file | startup `INIT -- /bin/true` | overhead over `/bin/true` | overhead ÷ tini-static | raw time ÷ tini-static | CPU per start (user+sys) |\n")
	p("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|\n")
	if len(base) > 0 {
		p("| `/bin/true` alone | | | | | %s | | | | %s |\n", fmtMS(stats.Median(base)), fmtMS(stats.Median(hf.cpu["true"])))
	}
	for _, r := range rows {
		p("| **%s** %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.in.name, r.in.version, fmtSize(r.size), r.in.linkage(), fmtRSS(r.rss),
			fmt.Sprintf("%.0f + %.0f", stats.Median(r.anon), stats.Median(r.file)),
			fmtMS(stats.Median(r.startup)), fmtMS(overhead(r.startup, base)),
			fmtRatio(overhead(r.startup, base), overhead(ref.startup, base)),
			fmtRatio(stats.Median(r.startup), stats.Median(ref.startup)), fmtMS(stats.Median(r.startCPU)))
	}

	n := "N"
	if ref.nOrph > 0 {
		n = fmt.Sprintf("%d", ref.nOrph)
	}
	p("\n**Orphans (%s per run, the init is PID 1 of its own PID namespace)**\n\n", n)
	p("| init | trickle: last orphan exit → 0 zombies | trickle: init CPU per orphan | ÷ tini-static | backlog of %s zombies: SIGCONT → 0 | backlog: init CPU for the drain | ÷ tini-static (wall / CPU) |\n", n)
	p("|---|--:|--:|--:|--:|--:|--:|\n")
	perOrphan := func(r *row) float64 {
		if r.nOrph == 0 {
			return math.NaN()
		}
		return stats.Median(r.trickleCPU) * 1000 / float64(r.nOrph) // µs
	}
	for _, r := range rows {
		p("| **%s** | %s | %s | %s | %s | %s | %s / %s |\n", r.in.name,
			fmtSpread(r.trickle, r.failedT), fmtUS(perOrphan(r)), fmtRatio(perOrphan(r), perOrphan(ref)),
			fmtSpread(r.backlog, r.failedB), fmtSpread(r.backlogCPU, 0),
			fmtRatio(stats.Median(r.backlog), stats.Median(ref.backlog)), fmtRatio(stats.Median(r.backlogCPU), stats.Median(ref.backlogCPU)))
	}
	if len(allLag) > 0 {
		p("\nThe worker's own wake-up after the last exit, the trickle column's floor: median %s, all inits.\n", fmtMS(stats.Median(allLag)))
	}
	for _, l := range leftover {
		p("\n- **%s** (seen by the final scan of the namespace's /proc for Z-state processes)\n", l)
	}

	for _, r := range rows {
		if r.in.name != "baton" {
			continue
		}
		p("\n**baton against its targets**\n\n")
		check := func(ok bool) string {
			if ok {
				return "met"
			}
			return "**missed**"
		}
		p("- size ≤ 6 MB: %s, %s — %s\n", fmtSize(r.size), r.in.linkage(), check(r.size >= 0 && r.size <= 6e6))
		if len(r.rss) > 0 {
			p("- RSS ≤ 8 MB (7812 kB): %s — %s\n", fmtRSS(r.rss), check(stats.Median(r.rss) <= 8e6/1024))
		}
		if len(r.startup) > 0 && len(ref.startup) > 0 && len(base) > 0 {
			ro := overhead(r.startup, base) / overhead(ref.startup, base)
			rr := stats.Median(r.startup) / stats.Median(ref.startup)
			p("- startup ≤ 2.5× tini-static: overhead %.2f× — %s; raw time %.2f× — %s\n",
				ro, check(ro <= 2.5), rr, check(rr <= 2.5))
			if sp := hf.times["baton-spread"]; len(sp) > 0 {
				p("- every signal subscribed before the first worker starts, threads held on one CPU meanwhile (internal/startup/onecpu): %s, raw time %.2f× tini-static; "+
					"the same build without the hold: %s, %.2f× (so the hold saves %s a start)\n",
					fmtMS(stats.Median(r.startup)), rr, fmtMS(stats.Median(sp)), stats.Median(sp)/stats.Median(ref.startup), fmtMS(stats.Median(sp)-stats.Median(r.startup)))
			}
		}
		if len(r.trickle) > 0 && len(ref.trickle) > 0 {
			d := stats.Median(r.trickle) - stats.Median(ref.trickle)
			p("- orphans on par with tini-static (≤ 1.5× its median, or within 1 ms): last exit → 0 zombies %s vs %s — %s",
				fmtMS(stats.Median(r.trickle)), fmtMS(stats.Median(ref.trickle)), check(d <= 1 || stats.Median(r.trickle) <= 1.5*stats.Median(ref.trickle)))
			if len(r.backlog) > 0 && len(ref.backlog) > 0 {
				rb := stats.Median(r.backlog) / stats.Median(ref.backlog)
				p("; backlog drain %.2f× — %s", rb, check(rb <= 1.5))
			}
			if pr := perOrphan(r) / perOrphan(ref); !math.IsNaN(pr) {
				p(" (for information, not part of the target: CPU per orphan %.2f× tini-static's)", pr)
			}
			p("\n")
		}
		if r.failedT+r.failedB > 0 {
			p("- %d orphan run(s) did not reach zero zombies\n", r.failedT+r.failedB)
		}
	}
	fmt.Print(w.String())
	return nil
}

type initInfo struct{ name, path, version, file, size string }

func (in initInfo) linkage() string {
	switch {
	case strings.Contains(in.file, "statically linked"), strings.Contains(in.file, "static-pie linked"):
		return "static"
	case strings.Contains(in.file, "dynamically linked"):
		return "dynamic"
	}
	return "?"
}

func readInits(path string) ([]initInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []initInfo
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(l, "\t")
		for len(f) < 5 {
			f = append(f, "")
		}
		out = append(out, initInfo{f[0], f[1], f[2], f[3], f[4]})
	}
	if len(out) == 0 {
		return nil, errors.New("no inits in " + path)
	}
	return out, nil
}

type hyperfineData struct {
	times map[string][]float64 // ms, per run
	cpu   map[string][]float64 // ms, mean user+sys (one value per hyperfine run)
}

// readHyperfine returns the run times (ms) of each named command and, per
// file, its mean CPU time (user+sys, ms).
func readHyperfine(paths []string) (hyperfineData, error) {
	hf := hyperfineData{times: map[string][]float64{}, cpu: map[string][]float64{}}
	if len(paths) == 0 {
		return hf, errors.New("no hyperfine results")
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return hf, err
		}
		var doc struct {
			Results []struct {
				Command string    `json:"command"`
				User    float64   `json:"user"`
				System  float64   `json:"system"`
				Times   []float64 `json:"times"`
			} `json:"results"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return hf, fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range doc.Results {
			for _, t := range r.Times {
				hf.times[r.Command] = append(hf.times[r.Command], t*1000)
			}
			hf.cpu[r.Command] = append(hf.cpu[r.Command], (r.User+r.System)*1000)
		}
	}
	return hf, nil
}

func readJSONL(path string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func num(v any) float64 {
	f, ok := v.(float64)
	if !ok {
		return math.NaN()
	}
	return f
}

func overhead(xs, base []float64) float64 { return stats.Median(xs) - stats.Median(base) }

func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) < 10:
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func fmtUS(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f µs", v)
}

func fmtRatio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtSize(n int64) string {
	switch {
	case n < 0:
		return "?"
	case n < 1e6:
		return fmt.Sprintf("%.0f KB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.2f MB", float64(n)/1e6)
}

func fmtRSS(kb []float64) string {
	if len(kb) == 0 {
		return "–"
	}
	lo, hi := stats.MinMax(kb)
	s := fmt.Sprintf("%.0f kB", stats.Median(kb))
	if lo != hi {
		s += fmt.Sprintf(" (%.0f–%.0f)", lo, hi)
	}
	return s
}

func fmtSpread(ms []float64, failed int) string {
	s := "–"
	if len(ms) > 0 {
		lo, hi := stats.MinMax(ms)
		s = fmtMS(stats.Median(ms))
		if len(ms) > 1 {
			s += fmt.Sprintf(" (%s–%s)", trimMS(lo), trimMS(hi))
		}
	}
	if failed > 0 {
		s += fmt.Sprintf(", %d run(s) never drained", failed)
	}
	return s
}

func trimMS(v float64) string { return strings.TrimSuffix(fmtMS(v), " ms") }
