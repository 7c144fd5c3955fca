// Command soak runs many reloads under continuous load against a real baton
// and reports what is left of it: failed requests by kind, and baton's
// descriptors, RSS and the zombies in its namespace at the start, the middle
// and the end. test/soak/run builds it and baton and runs it, as root in a
// network namespace of its own; see there for the flags.
//
// It exits 1 if a request failed, a reload did not complete, baton holds
// more descriptors at the end than at the start, or a zombie remains; 2 on
// bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/demo"
	"github.com/baton-init/baton/internal/logread"
)

// swapTimeout bounds each wait on baton's log: a failure bound, never a
// reason to go on.
const swapTimeout = 30 * time.Second

func main() {
	baton := flag.String("baton", "", "baton binary (required)")
	reloads := flag.Int("reloads", 1000, "reloads to send, each after the previous swap completed")
	workers := flag.Int("workers", 2, "BATON_WORKERS")
	clients := flag.Int("clients", 32, "load clients (half keep-alive, no retries)")
	interval := flag.Duration("interval", 100*time.Millisecond, "load time between a completed swap and the next SIGHUP")
	handoff := flag.String("handoff", "shared", "BATON_HANDOFF: shared or steer")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: soak -baton PATH [-reloads N] [-workers N] [-clients N] [-interval DUR] [-handoff shared|steer]")
		flag.PrintDefaults()
	}
	flag.Parse()
	switch {
	case *baton == "":
		usage("-baton is required")
	case *reloads < 2:
		usage("-reloads wants at least 2 (there is a middle to measure)")
	case *workers < 1 || *clients < 1:
		usage("-workers and -clients want at least 1")
	case *interval < 0:
		usage("-interval wants a duration of 0 or more")
	case flag.NArg() > 0:
		usage(fmt.Sprintf("unexpected argument %q", flag.Arg(0)))
	case *handoff != "shared" && *handoff != "steer":
		usage(fmt.Sprintf("-handoff wants shared or steer, not %q", *handoff))
	}
	code, err := run(*baton, *reloads, *workers, *clients, *interval, *handoff)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
	}
	os.Exit(code)
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "soak:", msg)
	os.Exit(2)
}

// point is what baton looked like at one moment.
type point struct {
	name     string
	reloads  int
	fds      int
	rssKiB   int
	zombies  int
	requests int64 // so far
	failed   int64 // so far
}

func run(baton string, reloads, workers, clients int, interval time.Duration, handoff string) (int, error) {
	bin, err := filepath.Abs(baton)
	if err != nil {
		return 1, err
	}
	b, err := start(bin, workers, handoff)
	if err != nil {
		return 1, err
	}
	defer b.kill()
	addr, err := b.await("listener opened", func(e event) bool { return e.Addr != "" })
	if err != nil {
		return 1, err
	}
	if _, err := b.await("generation ready", func(e event) bool { return e.Message == "generation ready" }); err != nil {
		return 1, err
	}
	if err := b.quiet(workers); err != nil {
		return 1, fmt.Errorf("start-up: %w", err)
	}
	t0 := time.Now()
	var points []point
	points = append(points, b.measure("start", 0, nil))

	// The load is two runs of demo.Load, the second started before the
	// first is stopped at the middle: continuous, and counted per half.
	first := startLoad(addr.Addr, clients)
	var second *loadRun
	aborted := 0
	for i := 1; i <= reloads; i++ {
		gen := b.nextGen()
		if err := b.cmd.Process.Signal(unix.SIGHUP); err != nil {
			return 1, err
		}
		ev, err := b.await("swap complete or aborted", func(e event) bool {
			return e.Gen == gen && (e.Message == "swap complete" || e.Message == "swap aborted")
		})
		if err != nil {
			return 1, fmt.Errorf("reload %d: %w", i, err)
		}
		if ev.Message == "swap aborted" {
			aborted++
			fmt.Fprintf(os.Stderr, "soak: reload %d: swap of generation %d aborted: %s\n", i, gen, ev.Reason)
		}
		if i == reloads/2 {
			second = startLoad(addr.Addr, clients)
			r := first.stop()
			if err := b.quiet(workers); err != nil {
				return 1, fmt.Errorf("middle: %w", err)
			}
			points = append(points, b.measure("middle", i, []*demo.Result{r}))
		}
		if i%100 == 0 {
			// Taken on the fly (the retired generation may still drain):
			// a trend, not one of the table's points.
			p := b.measure("", i, nil)
			fmt.Fprintf(os.Stderr, "soak: %d of %d reloads, %v; baton: %d fds, RSS %.1f MiB\n",
				i, reloads, time.Since(t0).Round(time.Second), p.fds, float64(p.rssKiB)/1024)
		}
		if i < reloads {
			// Pacing: how long each generation serves under load, not a
			// wait for an event (the swap was awaited above).
			time.Sleep(interval)
		}
	}
	if err := b.quiet(workers); err != nil {
		return 1, fmt.Errorf("end: %w", err)
	}
	r2 := second.stop()
	end := b.measure("end", reloads, []*demo.Result{first.result, r2})
	points = append(points, end)
	elapsed := time.Since(t0)

	code, err := b.stop()
	if err != nil {
		return 1, err
	}
	total := merge(first.result, r2)
	answered := 0
	for g := 1; g <= b.maxGen(); g++ {
		if total.Generations[strconv.Itoa(g)] > 0 {
			answered++
		}
	}

	var fails []string
	if total.Failures > 0 {
		fails = append(fails, fmt.Sprintf("%d requests failed", total.Failures))
	}
	if aborted > 0 {
		fails = append(fails, fmt.Sprintf("%d swaps aborted", aborted))
	}
	for _, p := range points[1:] {
		if p.fds > points[0].fds {
			fails = append(fails, fmt.Sprintf("baton's descriptors grew from %d to %d (%s)", points[0].fds, p.fds, p.name))
		}
	}
	if end.zombies > 0 {
		fails = append(fails, fmt.Sprintf("%d zombies remain", end.zombies))
	}
	if code != 0 {
		fails = append(fails, fmt.Sprintf("baton exited %d after SIGTERM", code))
	}
	report(os.Stdout, points, total, reloads, aborted, answered, b.maxGen(), elapsed, code, fails)
	if len(fails) > 0 {
		return 1, nil
	}
	return 0, nil
}

