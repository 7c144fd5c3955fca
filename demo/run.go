package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/internal/logread"
)

// demoOptions are Run's flags plus what tests need to change.
type demoOptions struct {
	reloads   int
	clients   int
	keepAlive float64
	interval  time.Duration
	verbose   bool
	handoff   string // BATON_HANDOFF
	drain     string // HELLO_DRAIN, "" for hello's own default
	bind      string // BATON_BIND: "" or "intercept"

	self        string        // the baton binary
	env         []string      // appended to baton's environment (tests)
	startWait   time.Duration // for the first generation to be ready
	swapWait    time.Duration // for each swap to complete
	stopWait    time.Duration // for baton to exit after SIGTERM
	killWait    time.Duration // on an error path, after SIGTERM before SIGKILL
	workers     int
	tailLines   int // baton output lines kept for a failure report
	loadTimeout time.Duration
}

func defaultDemoOptions() demoOptions {
	return demoOptions{
		reloads:     5,
		clients:     16,
		keepAlive:   0.5,
		interval:    300 * time.Millisecond,
		startWait:   10 * time.Second,
		swapWait:    10 * time.Second,
		stopWait:    15 * time.Second, // baton's own BATON_STOP_TIMEOUT is 8 s
		killWait:    5 * time.Second,
		workers:     2,
		tailLines:   40,
		loadTimeout: 5 * time.Second,
	}
}

const demoUsage = `usage: baton demo [-reloads N] [-clients N] [-keepalive F] [-interval D] [-handoff shared|steer] [-drain D] [-bind intercept] [-v]

Starts baton (this binary) with two "baton hello" workers per generation on
127.0.0.1 (a free port), sends it SIGHUP N times under load from clients that
never retry, waiting for each swap to complete, then stops it with SIGTERM and
reports what the clients saw. Exit status 0 if no request failed.

-drain 0 makes the workers drain the way most apps do (stop at once on
SIGTERM, closing idle connections); with -handoff steer baton then still
loses no request, and only the keep-alive close races of the workers'
own making remain (a client retry covers them), so the demo then passes
when no request failed on a fresh connection. Try both handoffs:
  baton demo -drain 0 -handoff shared
  baton demo -drain 0 -handoff steer

-bind intercept runs the workers as an unchanged app (HELLO_UNCHANGED=1:
they bind the port themselves and never send READY=1) under
BATON_BIND=intercept, which gives them baton's socket; the handoff is
then steer unless -handoff says otherwise. Add -drain 0 for an app that
also dies at once on SIGTERM.

`

// Run runs `baton demo` with args (the arguments after "demo") and returns
// its exit status: 0 when every reload completed, no request failed and
// baton exited 0; 1 otherwise; 2 for a usage error. The report goes to
// stdout; errors, and with -v baton's own output, go to stderr.
//
// baton runs in its own process group; on every error path it is sent
// SIGTERM, then SIGKILL, and so are the workers its log announced, so the
// demo leaves no process behind.
func Run(args []string, stdout, stderr io.Writer) int {
	o := defaultDemoOptions()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), demoUsage)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.reloads, "reloads", o.reloads, "number of reloads (SIGHUP)")
	fs.IntVar(&o.clients, "clients", o.clients, "concurrent clients")
	fs.Float64Var(&o.keepAlive, "keepalive", o.keepAlive, "fraction of clients that use keep-alive")
	fs.DurationVar(&o.interval, "interval", o.interval, "load time before the first reload, between reloads and after the last")
	fs.BoolVar(&o.verbose, "v", false, "forward baton's output (its JSON log and the workers' lines) to stderr")
	fs.StringVar(&o.handoff, "handoff", "shared", "BATON_HANDOFF: shared or steer")
	fs.StringVar(&o.drain, "drain", "", "the workers' grace after SIGTERM (HELLO_DRAIN; default hello's 500ms, 0: none)")
	fs.StringVar(&o.bind, "bind", "", "BATON_BIND=intercept: the workers bind the port themselves, as an unchanged app")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	case o.reloads < 0 || o.clients < 1 || o.keepAlive < 0 || o.keepAlive > 1 || o.interval <= 0:
		fmt.Fprintln(stderr, "demo: want -reloads >= 0, -clients >= 1, 0 <= -keepalive <= 1, -interval > 0")
		return 2
	case o.handoff != "shared" && o.handoff != "steer":
		fmt.Fprintf(stderr, "demo: -handoff wants shared or steer, got %q\n", o.handoff)
		return 2
	case o.bind != "" && o.bind != "intercept":
		fmt.Fprintf(stderr, "demo: -bind wants intercept, got %q\n", o.bind)
		return 2
	}
	if o.drain != "" {
		if d, err := time.ParseDuration(o.drain); (err != nil && o.drain != "0") || d < 0 {
			fmt.Fprintf(stderr, "demo: -drain wants a duration like 500ms or 0, got %q\n", o.drain)
			return 2
		}
		o.env = append(o.env, "HELLO_DRAIN="+o.drain)
	}
	handoffSet := false
	fs.Visit(func(f *flag.Flag) { handoffSet = handoffSet || f.Name == "handoff" })
	if o.bind == "" || handoffSet {
		o.env = append(o.env, "BATON_HANDOFF="+o.handoff) // else intercept's default, steer
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "demo: cannot find baton's own binary: %v\n", err)
		return 1
	}
	o.self = self
	return runDemo(o, stdout, stderr)
}

