// Command baton is a PID 1 for containers: it reaps zombies, forwards
// signals, supervises a pool of workers and holds their listening sockets,
// so that a reload signal swaps in a new worker generation without
// refusing, resetting or losing a request.
//
// main is the composition root: it reads the configuration, builds the
// logger, opens the listeners, subscribes to signals and runs the one event
// loop (supervisor.Supervisor). It is the only place that exits.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/demo"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/internal/clip"
	"github.com/baton-init/baton/reaper"
	"github.com/baton-init/baton/reaper/onecpu"
	"github.com/baton-init/baton/reaper/oneproc"
	"github.com/baton-init/baton/spawn"
	"github.com/baton-init/baton/supervisor"
	"github.com/baton-init/baton/watch"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit statuses of baton itself (a worker's status is passed through).
const (
	exitUsage = 2 // bad configuration or command line: nothing was started
)

// subcommands are the first arguments baton keeps for itself; anything
// else, and anything after --, is the user's command.
var subcommands = map[string]string{
	"reload": "reload", "health": "health", "hello": "hello", "demo": "demo",
	"version": "version", "--version": "version", "help": "help", "--help": "help", "-h": "help",
}

func main() {
	// The worker shim must do nothing else before it execs.
	if len(os.Args) > 0 && os.Args[0] == spawn.ShimName {
		os.Exit(spawn.Shim(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		stderrf("baton: no command given (usage: baton [--] COMMAND [ARG...]; see baton help)")
		return exitUsage
	}
	if args[0] == "--" {
		return supervise(args[1:])
	}
	switch subcommands[args[0]] {
	case "version":
		fmt.Println("baton", version)
		return 0
	case "help":
		writeHelp(os.Stdout)
		return 0
	case "reload":
		return cmdReload(args[1:])
	case "health":
		return cmdHealth(args[1:])
	case "hello":
		restoreProcs()
		return demo.Hello(args[1:])
	case "demo":
		restoreProcs()
		return demo.Run(args[1:], os.Stdout, os.Stderr)
	}
	if strings.HasPrefix(args[0], "-") {
		stderrf("baton: unknown option %q (put the command after --; see baton help)", clip.Value(args[0]))
		return exitUsage
	}
	return supervise(args)
}

// restoreProcs undoes oneproc for the subcommands that serve requests:
// they get the GOMAXPROCS their environment asks for, or Go's default.
func restoreProcs() {
	n, _ := strconv.Atoi(os.Getenv("GOMAXPROCS")) // not a number: the default
	oneproc.Restore(n)
}

// parseSub parses a subcommand's arguments into fs, which gets --pid N
// (also -pid N, --pid=N) here; an error is one line with the usage.
func parseSub(fs *flag.FlagSet, usage string, args []string) (pid int, err error) {
	fs.SetOutput(io.Discard)
	fs.Func("pid", "", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errors.New("wants a process id")
		}
		pid = n
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, errHelp{usage}
		}
		return 0, fmt.Errorf("%s: %v (usage: baton %s)", fs.Name(), err, usage)
	}
	if fs.NArg() > 0 {
		return 0, fmt.Errorf("%s: unknown argument %q (usage: baton %s)", fs.Name(), clip.Value(fs.Arg(0)), usage)
	}
	return pid, nil
}

// errHelp is parseSub's answer to -h, -help or --help: the caller prints
// the usage on stdout and exits 0.
type errHelp struct{ usage string }

func (e errHelp) Error() string { return "usage: baton " + e.usage }

// subUsage reports a parseSub error: the usage on stdout and 0 for a
// request for help, one line on stderr and exitUsage otherwise.
func subUsage(err error) int {
	var h errHelp
	if errors.As(err, &h) {
		fmt.Println(h.Error())
		return 0
	}
	stderrf("baton: %v", err)
	return exitUsage
}

// Exit statuses of baton reload.
const (
	reloadRefused  = 1 // refused by the check, rolled back, halted, not allowed
	reloadNoAnswer = 3 // no baton answered, or not within --timeout
)

// cmdReload asks baton (through its control socket) for a reload and waits
// for its outcome: 0 and the generation serving, 1 and the reason it was
// refused or rolled back, 3 when no baton answers in time. --no-wait only
// sends the reload signal, for a baton without a control socket.
func cmdReload(args []string) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	noWait := fs.Bool("no-wait", false, "")
	var timeout time.Duration
	fs.Func("timeout", "", func(v string) error {
		var d supervisor.Timeout
		if d.Decode(v) != nil {
			return errors.New("wants a duration like 90s")
		}
		timeout = time.Duration(d)
		return nil
	})
	pid, err := parseSub(fs, "reload [--pid PID] [--timeout DUR] [--no-wait]", args)
	if err != nil {
		return subUsage(err)
	}
	if *noWait {
		return reloadSignal(pid)
	}
	if timeout == 0 {
		timeout = defaultReloadWait()
	}
	var target control.Target
	if pid > 0 {
		target = control.TargetOf(pid)
	} else if target, err = control.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "baton: reload:", err)
		return reloadNoAnswer
	}
	o, err := control.AskReload(target, timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton: reload:", err)
		return reloadNoAnswer
	}
	if !o.OK {
		if o.Gen > 0 {
			stderrf("baton: reload: %s (generation %d serves on)", o.Reason, o.Gen)
		} else {
			stderrf("baton: reload: %s", o.Reason) // no generation serves on: baton is stopping, or the reload was not allowed
		}
		return reloadRefused
	}
	fmt.Printf("generation %d serving\n", o.Gen)
	return 0
}

