package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/internal/clip"
	"github.com/baton-init/baton/internal/startup/oneproc"
	"github.com/baton-init/baton/supervisor"
)

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
// request for help, one line on stderr and exitConfig otherwise.
func subUsage(err error) int {
	var h errHelp
	if errors.As(err, &h) {
		fmt.Println(h.Error())
		return 0
	}
	stderrf("baton: %v", err)
	return exitConfig
}

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
	target, err := findBaton(pid)
	if err != nil {
		stderrf("baton: reload: %v", err)
		return exitNoAnswer
	}
	o, err := control.AskReload(target, timeout)
	if err != nil {
		stderrf("baton: reload: %v", err)
		return exitNoAnswer
	}
	if !o.OK {
		if o.Gen > 0 {
			stderrf("baton: reload: %s (generation %d serves on)", o.Reason, o.Gen)
		} else {
			stderrf("baton: reload: %s", o.Reason) // no generation serves on: baton is stopping, or the reload was not allowed
		}
		return exitRefused
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

// reloadSignal sends the reload signal (BATON_RELOAD_SIGNAL, read from
// baton reload's own environment, which docker exec and kubectl exec make
// the container's) to pid, PID 1 by default.
func reloadSignal(pid int) int {
	if pid == 0 {
		pid = 1
	}
	cfg, err := loadConfig()
	if err != nil {
		stderrf("baton: %s", err) // baton itself would refuse to start
		return exitConfig
	}
	sig := unix.Signal(cfg.ReloadSignal)
	if sig == 0 {
		stderrf("baton: reload: reloads are disabled (BATON_RELOAD_SIGNAL=none)")
		return exitRefused
	}
	if err := unix.Kill(pid, sig); err != nil {
		stderrf("baton: reload: kill %d %s: %v", pid, unix.SignalName(sig), err)
		if errors.Is(err, unix.ESRCH) {
			return exitNoAnswer // nobody there to answer
		}
		return exitRefused
	}
	return 0
}

// findBaton is the baton that --pid names (0: the one of this PID
// namespace); an error means no baton answers.
func findBaton(pid int) (control.Target, error) {
	if pid > 0 {
		return control.TargetOf(pid), nil
	}
	return control.Find()
}

// cmdHealth exits 0 when the baton of this PID namespace (or of --pid's)
// reports ready, 1 otherwise: not ready, or no baton answers (the line on
// stderr says which). A probe is yes or no (SPEC, Docker's HEALTHCHECK),
// so health has no status 3. It needs no HTTP server, shell or curl.
func cmdHealth(args []string) int {
	pid, err := parseSub(flag.NewFlagSet("health", flag.ContinueOnError), "health [--pid PID]", args)
	if err != nil {
		return subUsage(err)
	}
	target, err := findBaton(pid)
	if err != nil {
		stderrf("baton: health: %v", err)
		return exitRefused
	}
	st, err := control.AskStatus(target)
	if err != nil {
		stderrf("baton: health: %v", err)
		return exitRefused
	}
	if !st.Ready {
		fmt.Printf("not ready: generation %d, %d serving, %d starting, stopping=%v%s\n", st.Gen, st.Serving, st.Starting, st.Stopping, deployLine(st))
		return exitRefused
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
  baton health [--pid PID]      exit 0 if baton reports ready, 1 if not, 3 no answer
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