// batonEvent is one line of baton's JSON log (docs/pid1.md, "Logs").
type batonEvent struct {
	Message string  `json:"message"`
	Gen     flexInt `json:"gen"`
	Worker  flexInt `json:"worker"`
	PID     flexInt `json:"pid"`
	Code    flexInt `json:"code"`
	Addr    string  `json:"addr"`
	Name    string  `json:"name"`
	Elapsed float64 `json:"elapsed"` // milliseconds
	Reason  string  `json:"reason"`
	Error   string  `json:"error"`
	Err     string  `json:"err"`
}

// flexInt accepts a JSON number or a numeric string.
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	*f = flexInt(n)
	return nil
}

// demoRun is the state of one demonstration.
type demoRun struct {
	o      demoOptions
	stdout io.Writer
	stderr *lockedWriter

	cmd    *exec.Cmd
	exited chan struct{} // closed when baton was waited for
	state  *os.ProcessState
	out    *lineQueue
	intr   chan os.Signal

	addr string
}

type swapReport struct {
	gen        int
	took       time.Duration // SIGHUP to "swap complete", as the demo saw it
	batonTook  time.Duration // baton's own elapsed
	hup, ready time.Time
}

func runDemo(o demoOptions, stdout, stderr io.Writer) int {
	d := &demoRun{
		o:      o,
		stdout: stdout,
		stderr: &lockedWriter{w: stderr},
		exited: make(chan struct{}),
		intr:   make(chan os.Signal, 1),
	}
	// baton is in its own process group, so a Ctrl-C reaches only us:
	// turn it into an orderly failure that stops baton too.
	signal.Notify(d.intr, unix.SIGINT, unix.SIGTERM)
	defer signal.Stop(d.intr)

	if err := d.start(); err != nil {
		return d.fail(err, nil)
	}
	res, swaps, err := d.script()
	if err != nil {
		d.terminate()
		return d.fail(err, res)
	}
	stopErr := d.stop()
	if stopErr != nil {
		d.terminate()
	}
	return d.report(res, swaps, stopErr)
}

