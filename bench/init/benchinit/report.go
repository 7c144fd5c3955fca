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

// cmdReport turns a results directory written by bench/init/run into the
// tables docs/benchmarks.md copies (Markdown, on stdout) and, with -tsv, the
// medians of each init, one a line. The directory holds:
//
//	inits.tsv        name TAB path TAB version TAB `file -b` output TAB size in bytes
//	                 (one init per line, tini-static first)
//	meta.txt         free text lines for the header (machine, settings)
//	hyperfine*.json  hyperfine --export-json, commands named "true" and by init name
//	rss-NAME.jsonl   benchinit rss lines
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "results directory")
	tsv := fs.String("tsv", "", "also write the medians here, one init a line")
	fs.Parse(args)
	b, err := os.ReadFile(filepath.Join(*dir, "inits.tsv"))
	if err != nil {
		return err
	}
	hfFiles, _ := filepath.Glob(filepath.Join(*dir, "hyperfine*.json"))
	times, cpu, err := readHyperfine(hfFiles)
	if err != nil {
		return err
	}
	fmt.Print("### Init footprint and speed: baton vs tini-static, dumb-init, catatonit\n\n")
	if meta, err := os.ReadFile(filepath.Join(*dir, "meta.txt")); err == nil {
		fmt.Printf("%s  \n\n", strings.ReplaceAll(strings.TrimSpace(string(meta)), "\n", "  \n"))
	}
	base, ref := times["true"], times["tini-static"]
	ovh := func(xs []float64) float64 { return stats.Median(xs) - stats.Median(base) }
	fmt.Print("| init | binary size | linkage | RSS supervising `sleep` | anon + file | startup `INIT -- /bin/true` | overhead over `/bin/true` | overhead ÷ tini-static | raw time ÷ tini-static | CPU per start (user+sys) |\n" +
		"|---|--:|---|--:|--:|--:|--:|--:|--:|--:|\n")
	fmt.Printf("| `/bin/true` alone | | | | | %s | | | | %s |\n", fmtMS(stats.Median(base)), fmtMS(stats.Median(cpu["true"])))
	t := "init\tsize_bytes\trss_kb\trss_min_kb\trss_max_kb\tanon_kb\tfile_kb\tstartup_ms\toverhead_ms\toverhead_ratio\traw_ratio\tcpu_ms\n"
	var baton string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := append(strings.Split(l, "\t"), "", "", "", "")
		name, version, size := f[0], f[2], -1.0
		if n, err := strconv.ParseFloat(f[4], 64); err == nil {
			size = n
		}
		link := "?"
		switch {
		case strings.Contains(f[3], "statically linked"), strings.Contains(f[3], "static-pie linked"):
			link = "static"
		case strings.Contains(f[3], "dynamically linked"):
			link = "dynamic"
		}
		var rss, anon, file []float64
		for _, m := range readJSONL(filepath.Join(*dir, "rss-"+name+".jsonl")) {
			rss, anon, file = append(rss, m["vmrss_kb"]), append(anon, m["rss_anon_kb"]), append(file, m["rss_file_kb"])
		}
		st := times[name]
		lo, hi := stats.MinMax(rss)
		v := []float64{size, stats.Median(rss), lo, hi, stats.Median(anon), stats.Median(file), stats.Median(st), ovh(st),
			ovh(st) / ovh(ref), stats.Median(st) / stats.Median(ref), stats.Median(cpu[name])}
		t += name
		for _, x := range v {
			t += fmt.Sprintf("\t%.6g", x)
		}
		t += "\n"
		fmt.Printf("| **%s** %s | %s | %s | %s | %.0f + %.0f | %s | %s | %.2f× | %.2f× | %s |\n", name, version, fmtSize(size), link,
			fmtRSS(rss), v[4], v[5], fmtMS(v[6]), fmtMS(v[7]), v[8], v[9], fmtMS(v[10]))
		if name != "baton" {
			continue
		}
		check := func(ok bool) string {
			if ok {
				return "met"
			}
			return "**missed**"
		}
		baton = fmt.Sprintf("\n**baton against its targets**\n\n- size ≤ 6 MB: %s, %s — %s\n- RSS ≤ 8 MB (7812 kB): %s — %s\n"+
			"- startup ≤ 2.5× tini-static: overhead %.2f× — %s; raw time %.2f× — %s\n",
			fmtSize(size), link, check(size >= 0 && size <= 6e6), fmtRSS(rss), check(v[1] <= 8e6/1024), v[8], check(v[8] <= 2.5), v[9], check(v[9] <= 2.5))
		if sp := times["baton-spread"]; len(sp) > 0 {
			baton += fmt.Sprintf("- every signal subscribed before the first worker starts, threads held on one CPU meanwhile (internal/startup/onecpu): %s, raw time %.2f× tini-static; "+
				"the same build without the hold: %s, %.2f× (so the hold saves %s a start)\n",
				fmtMS(v[6]), v[9], fmtMS(stats.Median(sp)), stats.Median(sp)/stats.Median(ref), fmtMS(stats.Median(sp)-v[6]))
		}
	}
	fmt.Print("\nMedians; ranges are min–max over the runs. RSS is the init's VmRSS (RssAnon + RssFile) in kB as /proc reports it (1 kB = 1024 B); " +
		"sizes are 10^3/10^6 bytes. The CPU column is hyperfine's user+sys for a start, which includes `/bin/true`'s.\n" + baton)
	if *tsv != "" {
		return os.WriteFile(*tsv, []byte(t), 0o644)
	}
	return nil
}

// readHyperfine returns the run times (ms) of each named command and, per
// file, its mean CPU time (user+sys, ms).
func readHyperfine(paths []string) (times, cpu map[string][]float64, err error) {
	times, cpu = map[string][]float64{}, map[string][]float64{}
	if len(paths) == 0 {
		return nil, nil, errors.New("no hyperfine results")
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		var doc struct {
			Results []struct {
				Command      string
				User, System float64
				Times        []float64
			}
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range doc.Results {
			for _, t := range r.Times {
				times[r.Command] = append(times[r.Command], t*1000)
			}
			cpu[r.Command] = append(cpu[r.Command], (r.User+r.System)*1000)
		}
	}
	return times, cpu, nil
}

func readJSONL(path string) []map[string]float64 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]float64
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var m map[string]float64
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) < 10:
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func fmtSize(n float64) string {
	switch {
	case n < 0:
		return "?"
	case n < 1e6:
		return fmt.Sprintf("%.0f KB", n/1e3)
	}
	return fmt.Sprintf("%.2f MB", n/1e6)
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