// defaultReloadWait bounds baton reload's wait when --timeout is not
// given: the reload check and the new generation each get
// BATON_READY_TIMEOUT, a steer-mode swap may wait for the old generation
// to leave (BATON_STOP_TIMEOUT), plus a margin. It reads the variables from
// its own environment, which docker exec and kubectl exec make the
// container's.
func defaultReloadWait() time.Duration {
	cfg, err := loadConfig()
	if err != nil {
		cfg = defaultConfig() // baton itself would have refused to start
	}
	ready := time.Duration(cfg.ReadyTimeout)
	wait := ready + time.Duration(cfg.StopTimeout) + 10*time.Second
	if len(cfg.ReloadCheck) > 0 {
		wait += ready
	}
	// A canary and a bake come before the outcome: the default wait
	// covers them (and a canary check per step).
	wait += cfg.Canary.Total() + time.Duration(cfg.Bake)
	if len(cfg.CanaryCheck) > 0 {
		wait += time.Duration(len(cfg.Canary)) * ready
	}
	return wait
}

// reloadSignal sends the reload signal to pid (PID 1 by default).
func reloadSignal(pid int) int {
	if pid == 0 {
		pid = 1
	}
	sig := unix.SIGHUP
	if v := os.Getenv("BATON_RELOAD_SIGNAL"); v != "" {
		var r supervisor.ReloadSignal
		if err := r.Decode(v); err != nil {
			fmt.Fprintf(os.Stderr, "baton: BATON_RELOAD_SIGNAL: %v\n", err)
			return exitUsage
		}
		if r == 0 {
			fmt.Fprintln(os.Stderr, "baton: reload: reloads are disabled (BATON_RELOAD_SIGNAL=none)")
			return 1
		}
		sig = unix.Signal(r)
	}
	if err := unix.Kill(pid, sig); err != nil {
		fmt.Fprintf(os.Stderr, "baton: reload: kill %d %s: %v\n", pid, unix.SignalName(sig), err)
		return 1
	}
	return 0
}

// cmdHealth exits 0 when the baton of this PID namespace (or of --pid's)
// reports ready. It needs no HTTP server, shell or curl.
func cmdHealth(args []string) int {
	pid, err := parseSub(flag.NewFlagSet("health", flag.ContinueOnError), "health [--pid PID]", args)
	if err != nil {
		return subUsage(err)
	}
	var target control.Target
	if pid > 0 {
		target = control.TargetOf(pid)
	} else if target, err = control.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "baton: health:", err)
		return 1
	}
	st, err := control.AskStatus(target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton: health:", err)
		return 1
	}
	if !st.Ready {
		fmt.Printf("not ready: generation %d, %d serving, %d starting, stopping=%v%s\n", st.Gen, st.Serving, st.Starting, st.Stopping, deployLine(st))
		return 1
	}
	fmt.Printf("ready: generation %d, %d serving%s\n", st.Gen, st.Serving, deployLine(st))
	return 0
}

// deployLine is what baton health adds about a canary or a bake in
// progress.
func deployLine(st supervisor.Status) string {
	switch {
	case st.Canary > 0:
		return fmt.Sprintf("; canary: generation %d at step %d, %d%% of new connections", st.Canary, st.CanaryStep, st.CanaryPercent)
	case st.Parked > 0:
		return fmt.Sprintf("; bake: generation %d parked (%d workers), %s left", st.Parked, st.ParkedWorkers, st.BakeLeft.Round(time.Second))
	}
	return ""
}

// steerSettle is how long, in steer mode, a generation that handed over
// keeps accepting before baton first looks whether its queue is empty: a
// connection whose handshake began before the switch completes into the
// old socket's queue about one round trip later. 100 ms covers clients
// on the same network or behind a load balancer many times over; a client
// further away whose handshake straddles the switch can still be reset.
const steerSettle = 100 * time.Millisecond

// sigBuffer is the signal channel's size (runc uses 2048): a dropped
// duplicate SIGCHLD is harmless because the loop drains, a dropped SIGTERM
// is not.
const sigBuffer = 2048

// shutdownSignals come first: until they have a subscriber, the Go runtime
// answers TERM, INT and HUP by re-raising them, which the kernel drops for
// PID 1, and exiting with status 2, and QUIT with a crash dump.
var shutdownSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGHUP}