// start starts baton: `<self> -- <self> hello`, in its own process group,
// its stdout and stderr (and its workers', which inherit them) on one pipe
// that lineQueue reads.
func (d *demoRun) start() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	d.cmd = exec.Command(d.o.self, "--", d.o.self, "hello")
	d.cmd.Env = append(batonEnv(os.Environ(), d.o.workers), d.o.env...)
	if d.o.bind == "intercept" {
		// The unchanged workers bind the port themselves, so they must
		// know it: a free one, chosen here, not baton's ":0".
		port, err := freePort()
		if err != nil {
			return err
		}
		d.cmd.Env = append(d.cmd.Env, "BATON_LISTEN=127.0.0.1:"+port, "BATON_BIND=intercept", "BATON_READY=listen",
			"HELLO_UNCHANGED=1", "PORT="+port) // the last of a name wins (os/exec)
	}
	// stdout too: workers' lines are forwarded with -v and kept for a
	// failure report, and a *os.File needs no copying goroutine.
	d.cmd.Stdout, d.cmd.Stderr = w, w
	// Own process group: our terminal's Ctrl-C reaches only the demo, which
	// then stops baton in order. Pdeathsig: should the demo itself be
	// killed (SIGKILL, no cleanup), baton gets SIGTERM and stops its
	// workers. (It fires when the forking thread exits; Go only ends a
	// thread when a goroutine exits while locked to it, which the demo
	// never does.)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	err = d.cmd.Start()
	w.Close() // baton and its workers hold the write end now
	if err != nil {
		r.Close()
		return fmt.Errorf("start %s: %w", d.o.self, err)
	}
	var forward io.Writer
	if d.o.verbose {
		forward = d.stderr
	}
	d.out = newLineQueue(r, forward, d.o.tailLines)
	go func() {
		// Process.Wait only: the pipe is read by lineQueue, so nothing
		// here waits for the workers to close their copies of it.
		d.state, _ = d.cmd.Process.Wait()
		close(d.exited)
	}()
	return nil
}

// freePort is a TCP port of 127.0.0.1 the kernel just gave and took back.
// Another process could take it before baton does; baton then fails to
// start and says so.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// batonEnv is the demo's environment for baton: ours without any BATON_*,
// LISTEN_* or NOTIFY_SOCKET (the demo may itself run under baton), plus the
// demo's configuration.
func batonEnv(environ []string, workers int) []string {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "BATON_") || strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"BATON_LISTEN=127.0.0.1:0",
		"BATON_WORKERS="+strconv.Itoa(workers),
		"BATON_READY=notify",
		"BATON_LOG_LEVEL=info",
		"BATON_LOG_FORMAT=json",
	)
}

// script is the demonstration proper. On error the load is already stopped
// and its result (if any) returned; baton still runs.
func (d *demoRun) script() (*Result, []swapReport, error) {
	ev, err := d.await("listener opened", d.o.startWait, func(e batonEvent) bool { return e.Addr != "" })
	if err != nil {
		return nil, nil, err
	}
	d.addr = ev.Addr
	if _, err := d.await("generation ready", d.o.startWait, func(e batonEvent) bool { return e.Gen == 1 }); err != nil {
		return nil, nil, err
	}
	keep := int(d.o.keepAlive*float64(d.o.clients) + 0.5)
	workers := "hello workers"
	if d.o.bind == "intercept" {
		workers = "unchanged hello workers (each binds the port itself; BATON_BIND=intercept)"
	}
	fmt.Fprintf(d.stdout, "baton demo: baton (pid %d) holds %s, %d %s per generation; generation 1 ready\n",
		d.cmd.Process.Pid, d.addr, d.o.workers, workers)
	fmt.Fprintf(d.stdout, "load: %d clients (%d keep-alive, %d with a new connection per request), no retries\n",
		d.o.clients, keep, d.o.clients-keep)

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	results := make(chan *Result, 1)
	go func() {
		results <- Load(ctx, LoadConfig{Addr: d.addr, Clients: d.o.clients, KeepAlive: d.o.keepAlive,
			Timeout: d.o.loadTimeout, Record: true})
	}()
	finish := func() *Result { stopLoad(); return <-results }

	var swaps []swapReport
	if err := d.idle(d.o.interval); err != nil {
		return finish(), swaps, err
	}
	gen := 1
	for i := 1; i <= d.o.reloads; i++ {
		s := swapReport{hup: time.Now()}
		if err := d.cmd.Process.Signal(unix.SIGHUP); err != nil {
			return finish(), swaps, fmt.Errorf("reload %d: SIGHUP: %w", i, err)
		}
		ev, err := d.await("swap complete", d.o.swapWait, func(e batonEvent) bool { return int(e.Gen) > gen })
		if err != nil {
			return finish(), swaps, fmt.Errorf("reload %d: %w", i, err)
		}
		s.ready = time.Now()
		s.gen, s.took = int(ev.Gen), s.ready.Sub(s.hup)
		s.batonTook = time.Duration(ev.Elapsed * float64(time.Millisecond))
		gen = s.gen
		swaps = append(swaps, s)
		fmt.Fprintf(d.stdout, "reload %d: SIGHUP -> generation %d took over in %v (baton: %v)\n",
			i, s.gen, s.took.Round(100*time.Microsecond), s.batonTook.Round(100*time.Microsecond))
		// Load on, while the old generation drains and the new one serves.
		if err := d.idle(d.o.interval); err != nil {
			return finish(), swaps, err
		}
	}
	return finish(), swaps, nil
}