func report(w io.Writer, points []point, total *demo.Result, reloads, aborted, answered, gens int, elapsed time.Duration, code int, fails []string) {
	fmt.Fprintln(w, "| point | reloads done | baton's fds | baton's RSS | zombies in its namespace | requests so far | failed so far |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, p := range points {
		req, failed := "–", "–"
		if p.name != "start" {
			req, failed = thousands(p.requests), thousands(p.failed)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %.1f MiB | %d | %s | %s |\n", p.name, p.reloads, p.fds, float64(p.rssKiB)/1024, p.zombies, req, failed)
	}
	fmt.Fprintln(w)
	var kinds []string
	for _, k := range demo.Kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, total.ByKind[k]))
	}
	fmt.Fprintf(w, "- %d reloads in %v (%d swaps complete, %d aborted); generations that answered: %d of %d\n",
		reloads, elapsed.Round(time.Second), reloads-aborted, aborted, answered, gens)
	fmt.Fprintf(w, "- %s requests, %d failed: %s (%d on a reused keep-alive connection)\n",
		thousands(total.Requests), total.Failures, strings.Join(kinds, ", "), total.Reused)
	fmt.Fprintf(w, "- baton's exit status after SIGTERM: %d\n", code)
	if len(fails) == 0 {
		fmt.Fprintln(w, "- result: **pass**")
	} else {
		fmt.Fprintf(w, "- result: **FAIL**: %s\n", strings.Join(fails, "; "))
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// merge adds up the results of the load's runs.
func merge(rs ...*demo.Result) *demo.Result {
	out := &demo.Result{ByKind: map[string]int64{}, Generations: map[string]int64{}}
	for _, r := range rs {
		out.Requests += r.Requests
		out.Failures += r.Failures
		out.Reused += r.Reused
		for k, v := range r.ByKind {
			out.ByKind[k] += v
		}
		for g, v := range r.Generations {
			out.Generations[g] += v
		}
	}
	return out
}

// loadRun is one demo.Load running until stopped.
type loadRun struct {
	cancel context.CancelFunc
	done   chan *demo.Result
	result *demo.Result
}

func startLoad(addr string, clients int) *loadRun {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadRun{cancel: cancel, done: make(chan *demo.Result, 1)}
	go func() {
		l.done <- demo.Load(ctx, demo.LoadConfig{Addr: addr, Clients: clients, KeepAlive: 0.5, Timeout: 5 * time.Second})
	}()
	return l
}

// stop ends the load and returns what it saw; the requests in flight
// finish first, each bounded by the load's 5 s timeout.
func (l *loadRun) stop() *demo.Result {
	l.cancel()
	l.result = <-l.done
	return l.result
}

// event is one JSON log line of baton's.
type event struct {
	Message string `json:"message"`
	Gen     int    `json:"gen"`
	PID     int    `json:"pid"`
	Addr    string `json:"addr"`
	Reason  string `json:"reason"`
}

// batonProc is the baton under test and what its log has said so far.
type batonProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	status int
	log    *logread.Log[event]
	cursor int // the events await has looked at

	mu       sync.Mutex   // guards what the log reader keeps below
	gen      int          // highest generation seen
	live     map[int]bool // pids of started workers not yet exited
	execd    map[int]bool // of those, the ones seen leaving the shim
	retiring map[int]bool
	tail     []string // baton's last lines, for errors
}