// otherSignals are every other signal baton handles: SIGCHLD, and all the
// ones it forwards. supervisor.NeverReceived says which are left out, and
// why.
func otherSignals() []os.Signal {
	var out []os.Signal
	for s := unix.Signal(1); s <= 64; s++ {
		if !supervisor.NeverReceived(s) && !slices.Contains(shutdownSignals, os.Signal(s)) {
			out = append(out, s)
		}
	}
	return out
}

// subscribe subscribes sigs to every signal baton handles, all of them
// before the first worker starts: a signal that arrives before its
// subscription is dropped by the Go runtime (or, for ABRT, SEGV and the
// like, taken for a crash), where tini would have kept it pending. Each
// new subscription is a round trip to the runtime's signal thread, cheap
// only when both threads share a CPU (onecpu).
func subscribe(sigs chan<- os.Signal) {
	release := onecpu.Hold()
	signal.Notify(sigs, shutdownSignals...)
	signal.Notify(sigs, otherSignals()...)
	release()
}

func supervise(argv []string) int {
	// First thing, before anything can be started: every signal.
	sigs := make(chan os.Signal, sigBuffer)
	subscribe(sigs)

	// Descriptors baton inherited without close-on-exec (a parent's
	// leftovers) must not reach the workers: they get fds 0-2 and the
	// listeners, nothing else.
	closeInheritedOnExec()

	cfg, err := loadConfig()
	if err != nil {
		stderrf("baton: %s", err)
		return exitUsage
	}
	if len(argv) == 0 {
		stderrf("baton: no command given after -- (see baton help)")
		return exitUsage
	}
	if argv[0] == "" {
		stderrf("baton: the command name is empty (usage: baton [--] COMMAND [ARG...])")
		return exitUsage
	}
	log := newLogger(cfg)
	pid1 := os.Getpid() == 1
	subreaper := false
	if cfg.Subreaper == "true" || (cfg.Subreaper == "auto" && !pid1) {
		if err := reaper.SetSubreaper(); err != nil {
			log.Warn().Err(err).Msg("not PID 1 and no subreaper: orphans will not be reaped by baton")
		} else {
			subreaper = !pid1
		}
	} else if !pid1 {
		log.Warn().Msg("not PID 1 and BATON_SUBREAPER=false: orphans will not be reaped by baton")
	}

	ls, err := handoff.Open(cfg.Listen)
	if err != nil {
		stderrf("baton: BATON_LISTEN: %s", err)
		return exitUsage
	}
	defer handoff.CloseAll(ls)

	plain := len(ls) == 0 && cfg.Workers <= 1
	restart := cfg.Restart
	if restart == "" {
		restart = supervisor.RestartOnFailure
		if plain {
			restart = supervisor.RestartNever // a drop-in for tini
		}
	}
	opts := supervisor.Options{
		Workers:       int(cfg.Workers),
		Ready:         cfg.Ready,
		ReadyTimeout:  time.Duration(cfg.ReadyTimeout),
		ReloadSignal:  unix.Signal(cfg.ReloadSignal),
		StopSignal:    unix.Signal(cfg.StopSignal),
		StopSignalSet: os.Getenv("BATON_STOP_SIGNAL") != "",
		StopTimeout:   time.Duration(cfg.StopTimeout),
		ShutdownDelay: time.Duration(cfg.ShutdownDelay),
		SignalMap:     cfg.SignalMap,
		ExitMap:       cfg.ExitMap,
		Restart:       restart,
		RestartLimit:  cfg.RestartLimit,
		MaxRSS:        int64(cfg.MaxRSS),
		MaxAge:        time.Duration(cfg.MaxAge),
		PID1:          pid1,
		Subreaper:     subreaper,
	}
	if plain && os.Getenv("BATON_RELOAD_SIGNAL") == "" {
		// A plain init (one worker, no listeners) is a drop-in for tini:
		// HUP goes to the app (nginx -s reload, a config re-read) unless a
		// reload signal is asked for explicitly.
		opts.ReloadSignal = 0
	}
	if _, ok := opts.SignalMap[opts.ReloadSignal]; ok && opts.ReloadSignal != 0 {
		// baton consumes the reload signal as it arrives: a rewrite of it
		// could never apply.
		stderrf("baton: BATON_SIGNAL_MAP: %s is the reload signal (BATON_RELOAD_SIGNAL), which baton consumes: it cannot be rewritten", unix.SignalName(opts.ReloadSignal))
		return exitUsage
	}
	if opts.StopSignalSet && opts.StopSignal == opts.ReloadSignal {
		// Set explicitly, the stop signal also starts a shutdown when
		// baton receives it: one signal cannot mean both.
		stderrf("baton: BATON_STOP_SIGNAL: %s is the reload signal (BATON_RELOAD_SIGNAL)", unix.SignalName(opts.StopSignal))
		return exitUsage
	}

	var notes chan handoff.Note
	notifyAddr := ""
	if !plain || cfg.Ready.Kind == "notify" {
		uid, gid := -1, -1
		if cfg.User.Cred != nil {
			uid, gid = int(cfg.User.Cred.UID), int(cfg.User.Cred.GID)
		}
		n, err := handoff.NewNotifier([]string{"/run", os.TempDir()}, uid, gid)
		if err != nil {
			stderrf("baton: %s", err)
			return 1
		}
		defer n.Close()
		notes = make(chan handoff.Note, 256)
		notifyAddr = n.Addr
		go n.Run(notes)
	}

	fds := make(handoff.Shared, len(ls))
	names := make([]string, len(ls))
	for i, l := range ls {
		fds[i], names[i] = l.FD, l.Name
		log.Info().Str("name", l.Name).Str("addr", l.Bound).Int("fd", 3+i).Msg("listener opened")
	}
	baseEnv := workerEnv(os.Environ())
	// Signals baton ignores (inherited SIG_IGN the Go runtime keeps) must
	// not reach a worker: the shim resets them.
	resetSignals := spawn.InheritsIgnored()
	start := func(gen, idx int, fds []int, foreground bool) (supervisor.Worker, error) {
		env := append([]string(nil), baseEnv...)
		env = append(env, "BATON_GENERATION="+strconv.Itoa(gen), "BATON_WORKER="+strconv.Itoa(idx))
		if len(ls) > 0 {
			env = append(env, "LISTEN_FDS="+strconv.Itoa(len(ls)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		}
		if notifyAddr != "" {
			env = append(env, "NOTIFY_SOCKET="+notifyAddr)
		}
		if cfg.Watchdog > 0 {
			env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(time.Duration(cfg.Watchdog).Microseconds(), 10))
		}
		return spawn.Start(spawn.Spec{
			WatchdogPID:  cfg.Watchdog > 0,
			Path:         argv[0],
			Args:         argv,
			Env:          env,
			Files:        fds,
			ListenPID:    len(ls) > 0,
			Rlimits:      cfg.Ulimits,
			Cred:         cfg.User.Cred,
			Foreground:   foreground,
			ResetSignals: resetSignals,
		})
	}

	if cfg.Handoff == supervisor.HandoffSteer {
		opts.SteerSettle = steerSettle
	}
	opts.Surge = int(cfg.Surge)
	if opts.Surge > 0 && opts.Surge < opts.Workers && cfg.Handoff == supervisor.HandoffSteer {
		// Steering sends every new connection to one generation; a rollout
		// needs both generations to get some (BATON_HANDOFF=shared).
		stderrf("baton: BATON_SURGE: a rolling swap needs BATON_HANDOFF=shared (steer mode switches whole generations)")
		return exitUsage
	}
	if name := canaryNeedsSteer(cfg); name != "" {
		// Only steer mode decides which generation gets a new connection;
		// with one shared socket there is no share to give, and no way back.
		stderrf("baton: %s: needs BATON_HANDOFF=steer (only steer mode can give a generation a share of new connections, or return to the old one)", name)
		return exitUsage
	}
	if len(cfg.CanaryCheck) > 0 && len(cfg.Canary) == 0 {
		stderrf("baton: BATON_CANARY_CHECK: runs at the end of each canary step; set BATON_CANARY too")
		return exitUsage
	}
	opts.Canary, opts.Bake = cfg.Canary, time.Duration(cfg.Bake)
	opts.Watchdog = time.Duration(cfg.Watchdog)
	sup := supervisor.New(opts, log)
	sup.Start = start
	if len(cfg.ReloadCheck) > 0 {
		sup.Check = func(gen int) (supervisor.Worker, <-chan string, error) {
			return startCheck(cfg, cfg.ReloadCheck, baseEnv, gen, resetSignals)
		}
	}
	if len(cfg.CanaryCheck) > 0 {
		sup.CanaryCheck = func(gen int) (supervisor.Worker, <-chan string, error) {
			return startCheck(cfg, cfg.CanaryCheck, baseEnv, gen, resetSignals)
		}
	}
	sup.Sockets = fds
	if cfg.Handoff == supervisor.HandoffSteer {
		st, err := handoff.NewSteering(ls)
		if err != nil {
			stderrf("baton: BATON_HANDOFF=steer: %s", err)
			return 1
		}
		sup.Sockets = st
	}
	if plain && stdinIsForegroundTTY() {
		// As under tini, the app owns the terminal: Ctrl-C reaches it
		// directly, and its exit ends baton. In pool mode baton keeps the
		// terminal, so Ctrl-C reaches baton, which stops every worker.
		sup.Foreground = func(pgid int) error {
			if pgid == 0 {
				pgid = unix.Getpgrp()
			}
			return spawn.SetForeground(pgid)
		}
	}
	sup.Notes = notes
	reloads := make(chan string, 16)
	sup.Reloads = reloads

	// The control socket is bound now, before anything starts; it is
	// served (which sets up the runtime's network poller, a few hundred
	// microseconds) while the first worker execs. Whatever another process
	// of the network namespace does to its name, baton starts: a taken
	// name gets a random suffix, and without any control socket only
	// baton health and baton reload fail.
	ctl, err := control.Listen()
	switch {
	case err != nil:
		log.Warn().Err(err).Msg("control socket unavailable: baton health will fail")
	case ctl.Taken != "":
		log.Warn().Str("taken", ctl.Taken).Str("holder", ctl.Holder).Str("addr", ctl.Addr).Msg("control socket name taken")
	}
	if ctl != nil {
		defer ctl.Close()
		sup.Started = func() {
			if err := ctl.Serve(sup); err != nil {
				log.Warn().Err(err).Msg("control socket unavailable: baton health will fail")
			}
		}
	}
	if cfg.HTTPAddr != "" {
		hl, err := control.ServeHTTP(sup, string(cfg.HTTPAddr))
		if err != nil {
			stderrf("baton: BATON_HTTP_ADDR: %s", err)
			return exitUsage
		}
		log.Info().Str("addr", hl.Addr().String()).Msg("http serving")
		defer hl.Close()
	}
	if len(cfg.Watch) > 0 {
		w, err := watch.New(cfg.Watch, watch.Options{})
		if err != nil {
			stderrf("baton: BATON_WATCH: %s", err)
			return exitUsage
		}
		defer w.Close()
		go func() {
			for range w.Changes() {
				reloads <- "watch"
			}
		}()
		go func() {
			for err := range w.Errors() {
				log.Warn().Err(err).Msg("watch")
			}
		}()
	}
	log.Info().Int("pid", os.Getpid()).Str("version", version).Bool("pid1", pid1).Msg("baton started")
	return sup.Run(sigs)
}

// canaryNeedsSteer names the variable that asks for a canary or a bake
// outside steer mode, "" when none does.
func canaryNeedsSteer(cfg *config) string {
	switch {
	case cfg.Handoff == supervisor.HandoffSteer:
		return ""
	case len(cfg.Canary) > 0:
		return "BATON_CANARY"
	case cfg.Bake > 0:
		return "BATON_BAKE"
	}
	return ""
}

// startCheck starts a check (BATON_RELOAD_CHECK, BATON_CANARY_CHECK) as
// the workers are started (user, environment, rlimits), without
// listeners, its stdout and stderr on a pipe whose last line the returned
// channel gets when the output ends, or when the time EndOutput allows
// runs out (a child the check left behind may hold the pipe open).
func startCheck(cfg *config, cmd spawn.Command, baseEnv []string, gen int, resetSignals bool) (supervisor.Worker, <-chan string, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	// Only baton's end is non-blocking (each end has its own flags), so
	// that a read deadline can end the wait; the check writes as usual.
	if err := unix.SetNonblock(p[0], true); err != nil {
		_ = unix.Close(p[0])
		_ = unix.Close(p[1])
		return nil, nil, err
	}
	out := os.NewFile(uintptr(p[0]), "check output")
	env := append(append([]string(nil), baseEnv...), "BATON_GENERATION="+strconv.Itoa(gen))
	w, err := spawn.Start(spawn.Spec{
		Path: cmd[0], Args: cmd, Env: env, Output: p[1],
		Rlimits: cfg.Ulimits, Cred: cfg.User.Cred, ResetSignals: resetSignals,
	})
	_ = unix.Close(p[1]) // the check's copy alone keeps it open now
	if err != nil {
		_ = out.Close()
		return nil, nil, err
	}
	lines := make(chan string, 1)
	go func() { // turns the output into one message: its last line
		lines <- lastLine(out)
		_ = out.Close()
	}()
	return &checkProc{Proc: w, out: out}, lines, nil
}

// checkProc is a started check and its output's read end.
type checkProc struct {
	*spawn.Proc
	out *os.File
}

// EndOutput makes the check's output end for baton within grace, whether
// or not every writer has closed it.
func (c *checkProc) EndOutput(grace time.Duration) {
	_ = c.out.SetReadDeadline(time.Now().Add(grace))
}

// lastLine reads r to its end (or an error: a read deadline) and returns
// the last non-empty line, from at most the last 4 KiB (a check may write
// a lot).
func lastLine(r io.Reader) string {
	var tail []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			tail = append(tail, buf[:n]...)
			if len(tail) > 8192 {
				tail = append(tail[:0], tail[len(tail)-4096:]...)
			}
		}
		if err != nil {
			break
		}
	}
	lines := strings.Split(strings.TrimRight(string(tail), "\n"), "\n")
	return lines[len(lines)-1]
}