// errBatonExited is returned when baton exits while the demo waits for it
// to do something else.
var errBatonExited = errors.New("baton exited")

// await consumes baton's events until one named msg satisfies ok, and
// returns it. A "swap aborted", baton's exit, an interrupt or the timeout
// end the wait with an error.
func (d *demoRun) await(msg string, timeout time.Duration, ok func(batonEvent) bool) (batonEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ev, err := d.next(t.C)
		if err != nil {
			if errors.Is(err, errTimeout) {
				return ev, fmt.Errorf("no %q from baton within %v", msg, timeout)
			}
			return ev, err
		}
		if ev.Message == msg && ok(ev) {
			return ev, nil
		}
	}
}

var errTimeout = errors.New("timeout")

// idle consumes baton's events for dur, failing on the same conditions as
// await.
func (d *demoRun) idle(dur time.Duration) error {
	t := time.NewTimer(dur)
	defer t.Stop()
	for {
		if _, err := d.next(t.C); err != nil {
			if errors.Is(err, errTimeout) {
				return nil
			}
			return err
		}
	}
}

// next returns baton's next event; a "swap aborted" is an error.
func (d *demoRun) next(timeout <-chan time.Time) (batonEvent, error) {
	for {
		if ev, ok := d.out.pop(); ok {
			if ev.Message == "swap aborted" {
				return ev, fmt.Errorf("baton aborted the swap to generation %d: %s", ev.Gen, ev.Reason)
			}
			return ev, nil
		}
		select {
		case <-d.out.more:
		case <-d.exited:
			// Let the reader catch up with what baton wrote before it
			// exited (a reason is more useful than "it exited"). EOF
			// comes at once unless workers outlive baton.
			d.out.settle(200 * time.Millisecond)
			if d.out.pending() {
				continue
			}
			return batonEvent{}, fmt.Errorf("%w (%s)", errBatonExited, exitText(d.state))
		case sig := <-d.intr:
			return batonEvent{}, fmt.Errorf("interrupted by %s", sigName(sig))
		case <-timeout:
			return batonEvent{}, errTimeout
		}
	}
}

// stop sends SIGTERM and waits for baton to exit on its own.
func (d *demoRun) stop() error {
	if err := d.cmd.Process.Signal(unix.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	t := time.NewTimer(d.o.stopWait)
	defer t.Stop()
	for {
		if _, err := d.next(t.C); err != nil {
			switch {
			case errors.Is(err, errBatonExited):
				d.reapWorkers()
				return nil
			case errors.Is(err, errTimeout):
				return fmt.Errorf("baton still running %v after SIGTERM", d.o.stopWait)
			}
			return err
		}
	}
}

// terminate stops baton on an error path: SIGTERM, SIGKILL to its process
// group if it is still there after killWait, then SIGKILL to every worker
// its log announced and did not report gone (each in its own group).
func (d *demoRun) terminate() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Signal(unix.SIGTERM) // it may be gone already
		t := time.NewTimer(d.o.killWait)
		select {
		case <-d.exited:
		case <-t.C:
			_ = unix.Kill(-d.cmd.Process.Pid, unix.SIGKILL) // whole group; ESRCH is fine
			<-d.exited
		}
		t.Stop()
	}
	d.reapWorkers()
}

