package main

// PID 1's set-up: signals subscribed first, inherited descriptors closed
// on exec, the subreaper, the terminal, and output that a reader who went
// away cannot turn into a SIGPIPE.

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/internal/startup/onecpu"
	"github.com/baton-init/baton/reaper"
	"github.com/baton-init/baton/spawn"
	"github.com/baton-init/baton/supervisor"
)

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

// becomeReaper makes baton a child subreaper when it is not PID 1 (or
// BATON_SUBREAPER=true asks for it), so that it still reaps orphans. It
// reports whether baton is PID 1, and whether it became a subreaper
// without being PID 1.
func becomeReaper(cfg *config, log zerolog.Logger) (pid1, subreaper bool) {
	pid1 = os.Getpid() == 1
	switch {
	case cfg.Subreaper == "true" || (cfg.Subreaper == "auto" && !pid1):
		if err := reaper.SetSubreaper(); err != nil {
			log.Warn().Err(err).Msg("not PID 1 and no subreaper: orphans will not be reaped by baton")
		} else {
			subreaper = !pid1
		}
	case !pid1:
		log.Warn().Msg("not PID 1 and BATON_SUBREAPER=false: orphans will not be reaped by baton")
	}
	return pid1, subreaper
}

// setForeground gives the terminal on fd 0 to process group pgid (0:
// baton's own), the loop's Foreground in plain mode on a terminal.
func setForeground(pgid int) error {
	if pgid == 0 {
		pgid = unix.Getpgrp()
	}
	return spawn.SetForeground(pgid)
}