// workerEnv is baton's environment without its own configuration and
// without socket-activation variables meant for baton itself.
func workerEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, envPrefix+"_"):
		case k == "LISTEN_FDS" || k == "LISTEN_PID" || k == "LISTEN_FDNAMES" || k == "NOTIFY_SOCKET":
		default:
			out = append(out, kv)
		}
	}
	return out
}

// stdinIsForegroundTTY reports whether fd 0 is a terminal whose foreground
// process group is baton's own, so a worker can take it over (Ctrl-C under
// docker run -it then reaches the worker directly, in plain mode).
func stdinIsForegroundTTY() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && pgrp == syscall.Getpgrp()
}

// stderrf prints one line on fd 2 with a raw write. Through os.Stderr, a
// write that fails with EPIPE (whoever read baton's stderr went away) makes
// the Go runtime end the process with SIGPIPE, because baton does not
// subscribe to it (see otherSignals); a raw write just fails.
func stderrf(format string, args ...any) {
	_, _ = unix.Write(2, []byte(fmt.Sprintf(format, args...)+"\n")) // nowhere left to report it
}

// rawStderr writes to fd 2 without an os.File (see stderrf).
type rawStderr struct{}

func (rawStderr) Write(p []byte) (int, error) { return unix.Write(2, p) }