// reapWorkers makes sure no worker outlives the demo, once baton has
// exited. The workers share baton's stderr pipe, so EOF on it means they are
// all gone. Otherwise every worker whose start baton logged and whose exit
// it did not gets SIGKILL, to its process group (each worker has its own)
// and to itself; ESRCH just means it is gone.
func (d *demoRun) reapWorkers() {
	d.out.settle(500 * time.Millisecond)
	if d.out.done() {
		return
	}
	live := d.out.liveWorkers()
	for pid := range live {
		_ = unix.Kill(-pid, unix.SIGKILL)
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	// SIGKILL is asynchronous: wait until each has really exited.
	deadline := time.Now().Add(2 * time.Second)
	for pid := range live {
		waitGone(pid, time.Until(deadline))
	}
	d.out.settle(time.Until(deadline))
}

// waitGone waits, at most d, until process pid has exited (a zombie counts
// as exited), with a pidfd, which works for processes that are not our
// children.
func waitGone(pid int, d time.Duration) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // ESRCH: already gone (or no pidfd support: nothing to wait with)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
			return
		}
	}
}

func (d *demoRun) fail(err error, res *Result) int {
	fmt.Fprintf(d.stdout, "FAIL: %v\n", err)
	if res != nil {
		fmt.Fprintf(d.stdout, "(load so far: %d requests, %d failed)\n", res.Requests, res.Failures)
	}
	if d.out != nil && !d.o.verbose {
		if tail := d.out.tailLines(); len(tail) > 0 {
			fmt.Fprintf(d.stderr, "last lines from baton:\n%s\n", strings.Join(tail, "\n"))
		}
	}
	return 1
}

func (d *demoRun) report(res *Result, swaps []swapReport, stopErr error) int {
	w := d.stdout
	code := -1
	if stopErr == nil {
		code = d.state.ExitCode()
		fmt.Fprintf(w, "baton: %s after SIGTERM\n", exitText(d.state))
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "requests     %d in %v (%.0f/s)\n", res.Requests, res.Elapsed.Round(time.Millisecond),
		float64(res.Requests)/res.Elapsed.Seconds())
	var kinds []string
	for _, k := range Kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, res.ByKind[k]))
	}
	fmt.Fprintf(w, "failures     %d (%s)\n", res.Failures, strings.Join(kinds, ", "))
	if res.Failures > 0 {
		fmt.Fprintf(w, "             %d on a reused keep-alive connection, %d on a fresh one\n",
			res.Reused, res.Failures-res.Reused)
	}
	for _, k := range Kinds {
		if msg := res.Errors[k]; msg != "" {
			fmt.Fprintf(w, "             %s, e.g.: %s\n", k, msg)
		}
	}
	gens := sortedGens(res.Generations)
	var parts []string
	for _, g := range gens {
		parts = append(parts, fmt.Sprintf("%s: %d", g, res.Generations[g]))
	}
	fmt.Fprintf(w, "generations  %s\n", strings.Join(parts, "  "))
	fmt.Fprintf(w, "latency      p50 %v  p99 %v  p99.9 %v  max %v\n",
		res.Percentile(50, 0, 0).Round(time.Microsecond), res.Percentile(99, 0, 0).Round(time.Microsecond),
		res.Percentile(99.9, 0, 0).Round(time.Microsecond), res.Percentile(100, 0, 0).Round(time.Microsecond))
	if len(swaps) > 0 {
		// From each SIGHUP until one interval after its swap completed:
		// the new generation's start and the old one's drain.
		var p99s []string
		for _, s := range swaps {
			from, to := s.hup.Sub(res.Start), s.ready.Sub(res.Start)+d.o.interval
			p99s = append(p99s, res.Percentile(99, from, to).Round(10*time.Microsecond).String())
		}
		fmt.Fprintf(w, "p99 by swap  %s\n", strings.Join(p99s, "  "))
	}
	fmt.Fprintln(w)

	var why []string
	if stopErr != nil {
		why = append(why, stopErr.Error())
	} else if code != 0 {
		why = append(why, "baton "+exitText(d.state))
	}
	switch hard := res.Failures - res.Reused; {
	case d.o.drain == "0" && hard > 0:
		why = append(why, fmt.Sprintf("%d of %d requests failed on a fresh connection", hard, res.Requests))
	case d.o.drain != "0" && res.Failures > 0:
		why = append(why, fmt.Sprintf("%d of %d requests failed", res.Failures, res.Requests))
	}
	for g := 1; g <= len(swaps)+1; g++ {
		if res.Generations[strconv.Itoa(g)] == 0 {
			why = append(why, fmt.Sprintf("generation %d never answered", g))
		}
	}
	if len(why) > 0 {
		fmt.Fprintf(w, "FAIL: %s (%d reloads, %d requests)\n", strings.Join(why, "; "), len(swaps), res.Requests)
		return 1
	}
	if res.Failures > 0 {
		fmt.Fprintf(w, "OK: %d reloads, %d requests, 0 failed on a fresh connection; %d keep-alive close races, the workers' own (-drain 0)\n",
			len(swaps), res.Requests, res.Reused)
		return 0
	}
	fmt.Fprintf(w, "OK: %d reloads, %d requests, 0 failed\n", len(swaps), res.Requests)
	return 0
}

