// Command baton is a PID 1 for containers: it reaps zombies, forwards
// signals, supervises a pool of workers and holds their listening sockets,
// so that a reload signal swaps in a new worker generation without
// refusing, resetting or losing a request.
//
// main is the composition root and the only place that exits. supervise
// wires the parts: it subscribes to signals (pid1.go), reads and checks the
// configuration (config.go), opens the sockets (sockets.go), gives the
// loop (supervisor.Supervisor) its launcher (launch.go) and runs it. The
// subcommands are in subcommands.go.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/baton-init/baton/demo"
	"github.com/baton-init/baton/intercept"
	"github.com/baton-init/baton/internal/clip"
	"github.com/baton-init/baton/spawn"
	"github.com/baton-init/baton/supervisor"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit statuses of baton itself; once a worker has started, baton's
// status is the worker's (through BATON_EXIT_MAP). docs/development.md
// states the rule.
const (
	exitRefused  = 1 // a subcommand's answer is no: not ready, reload refused or failed
	exitConfig   = 2 // bad configuration or command line, or a socket baton needs cannot be opened: nothing was started
	exitNoAnswer = 3 // baton reload: no baton answered (in time); baton health, a probe, says 1
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
		return exitConfig
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
		return demo.Run(args[1:], os.Stdout, rawStderr{})
	}
	if strings.HasPrefix(args[0], "-") {
		stderrf("baton: unknown option %q (put the command after --; see baton help)", clip.Value(args[0]))
		return exitConfig
	}
	return supervise(args)
}

// supervise runs argv as the workers: baton's whole life as an init.
func supervise(argv []string) int {
	// First thing, before anything can be started: every signal.
	sigs := make(chan os.Signal, sigBuffer)
	subscribe(sigs)

	// Descriptors baton inherited without close-on-exec (a parent's
	// leftovers) must not reach the workers: they get fds 0-2 and the
	// listeners, nothing else.
	closeInheritedOnExec()

	cfg, err := loadConfig()
	if err == nil {
		err = checkCommand(argv)
	}
	if err == nil {
		err = cfg.validate()
	}
	if err == nil && cfg.Bind == bindIntercept {
		// Before anything is opened: never half-start.
		if perr := intercept.Probe(); perr != nil {
			err = fmt.Errorf("BATON_BIND=intercept: the kernel or runtime refuses seccomp user notification (needs Linux 5.9+, seccomp(2) allowed, not gVisor): %v", perr)
		}
	}
	if err != nil {
		stderrf("baton: %s", err)
		return exitConfig
	}
	log := newLogger(cfg)
	pid1, subreaper := becomeReaper(cfg, log)

	// Everything is opened before anything is logged: a failure is one
	// line and exit 2, as for a malformed value.
	o, err := openAll(cfg)
	defer o.close()
	if err != nil {
		stderrf("baton: %s", err)
		return exitConfig
	}
	sup := supervisor.New(cfg.options(pid1, subreaper), log)
	l := newLauncher(cfg, argv, o.listeners, o.notifyAddr)
	l.intercept, l.notes, l.log = cfg.Bind == bindIntercept, o.notes, log
	sup.Start = l.start
	sup.Check = l.check(cfg.ReloadCheck)
	sup.CanaryCheck = l.check(cfg.CanaryCheck)
	sup.Sockets = o.sockets
	sup.Notes = o.notes
	if cfg.Drain.Idle {
		sup.IdleConns = idleConns(o.listeners)
	}
	reloads := make(chan string, 16)
	sup.Reloads = reloads
	if cfg.plain() && stdinIsForegroundTTY() {
		// As under tini, the app owns the terminal: Ctrl-C reaches it
		// directly, and its exit ends baton. In pool mode baton keeps the
		// terminal, so Ctrl-C reaches baton, which stops every worker.
		sup.Foreground = setForeground
	}
	if err := o.serveHTTP(cfg, sup); err != nil {
		stderrf("baton: %s", err)
		return exitConfig
	}
	o.logOpened(log)
	// The control socket is bound now, before anything starts.
	defer listenControl(sup, log)()
	if o.http != nil {
		log.Info().Str("addr", o.http.Addr().String()).Msg("http serving")
	}
	if o.watcher != nil {
		forwardWatch(o.watcher, reloads, log)
	}
	log.Info().Int("pid", os.Getpid()).Str("version", version).Bool("pid1", pid1).Msg("baton started")
	return sup.Run(sigs)
}

// checkCommand refuses an empty command line or command name.
func checkCommand(argv []string) error {
	switch {
	case len(argv) == 0:
		return errors.New("no command given after -- (see baton help)")
	case argv[0] == "":
		return errors.New("the command name is empty (usage: baton [--] COMMAND [ARG...])")
	}
	return nil
}