// newLogger builds the JSON (or console) logger on a private duplicate of
// stderr: for an os.File on fd 1 or 2, a write that fails with EPIPE makes
// the Go runtime end the process with SIGPIPE; on the duplicate it just
// fails. A log line that cannot be written is dropped: zerolog would
// otherwise report it on os.Stderr, with that same fatal EPIPE.
func newLogger(cfg *config) zerolog.Logger {
	var out io.Writer = rawStderr{}
	if fd, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3); err == nil {
		out = os.NewFile(uintptr(fd), "stderr")
	}
	zerolog.ErrorHandler = func(error) {}
	zerolog.ErrorFieldName = "err"
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	// UTC, like docker logs' own timestamps; it also spares every start
	// reading and parsing /etc/localtime.
	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
	var w = zerolog.New(out)
	console := cfg.LogFormat == "console"
	if cfg.LogFormat == "auto" {
		_, err := unix.IoctlGetTermios(2, unix.TCGETS)
		console = err == nil
	}
	if console {
		w = zerolog.New(zerolog.ConsoleWriter{Out: out, TimeFormat: "15:04:05.000"})
	}
	return w.Level(zerolog.Level(cfg.LogLevel)).With().Timestamp().Logger()
}

// closeInheritedOnExec marks every descriptor above 2 close-on-exec.
// close_range(2) does it in one call on Linux 5.11+; older kernels get a
// walk over /proc/self/fd.
func closeInheritedOnExec() {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return // no /proc: nothing better to do than the kernel's default
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// Configuration: every BATON_* variable, read through envconfig.

// envPrefix is the prefix of every variable baton reads.
const envPrefix = "BATON"

// config is every BATON_* variable. Fields carry no `envconfig` tag on
// purpose: with one, envconfig falls back to the bare name when the
// prefixed variable is unset (a field tagged `user` would read $USER).
// split_words maps ReadyTimeout to BATON_READY_TIMEOUT without that.
type config struct {
	Listen        handoff.Listeners       `desc:"listeners [name=]scheme://addr, comma-separated (tcp, tcp4, tcp6, udp, udp4, udp6, unix); host:port means tcp, /path means unix; a unix socket file takes ?mode=0666&owner=USER[:GROUP]"`
	Workers       supervisor.Count        `default:"1" desc:"workers per generation"`
	Ready         supervisor.ReadyMode    `default:"auto" desc:"when a new worker is ready: notify (READY=1), delay:DUR, auto (READY=1 or 2s up, until a worker has sent READY=1)"`
	ReadyTimeout  supervisor.Timeout      `split_words:"true" default:"60s" desc:"a new generation (or recycling replacement) not ready by then is rolled back; must be above 0"`
	ReloadSignal  supervisor.ReloadSignal `split_words:"true" default:"HUP" desc:"signal that starts a generation swap; none disables reloads and forwards it (plain init mode defaults to none: HUP goes to the app, as under tini)"`
	StopSignal    supervisor.StopSignal   `split_words:"true" default:"TERM" desc:"signal that asks a retiring worker to finish; when set, it also replaces the shutdown signal baton received (not the reload signal, CHLD, URG or PIPE)"`
	StopTimeout   supervisor.Duration     `split_words:"true" default:"8s" desc:"grace before SIGKILL to a worker's process group (retiring and shutdown)"`
	ShutdownDelay supervisor.Duration     `split_words:"true" default:"0" desc:"on shutdown, keep serving this long while reporting not-ready"`
	SignalMap     supervisor.SignalMap    `split_words:"true" desc:"rewrite signals before baton acts on them, e.g. TERM:QUIT,WINCH: (empty target drops it; not the reload signal)"`
	Restart       supervisor.Restart      `desc:"on-failure, always or never (default: never in plain init mode, on-failure otherwise)"`
	RestartLimit  supervisor.RestartLimit `split_words:"true" default:"5/60s" desc:"crash-loop bound COUNT/WINDOW per worker slot; past it baton exits with the worker's code"`
	ExitMap       supervisor.ExitMap      `split_words:"true" desc:"remap baton's exit status, e.g. 143:0"`
	User          spawn.User              `desc:"uid[:gid] or name[:group] the workers run as"`
	Ulimits       spawn.Ulimits           `desc:"worker rlimits in docker's syntax: nofile=65536:65536,core=0"`
	MaxRSS        supervisor.Size         `split_words:"true" desc:"recycle a worker whose RSS exceeds this (512MiB, 512Mi, 1g)"`
	MaxAge        supervisor.Duration     `split_words:"true" desc:"recycle a worker older than this (with up to 10% jitter), one at a time"`
	Watch         watch.Paths             `desc:"files or directories whose content change triggers a swap, comma-separated"`
	HTTPAddr      httpAddr                `split_words:"true" desc:"serve /metrics, /healthz and /readyz on this address"`
	Subreaper     tristate                `default:"auto" desc:"become a child subreaper: auto (when not PID 1), true, false"`
	LogLevel      logLevel                `split_words:"true" default:"info" desc:"debug, info, warn or error"`
	LogFormat     logFormat               `split_words:"true" default:"auto" desc:"json, console, or auto (console on a TTY)"`
	ReloadCheck   spawn.Command           `split_words:"true" desc:"command (no shell, split on spaces) run as the workers before each reload; its exit status decides: non-zero or not done within BATON_READY_TIMEOUT refuses the reload; what it leaves in its process group gets SIGTERM, SIGKILL after BATON_STOP_TIMEOUT"`
	Surge         supervisor.Count        `desc:"rolling swaps: at most BATON_WORKERS + N workers alive during a reload (default BATON_WORKERS: the whole generation at once)"`
	Watchdog      supervisor.Duration     `desc:"WATCHDOG_USEC for workers: one that sent WATCHDOG=1 and then nothing this long is aborted and restarted"`
	Handoff       supervisor.Handoff      `default:"shared" desc:"shared (one socket per listener for every generation) or steer (a socket per generation for TCP and UDP, new connections steered in the kernel, so workers that drain badly lose nothing)"`
	Canary        supervisor.CanarySteps  `desc:"steer mode: PERCENT:DURATION steps, comma-separated (10%:30s,50%:1m); a new generation gets that share of new TCP connections first, and a worker exit aborts the reload"`
	CanaryCheck   spawn.Command           `split_words:"true" desc:"command (no shell, split on spaces) run as the workers at the end of each canary step; its exit status decides: non-zero or not done within BATON_READY_TIMEOUT aborts the canary; what it leaves in its process group is stopped as for BATON_RELOAD_CHECK"`
	Bake          supervisor.Duration     `desc:"steer mode: keep the old generation parked this long after the cutover; a new worker exit meanwhile reverts to it at once"`
}

// configKeys are the variables config reads, in the order of its fields.
// They are spelled out because asking envconfig for them (Usagef) would
// link text/template into baton and slow every start; TestConfigKeys
// checks that they, the defaults and the descriptions agree with
// envconfig's own listing.
var configKeys = []string{
	"BATON_LISTEN", "BATON_WORKERS", "BATON_READY", "BATON_READY_TIMEOUT",
	"BATON_RELOAD_SIGNAL", "BATON_STOP_SIGNAL", "BATON_STOP_TIMEOUT",
	"BATON_SHUTDOWN_DELAY", "BATON_SIGNAL_MAP", "BATON_RESTART",
	"BATON_RESTART_LIMIT", "BATON_EXIT_MAP", "BATON_USER", "BATON_ULIMITS",
	"BATON_MAX_RSS", "BATON_MAX_AGE", "BATON_WATCH", "BATON_HTTP_ADDR",
	"BATON_SUBREAPER", "BATON_LOG_LEVEL", "BATON_LOG_FORMAT", "BATON_RELOAD_CHECK",
	"BATON_SURGE", "BATON_WATCHDOG", "BATON_HANDOFF", "BATON_CANARY",
	"BATON_CANARY_CHECK", "BATON_BAKE",
}

// setByBaton are variables baton sets for its own workers; a baton running
// under another baton must not call them unknown.
var setByBaton = []string{"BATON_GENERATION", "BATON_WORKER"}

// checkSetByBaton accepts BATON_GENERATION and BATON_WORKER only as baton
// sets them: numbers, BATON_WORKER never without BATON_GENERATION (a
// reload check gets BATON_GENERATION alone). Anything else was typed by
// someone, most likely BATON_WORKER for BATON_WORKERS.
func checkSetByBaton() error {
	gen, hasGen := os.LookupEnv("BATON_GENERATION")
	w, hasW := os.LookupEnv("BATON_WORKER")
	number := func(v string) bool { n, err := strconv.Atoi(v); return err == nil && n >= 0 }
	switch {
	case hasW && !hasGen:
		return fmt.Errorf("BATON_WORKER=%q is set, but baton sets it only for its own workers (with BATON_GENERATION): did you mean BATON_WORKERS?", clip.Value(w))
	case hasGen && !number(gen):
		return fmt.Errorf("BATON_GENERATION: want the generation number baton sets for its workers, got %q", clip.Value(gen))
	case hasW && !number(w):
		return fmt.Errorf("BATON_WORKER: want the worker number baton sets for its workers, got %q (did you mean BATON_WORKERS?)", clip.Value(w))
	}
	return nil
}

type httpAddr string

func (a *httpAddr) Decode(v string) error {
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return fmt.Errorf("want host:port like :9090 or 127.0.0.1:9090, got %q", clip.Value(v))
	}
	*a = httpAddr(v)
	return nil
}

