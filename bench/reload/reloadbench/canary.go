package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/baton-init/baton/bench/internal/harness"
)

// config is one way of reloading.
type config struct {
	name string
	env  []string
}

func configs(canary, bake string) []config {
	return []config{
		{"plain", nil},
		{"canary", []string{"BATON_CANARY=" + canary}},
		{"bake", []string{"BATON_BAKE=" + bake}},
		{"both", []string{"BATON_CANARY=" + canary, "BATON_BAKE=" + bake}},
	}
}

// cmdCanary measures what BATON_CANARY and BATON_BAKE cost next to a plain
// steer-mode reload (bench/canary/run): one JSON file per worker kind and
// configuration.
func cmdCanary(args []string) int {
	fs := flag.NewFlagSet("canary", flag.ExitOnError)
	out := fs.String("out", "", "directory for the results (one JSON file per measurement)")
	run := fs.Int("run", 1, "run number (file names)")
	batonHello := fs.String("baton-hello", "", "baton binary for the hello measurements (baton and its workers)")
	batonGunicorn := fs.String("baton-gunicorn", "", "baton binary for the gunicorn measurements (a copy: no page shared with the hello ones)")
	gunicornDir := fs.String("gunicorn-dir", "", "test/workers/gunicorn (gunicorn.conf.py, app.py)")
	gunicorn := fs.String("gunicorn", "/usr/bin/gunicorn", "gunicorn")
	canary := fs.String("canary", "10%:5s,50%:5s", "BATON_CANARY of the canary configurations")
	bake := fs.Duration("bake", 10*time.Second, "BATON_BAKE of the bake configurations")
	kinds := fs.String("kinds", "hello,gunicorn", "worker kinds")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "load before the baseline window")
	baseline := fs.Duration("baseline", time.Second, "baseline window before the reload")
	tail := fs.Duration("tail", 500*time.Millisecond, "sampling after the old generation is gone")
	stagger := fs.Duration("stagger", time.Second, "side-by-side measurements: the second reload waits until the first's new generation is ready plus this")
	clients := fs.Int("clients", 4, "load clients")
	rate := fs.Float64("rate", 25, "requests per second per client, each on a new connection")
	keep := fs.Bool("keep", false, "keep baton's raw output next to the results")
	verbose := fs.Bool("v", false, "log each step")
	_ = fs.Parse(args)
	if *out == "" || *batonHello == "" || *batonGunicorn == "" || *gunicornDir == "" {
		fmt.Fprintln(os.Stderr, "reloadbench canary run: -out, -baton-hello, -baton-gunicorn and -gunicorn-dir are required")
		return 2
	}
	logf := func(f string, a ...any) {
		if *verbose {
			fmt.Fprintf(os.Stderr, "[reloadbench canary] "+f+"\n", a...)
		}
	}
	steps, err := parseCanary(*canary)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reloadbench canary: -canary: %v\n", err)
		return 2
	}
	mk := func(kind string, c config, gate *sync.Mutex) (canarySpec, error) {
		addr, err := harness.FreeAddr()
		if err != nil {
			return canarySpec{}, err
		}
		sp := canarySpec{Kind: kind, Config: c.name, Run: *run, Addr: addr, Warmup: *warmup, Baseline: *baseline, Tail: *tail,
			Stagger: *stagger, Clients: *clients, Rate: *rate, Gate: gate, Expect: 30 * time.Second}
		for _, kv := range c.env {
			if strings.HasPrefix(kv, "BATON_CANARY=") {
				sp.Expect += steps
			}
			if strings.HasPrefix(kv, "BATON_BAKE=") {
				sp.Expect += *bake
			}
		}
		common := []string{"BATON_LISTEN=" + addr, "BATON_READY=notify", "BATON_HANDOFF=steer", "BATON_LOG_FORMAT=json"}
		switch kind {
		case "hello":
			sp.Baton, sp.Workers, sp.Procs = *batonHello, 4, 1
			sp.Argv = []string{*batonHello, "--", *batonHello, "hello"}
			sp.Env = append(append(common, "BATON_WORKERS=4"), c.env...)
		case "gunicorn":
			// As test/thirdparty_test.go runs it: one baton worker, the
			// gunicorn arbiter, which forks GUNICORN_WORKERS sync workers.
			sp.Baton, sp.Workers, sp.Procs = *batonGunicorn, 1, 5
			sp.Argv = []string{*batonGunicorn, "--", *gunicorn, "--config", filepath.Join(*gunicornDir, "gunicorn.conf.py"),
				"--chdir", *gunicornDir, "app:app"}
			sp.Env = append(append(common, "BATON_WORKERS=1", "GUNICORN_WORKERS=4", "GUNICORN_LOGLEVEL=warning",
				"PYTHONDONTWRITEBYTECODE=1"), c.env...)
		default:
			return canarySpec{}, fmt.Errorf("unknown worker kind %q", kind)
		}
		if *keep {
			sp.Raw = filepath.Join(*out, fmt.Sprintf("%s-%s-%d.log", kind, c.name, *run))
		}
		return sp, nil
	}
	one := func(sp canarySpec) error {
		t := time.Now()
		res, err := measureCanary(sp, logf)
		b, _ := json.MarshalIndent(res, "", " ")
		path := filepath.Join(*out, fmt.Sprintf("%s-%s-%d.json", sp.Kind, sp.Config, sp.Run))
		if werr := os.WriteFile(path, b, 0o644); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			return fmt.Errorf("%s/%s run %d: %w", sp.Kind, sp.Config, sp.Run, err)
		}
		logf("%s/%s run %d: done in %.1f s (outcome %.2f s, %d requests, %d failed)",
			sp.Kind, sp.Config, sp.Run, time.Since(t).Seconds(), res.Outcome, res.Requests, res.Failed)
		return nil
	}

	ks := strings.Split(*kinds, ",")
	var failed []string
	for _, c := range configs(*canary, bake.String()) {
		if c.name == "plain" {
			// Short: one at a time, nothing else running.
			for _, k := range ks {
				sp, err := mk(k, c, nil)
				if err == nil {
					err = one(sp)
				}
				if err != nil {
					failed = append(failed, err.Error())
				}
			}
			continue
		}
		// Long (seconds of canary or bake): the kinds side by side, their
		// reloads staggered.
		var gate sync.Mutex
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, k := range ks {
			sp, err := mk(k, c, &gate)
			if err != nil {
				failed = append(failed, err.Error())
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := one(sp); err != nil {
					mu.Lock()
					failed = append(failed, err.Error())
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	harness.StopAll(10 * time.Second)
	if len(failed) > 0 {
		for _, f := range failed {
			fmt.Fprintf(os.Stderr, "reloadbench canary: %s\n", f)
		}
		return 1
	}
	return 0
}

// parseCanary returns the total duration of a BATON_CANARY value.
func parseCanary(s string) (time.Duration, error) {
	var total time.Duration
	for _, st := range strings.Split(s, ",") {
		_, d, ok := strings.Cut(st, ":")
		if !ok {
			return 0, fmt.Errorf("%q: want PERCENT:DURATION", st)
		}
		v, err := time.ParseDuration(d)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}
