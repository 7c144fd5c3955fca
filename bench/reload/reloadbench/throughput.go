package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/bench/internal/harness"
	"github.com/baton-init/baton/bench/internal/stats"
)

// throughputResult compares wrk through baton's held listener with the same
// worker binding the port itself.
type throughputResult struct {
	Kind     string    `json:"kind"` // "throughput"
	Command  string    `json:"wrk"`
	Order    []string  `json:"order"`
	Baton    []float64 `json:"baton_rps"`
	Alone    []float64 `json:"alone_rps"`
	AloneHow string    `json:"alone_listen"`
	MedBaton float64   `json:"median_baton_rps"`
	MedAlone float64   `json:"median_alone_rps"`
	Ratio    float64   `json:"ratio"` // MedBaton / MedAlone
	Errors   []string  `json:"wrk_errors,omitempty"`
}

func cmdThroughput(args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	baton := fs.String("baton", "", "the baton binary")
	wrk := fs.String("wrk", "wrk", "the wrk binary")
	reps := fs.Int("reps", 3, "measurements of each, alternating")
	dur := fs.Duration("duration", 5*time.Second, "each measurement")
	warm := fs.Duration("warmup", time.Second, "wrk run discarded before each measurement")
	threads := fs.Int("threads", 2, "wrk -t")
	conns := fs.Int("conns", 64, "wrk -c")
	out := fs.String("out", "", "result JSON file")
	verbose := fs.Bool("v", false, "forward the server's output to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *baton == "" || *out == "" || *reps < 1 {
		return errors.New("want -baton, -out and -reps >= 1")
	}
	r := &throughputResult{Kind: "throughput"}
	wrkArgs := func(addr string, d time.Duration) []string {
		return []string{"-t" + strconv.Itoa(*threads), "-c" + strconv.Itoa(*conns),
			"-d" + strconv.Itoa(max(int(d.Round(time.Second)/time.Second), 1)) + "s", "http://" + addr + "/"}
	}
	r.Command = *wrk + " " + strings.Join(wrkArgs("127.0.0.1:PORT", *dur), " ")

	for i := 0; i < *reps; i++ {
		for _, mode := range []string{"baton", "alone"} {
			rps, how, err := measure(mode, *baton, *wrk, wrkArgs, *dur, *warm, *verbose)
			if err != nil {
				return fmt.Errorf("%s #%d: %w", mode, i+1, err)
			}
			if how.errs != "" {
				r.Errors = append(r.Errors, mode+": "+how.errs)
			}
			r.Order = append(r.Order, mode)
			if mode == "baton" {
				r.Baton = append(r.Baton, rps)
			} else {
				r.Alone = append(r.Alone, rps)
				r.AloneHow = how.listen
			}
			fmt.Fprintf(os.Stderr, "  wrk %-5s #%d: %.0f req/s\n", mode, i+1, rps)
		}
	}
	r.MedBaton, r.MedAlone = stats.Median(r.Baton), stats.Median(r.Alone)
	if r.MedAlone > 0 {
		r.Ratio = r.MedBaton / r.MedAlone
	}
	fmt.Fprintf(os.Stderr, "  throughput: baton %.0f req/s, alone %.0f req/s, ratio %.3f\n", r.MedBaton, r.MedAlone, r.Ratio)
	return writeJSON(*out, r)
}

type measureInfo struct{ listen, errs string }

// defaultHelloAddr is where a standalone `baton hello` listens without $PORT
// (demo/hello.go).
const defaultHelloAddr = "127.0.0.1:8080"

func measure(mode, baton, wrk string, wrkArgs func(string, time.Duration) []string, dur, warm time.Duration, verbose bool) (float64, measureInfo, error) {
	var info measureInfo
	var argv, env []string
	var addr string
	switch mode {
	case "baton":
		var err error
		if addr, err = harness.FreeAddr(); err != nil {
			return 0, info, err
		}
		argv = []string{baton, "--", baton, "hello"}
		env = harness.CleanEnv("BATON_LISTEN="+addr, "BATON_WORKERS=1", "BATON_READY=notify",
			"BATON_LOG_FORMAT=json", "BATON_LOG_LEVEL=info")
		info.listen = "baton's socket, LISTEN_FDS"
	default:
		argv = []string{baton, "hello"}
		// hello's own fallback is 127.0.0.1:8080; with $PORT it binds
		// :$PORT (every interface), so use $PORT only when 8080 is taken.
		if ln, err := net.Listen("tcp", defaultHelloAddr); err == nil {
			ln.Close()
			addr = defaultHelloAddr
			env = harness.CleanEnv()
			info.listen = "its own socket, " + defaultHelloAddr + " (hello's fallback)"
		} else {
			var err error
			if addr, err = harness.FreeAddr(); err != nil {
				return 0, info, err
			}
			_, port, _ := strings.Cut(addr, ":")
			env = harness.CleanEnv("PORT=" + port)
			info.listen = "its own socket, :$PORT"
		}
	}
	srv, err := harness.Start(argv, env, harness.Options{Verbose: verbose})
	if err != nil {
		return 0, info, err
	}
	defer func() { _ = srv.Stop(15 * time.Second) }()
	if mode == "baton" {
		cur := 0
		if _, err := srv.Await(&cur, `"generation ready"`, 15*time.Second, harness.Message("generation ready", 0)); err != nil {
			return 0, info, err
		}
	} else if err := harness.PollUntil(15*time.Second, func() bool { return dials(addr) }); err != nil {
		return 0, info, err
	}
	if warm > 0 {
		if _, _, err := runWrk(wrk, wrkArgs(addr, warm)); err != nil {
			return 0, info, err
		}
	}
	rps, errs, err := runWrk(wrk, wrkArgs(addr, dur))
	info.errs = errs
	return rps, info, err
}

var (
	rpsRe  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	errsRe = regexp.MustCompile(`(?m)^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$`)
)

func runWrk(wrk string, args []string) (float64, string, error) {
	out, err := exec.Command(wrk, args...).CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %v\n%s", wrk, strings.Join(args, " "), err, out)
	}
	m := rpsRe.FindSubmatch(out)
	if m == nil {
		return 0, "", fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	rps, err := strconv.ParseFloat(string(m[1]), 64)
	var errs []string
	for _, e := range errsRe.FindAllSubmatch(out, -1) {
		errs = append(errs, strings.TrimSpace(string(e[1])))
	}
	return rps, strings.Join(errs, "; "), err
}

// dials reports whether a TCP connect to addr succeeds within 200 ms.
func dials(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err == nil
}
