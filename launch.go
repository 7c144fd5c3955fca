package main

// The launcher: how baton starts a worker and a check (user, environment,
// rlimits, descriptors), from the configuration and what baton opened.

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/intercept"
	"github.com/baton-init/baton/spawn"
	"github.com/baton-init/baton/supervisor"
)

// launcher starts workers and checks for the loop.
type launcher struct {
	cfg  *config
	argv []string
	// env is baton's environment without its own variables; workerVars
	// are what a worker gets besides (LISTEN_FDS, NOTIFY_SOCKET, ...).
	env, workerVars []string
	listeners       bool
	// resetSignals: signals baton ignores (inherited SIG_IGN the Go
	// runtime keeps) must not reach a worker, so the shim resets them.
	resetSignals bool
	// intercept (BATON_BIND=intercept): every worker starts under the
	// bind filter; notes gets its "listened" report, log its failures.
	intercept bool
	notes     chan<- handoff.Note
	log       zerolog.Logger
}

// newLauncher is the launcher of argv, with the listeners ls and the
// notify socket's address (or "").
func newLauncher(cfg *config, argv []string, ls []*handoff.Listener, notifyAddr string) *launcher {
	l := &launcher{cfg: cfg, argv: argv, env: workerEnv(os.Environ()), listeners: len(ls) > 0, resetSignals: spawn.InheritsIgnored()}
	if len(ls) > 0 {
		names := make([]string, len(ls))
		for i, s := range ls {
			names[i] = s.Name
		}
		l.workerVars = append(l.workerVars, "LISTEN_FDS="+strconv.Itoa(len(ls)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	if notifyAddr != "" {
		l.workerVars = append(l.workerVars, "NOTIFY_SOCKET="+notifyAddr)
	}
	if cfg.Watchdog > 0 {
		l.workerVars = append(l.workerVars, "WATCHDOG_USEC="+strconv.FormatInt(time.Duration(cfg.Watchdog).Microseconds(), 10))
	}
	return l
}

// start starts worker idx of generation gen with the listening
// descriptors fds (the loop's Start).
func (l *launcher) start(gen, idx int, fds []int, foreground bool) (supervisor.Worker, error) {
	env := append([]string(nil), l.env...)
	env = append(env, "BATON_GENERATION="+strconv.Itoa(gen), "BATON_WORKER="+strconv.Itoa(idx))
	env = append(env, l.workerVars...)
	spec := spawn.Spec{
		WatchdogPID:  l.cfg.Watchdog > 0,
		Path:         l.argv[0],
		Args:         l.argv,
		Env:          env,
		Files:        fds,
		ListenPID:    l.listeners,
		Rlimits:      l.cfg.Ulimits,
		Cred:         l.cfg.User.Cred,
		Foreground:   foreground,
		ResetSignals: l.resetSignals,
	}
	if !l.intercept {
		return spawn.Start(spec)
	}
	return l.startIntercepted(spec, fds)
}

// startIntercepted starts a worker under the bind filter: a socketpair
// carries the filter's listener from the shim to the worker's own
// goroutine (intercept.Worker), which answers its binds and listens with
// the generation's sockets fds until no process of the worker is left.
func (l *launcher) startIntercepted(spec spawn.Spec, fds []int) (supervisor.Worker, error) {
	var sp [2]int
	var err error
	if sp, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("BATON_BIND=intercept: socketpair: %w", err)
	}
	spec.Intercept, spec.InterceptFD = true, sp[1]
	p, err := spawn.Start(spec)
	_ = unix.Close(sp[1]) // the shim's copy alone keeps it open now
	if err != nil {
		_ = unix.Close(sp[0])
		return nil, err
	}
	pid := p.PID()
	notes := l.notes
	w, err := intercept.NewWorker(pid, fds, func() { notes <- handoff.Note{PID: pid, Listened: true} }, l.log)
	if err != nil {
		// The shim's send fails once baton's end is closed, and it
		// exits without exec: the loop sees a worker that failed.
		_ = unix.Close(sp[0])
		l.log.Warn().Err(err).Int("pid", pid).Msg("bind interception failed")
		return p, nil
	}
	go w.Run(sp[0])
	return p, nil
}

// check is the loop's Check (or CanaryCheck) that runs cmd, nil when cmd
// is empty.
func (l *launcher) check(cmd spawn.Command) func(gen int) (supervisor.Worker, <-chan string, error) {
	if len(cmd) == 0 {
		return nil
	}
	return func(gen int) (supervisor.Worker, <-chan string, error) { return l.startCheck(cmd, gen) }
}

// startCheck starts a check (BATON_RELOAD_CHECK, BATON_CANARY_CHECK) as
// the workers are started (user, environment, rlimits), without
// listeners, its stdout and stderr on a pipe whose last line the returned
// channel gets when the output ends, or when the time EndOutput allows
// runs out (a child the check left behind may hold the pipe open).
func (l *launcher) startCheck(cmd spawn.Command, gen int) (supervisor.Worker, <-chan string, error) {
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
	env := append(append([]string(nil), l.env...), "BATON_GENERATION="+strconv.Itoa(gen))
	w, err := spawn.Start(spawn.Spec{
		Path: cmd[0], Args: cmd, Env: env, Output: p[1],
		Rlimits: l.cfg.Ulimits, Cred: l.cfg.User.Cred, ResetSignals: l.resetSignals,
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