type tristate string

func (t *tristate) Decode(v string) error {
	switch v {
	case "auto", "true", "false":
		*t = tristate(v)
		return nil
	}
	return fmt.Errorf("want auto, true or false, got %q", clip.Value(v))
}

type logLevel zerolog.Level

func (l *logLevel) Decode(v string) error {
	switch v {
	case "debug", "info", "warn", "error":
		lv, _ := zerolog.ParseLevel(v) // one of the four above: cannot fail
		*l = logLevel(lv)
		return nil
	}
	return fmt.Errorf("want debug, info, warn or error, got %q", clip.Value(v))
}

type logFormat string

func (f *logFormat) Decode(v string) error {
	switch v {
	case "json", "console", "auto":
		*f = logFormat(v)
		return nil
	}
	return fmt.Errorf("want json, console or auto, got %q", clip.Value(v))
}

// knownVars lists every BATON_* variable with its default and meaning,
// taken from config's field tags.
func knownVars() [][3]string {
	t := reflect.TypeFor[config]()
	out := make([][3]string, t.NumField())
	for i := range out {
		f := t.Field(i)
		out[i] = [3]string{configKeys[i], f.Tag.Get("default"), f.Tag.Get("desc")}
	}
	return out
}

// loadConfig reads BATON_* from the environment. Every error is one line
// naming the variable and what it accepts.
func loadConfig() (*config, error) {
	var unknown []string
	set := false
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix+"_") {
			continue
		}
		if v == "" {
			// An empty value means unset: envconfig would otherwise decode
			// "" instead of applying the default.
			os.Unsetenv(k)
			continue
		}
		switch {
		case slices.Contains(configKeys, k):
			set = true
		case !slices.Contains(setByBaton, k):
			unknown = append(unknown, k)
		}
	}
	if err := checkSetByBaton(); err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown variable %s (see baton help for the list)", strings.Join(unknown, ", "))
	}
	if !set {
		// Nothing to read: the defaults alone, without envconfig's
		// reflection and regexps on every start (TestDefaultConfig checks
		// they are what envconfig makes of an empty environment).
		return defaultConfig(), nil
	}
	var c config
	if err := envconfig.Process(envPrefix, &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %v", pe.KeyName, pe.Err)
		}
		return nil, err
	}
	return &c, nil
}