// start runs baton as PID 1 of a new PID namespace (as root; otherwise as
// a plain child, which then makes itself a subreaper), with baton hello
// workers on a loopback listener.
func start(bin string, workers int, handoff string) (*batonProc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--", bin, "hello")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "BATON_LISTEN=127.0.0.1:0", "BATON_WORKERS=" + strconv.Itoa(workers),
		"BATON_READY=notify", "BATON_LOG_FORMAT=json", "BATON_HANDOFF=" + handoff,
		// "worker left the shim" is a debug event.
		"BATON_LOG_LEVEL=debug"}
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWPID
	} else {
		fmt.Fprintln(os.Stderr, "soak: not root: baton runs as a plain child (a subreaper), not PID 1 of a namespace")
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	b := &batonProc{cmd: cmd, exited: make(chan struct{}), log: logread.New[event](0),
		live: map[int]bool{}, execd: map[int]bool{}, retiring: map[int]bool{}}
	go b.log.Read(r, b.parse, nil)
	go func() {
		err := cmd.Wait()
		b.status = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				b.status = 128 + int(ws.Signal())
			}
		}
		close(b.exited)
	}()
	return b, nil
}

// parse keeps the last lines and the workers' state as each line of
// baton's log is read, before waiters see its event.
func (b *batonProc) parse(line string, _ time.Time) (event, bool) {
	var e event
	ok := logread.JSON(line, &e) && e.Message != ""
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tail = append(b.tail[max(0, len(b.tail)-19):], line)
	if !ok {
		return e, false
	}
	b.gen = max(b.gen, e.Gen)
	switch e.Message {
	case "worker started":
		b.live[e.PID] = true
	case "worker left the shim":
		b.execd[e.PID] = true
	case "worker retiring":
		b.retiring[e.PID] = true
	case "worker exited":
		delete(b.live, e.PID)
		delete(b.execd, e.PID)
		delete(b.retiring, e.PID)
	}
	return e, true
}

// waitFor waits until cond holds (called with mu held), or fails after
// swapTimeout.
func (b *batonProc) waitFor(what string, cond func() bool) error {
	err := b.log.Wait(swapTimeout, nil, func([]event) (bool, error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return cond(), nil
	})
	return b.explain(what, err)
}

// explain turns a logread error into one naming what was awaited, with
// baton's last lines.
func (b *batonProc) explain(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, logread.ErrTimeout):
		return fmt.Errorf("no %s within %v; baton's last lines:\n%s", what, swapTimeout, b.tailText())
	}
	return fmt.Errorf("baton's log ended before %s; its last lines:\n%s", what, b.tailText())
}

// await waits for a log event that ok accepts, after the one the last
// await returned.
func (b *batonProc) await(what string, ok func(event) bool) (event, error) {
	e, err := b.log.Await(&b.cursor, swapTimeout, nil, func(e event) (bool, error) { return ok(e), nil })
	return e, b.explain(what, err)
}

// quiet waits until exactly n workers are live, out of the shim, and none
// is retiring: the last swap's old generation has drained and been reaped,
// and baton has closed the pipe it watched each new worker's exec by (it
// does so before it logs "worker left the shim"). No swap is pending then:
// every reload waits for its swap's end.
func (b *batonProc) quiet(n int) error {
	return b.waitFor(fmt.Sprintf("%d workers out of the shim and none retiring", n), func() bool {
		return len(b.live) == n && len(b.execd) == n && len(b.retiring) == 0
	})
}

func (b *batonProc) nextGen() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen + 1
}

func (b *batonProc) maxGen() int { return b.nextGen() - 1 }

func (b *batonProc) tailText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.tail, "\n")
}

// measure reads baton's descriptors, RSS and the zombies among its
// descendants (everything in its namespace) from /proc.
func (b *batonProc) measure(name string, reloads int, rs []*demo.Result) point {
	pid := b.cmd.Process.Pid
	p := point{name: name, reloads: reloads, fds: -1, rssKiB: -1}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		p.fds = len(ents)
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				p.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			}
		}
	}
	p.zombies = zombiesUnder(pid)
	for _, r := range rs {
		p.requests += r.Requests
		p.failed += r.Failures
	}
	return p
}

// zombiesUnder counts the zombies among pid's descendants.
func zombiesUnder(pid int) int {
	type proc struct {
		ppid  int
		state string
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// After "(comm)": state, ppid.
		i := strings.LastIndexByte(string(s), ')')
		var p proc
		if i < 0 {
			continue
		}
		if _, err := fmt.Sscanf(string(s[i+1:]), " %s %d", &p.state, &p.ppid); err == nil {
			procs[n] = p
		}
	}
	z := 0
	for _, p := range procs {
		if p.state != "Z" {
			continue
		}
		for a := p.ppid; a > 1; a = procs[a].ppid {
			if a == pid {
				z++
				break
			}
			if _, ok := procs[a]; !ok {
				break
			}
		}
	}
	return z
}

// stop sends SIGTERM and returns baton's exit status.
func (b *batonProc) stop() (int, error) {
	if err := b.cmd.Process.Signal(unix.SIGTERM); err != nil {
		return 0, err
	}
	select {
	case <-b.exited:
		return b.status, nil
	case <-time.After(swapTimeout):
		return 0, fmt.Errorf("baton did not exit within %v of SIGTERM", swapTimeout)
	}
}

// kill ends baton (and, as PID 1, its namespace) if it still runs.
func (b *batonProc) kill() {
	select {
	case <-b.exited:
	default:
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}