func sortedGens(m map[string]int64) []string {
	gens := make([]string, 0, len(m))
	for g := range m {
		gens = append(gens, g)
	}
	slices.SortFunc(gens, func(a, b string) int {
		x, errx := strconv.Atoi(a)
		y, erry := strconv.Atoi(b)
		if errx != nil || erry != nil {
			return strings.Compare(a, b)
		}
		return x - y
	})
	return gens
}

func exitText(ps *os.ProcessState) string {
	if ps == nil {
		return "exit status unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + sigName(ws.Signal())
	}
	return fmt.Sprintf("exited with code %d", ps.ExitCode())
}

// lockedWriter serialises writes from the demo and from the output reader.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lineQueue reads baton's output without ever blocking it: a PID 1 that
// blocks on a full stderr pipe stops reaping and forwarding. Lines are
// parsed into events (internal/logread, which the bench and the soak read
// baton's log with too), forwarded when verbose, and the last few kept for
// a failure report; the demo takes the events in order.
type lineQueue struct {
	log  *logread.Log[batonEvent]
	next int             // the event pop returns next
	more <-chan struct{} // receives when something was read
	eof  chan struct{}

	mu      sync.Mutex
	tail    []string
	keep    int
	live    map[int]bool // worker pids started and not exited, from every line read
	forward io.Writer
}

func newLineQueue(r io.ReadCloser, forward io.Writer, keep int) *lineQueue {
	q := &lineQueue{log: logread.New[batonEvent](0), keep: keep, live: make(map[int]bool),
		eof: make(chan struct{}), forward: forward}
	q.more = q.log.More()
	go func() {
		defer close(q.eof)
		q.log.Read(r, q.parse, q.each)
	}()
	return q
}

// each forwards and keeps every line, baton's and its workers'.
func (q *lineQueue) each(line string, _ time.Time) {
	if q.forward != nil {
		_, _ = io.WriteString(q.forward, line+"\n") // a broken stderr only loses the copy
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.tail = append(q.tail, line)
	if len(q.tail) > q.keep {
		q.tail = q.tail[len(q.tail)-q.keep:]
	}
}

// parse takes baton's JSON lines as events, and follows its workers.
func (q *lineQueue) parse(line string, _ time.Time) (batonEvent, bool) {
	var ev batonEvent
	if !logread.JSON(line, &ev) || ev.Message == "" {
		return ev, false // a worker's own line, or not baton's JSON
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	switch ev.Message {
	case "worker started":
		q.live[int(ev.PID)] = true
	case "worker exited":
		delete(q.live, int(ev.PID))
	}
	return ev, true
}

func (q *lineQueue) pop() (batonEvent, bool) {
	evs := q.log.From(q.next)
	if len(evs) == 0 {
		return batonEvent{}, false
	}
	q.next++
	return evs[0], true
}

func (q *lineQueue) pending() bool { return len(q.log.From(q.next)) > 0 }

// settle waits for EOF on the output (every holder of the pipe, baton and
// its workers, has closed it), at most d.
func (q *lineQueue) settle(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-q.eof:
	case <-t.C:
	}
}

func (q *lineQueue) done() bool {
	select {
	case <-q.eof:
		return true
	default:
		return false
	}
}

func (q *lineQueue) liveWorkers() map[int]bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.live)
}

func (q *lineQueue) tailLines() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.tail)
}