// defaultConfig is config with every field at its default tag, decoded by
// the field's own Decode, as envconfig would.
func defaultConfig() *config {
	var c config
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		def := v.Type().Field(i).Tag.Get("default")
		if def == "" {
			continue
		}
		// The defaults are fixed and valid (TestDefaultConfig), so the
		// error cannot happen.
		_ = v.Field(i).Addr().Interface().(envconfig.Decoder).Decode(def)
	}
	return &c
}

// writeHelp prints usage and every variable with its default.
func writeHelp(w *os.File) {
	fmt.Fprint(w, `baton: a PID 1 for containers that reaps, forwards signals, supervises
workers and hands them its listening sockets for zero-downtime reloads.

usage:
  baton [--] COMMAND [ARG...]   run COMMAND as the worker(s)
  baton reload [--pid PID] [--timeout DUR] [--no-wait]
                                reload and wait for the outcome: 0 swapped, 1 refused
                                or rolled back (reason printed), 3 no answer; --no-wait
                                only sends the reload signal
  baton health [--pid PID]      exit 0 if baton reports ready, 1 if not
  baton hello                   the built-in demo worker (speaks LISTEN_FDS and READY=1)
  baton demo                    a reload under load, right here
  baton version | --version
  baton help | --help

A first argument that is not one of these subcommands is the command;
after -- it always is.

environment (empty means unset):
`)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	for _, v := range knownVars() {
		def := v[1]
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v[0], def, v[2])
	}
	_ = tw.Flush() // help output: nothing to do if stdout is gone
}
