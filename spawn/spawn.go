//go:build linux

// Package spawn starts one worker process in its own process group and
// signals that group. It owns nothing after Start returns: it never waits
// for a process (only baton's event loop calls wait4) and holds no state.
//
// Workers are started with syscall.StartProcess and raw descriptors, never
// os/exec: exec.Cmd.Wait would race the reaper for exit statuses, and
// ExtraFiles goes through os.File.Fd(), which switches a shared listening
// socket to blocking mode for every generation that holds it.
//
// Where the worker must learn its own pid before exec (LISTEN_PID), or get
// rlimits applied, baton re-executes itself as a small shim (see Shim) that
// sets them and then execs the command, keeping the pid.
package spawn

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/baton-init/baton/internal/clip"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// listenFdsStart is the first inherited listener descriptor (sd_listen_fds).
const listenFdsStart = 3

// Exit codes a shell uses when it cannot run a command.
const (
	CodeNotExecutable = 126
	CodeNotFound      = 127
)

// ErrNotFound and ErrNotExecutable classify a command that cannot be run;
// match them with errors.Is. Code maps them to 127 and 126.
var (
	ErrNotFound      = errors.New("command not found")
	ErrNotExecutable = errors.New("command not executable")
)

// Credential is the user a worker runs as.
type Credential struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups; empty means cleared
}

// Spec describes one worker.
type Spec struct {
	Path string   // command: a path, or a name looked up in PATH
	Args []string // argv; Args[0] is what the worker sees as its name
	Env  []string
	Dir  string
	// Files are raw descriptors placed at fd 3, 4, ... in the worker.
	// Raw ints on purpose: see the package doc.
	Files []int
	// ListenPID sets LISTEN_PID to the worker's own pid (through the shim).
	ListenPID bool
	// WatchdogPID sets WATCHDOG_PID to the worker's own pid (the shim).
	WatchdogPID bool
	// Output, when above 2, is the descriptor the process gets as its
	// stdout and stderr (a reload check's pipe); otherwise baton's own.
	Output  int
	Rlimits []*units.Ulimit
	Cred    *Credential
	// Foreground gives the worker's process group the terminal on fd 0.
	Foreground bool
	// Intercept (BATON_BIND=intercept): the shim installs the bind
	// filter (package intercept) just before exec and sends its listener
	// over InterceptFD, baton's socketpair end for this worker, which the
	// worker gets after the listeners and closes before exec.
	Intercept   bool
	InterceptFD int
	// ResetSignals starts the worker through the shim even when nothing
	// else needs it, so that signals baton ignores (InheritsIgnored) are
	// back to SIG_DFL in the worker.
	ResetSignals bool
}

// Proc is a started worker. Its process group id equals its pid.
type Proc struct {
	pid int
	// execFD is the read end of a pipe the shim holds until it execs the
	// command (close-on-exec): EOF means the command runs, or the shim is
	// gone. -1 when the worker was started directly.
	execFD int
}

// PID returns the worker's pid, which is also its process group id.
func (p *Proc) PID() int { return p.pid }

// InShim reports whether the worker was started through baton's shim and
// WaitExec has not yet seen it exec the command.
func (p *Proc) InShim() bool { return p.execFD >= 0 }

// WaitExec blocks until the worker runs its own command (or has exited),
// for a worker started through the shim; at once otherwise. Until then the
// process is baton's shim, a Go program: a signal sent to it would reach
// the Go runtime, not the command. Call it once, from any goroutine; it
// does not change what InShim reports.
func (p *Proc) WaitExec() {
	if p.execFD < 0 {
		return
	}
	var buf [1]byte
	for {
		n, err := unix.Read(p.execFD, buf[:])
		if n > 0 || errors.Is(err, unix.EINTR) {
			continue // the shim never writes; be total anyway
		}
		break // EOF: the write end closed on exec or exit
	}
	_ = unix.Close(p.execFD) // a pipe's read end: nothing to flush
}

// Signal sends sig to the worker's whole process group, so helpers it
// started receive it too (dumb-init's setsid mode does the same).
func (p *Proc) Signal(sig unix.Signal) error {
	if err := unix.Kill(-p.pid, sig); err != nil {
		return fmt.Errorf("kill -%d %s: %w", p.pid, unix.SignalName(sig), err)
	}
	return nil
}

// LookPath resolves a command the way a shell would and classifies the
// failure so the caller can exit 127 or 126.
func LookPath(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	if strings.Contains(name, "/") {
		// exec.LookPath reports a path that exists but is not executable as
		// a plain permission error; a shell says 126 for it.
		if _, serr := os.Stat(name); serr == nil {
			return "", fmt.Errorf("%s: %w", name, ErrNotExecutable)
		}
	}
	return "", fmt.Errorf("%s: %w", name, ErrNotFound)
}

// Code returns the shell exit status for an error from Start or LookPath:
// 127 when the command is missing, 126 when it cannot be executed, else 1.
func Code(err error) int {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrBadInterpreter):
		return CodeNotFound
	case errors.Is(err, ErrNotExecutable):
		return CodeNotExecutable
	}
	return 1
}

// ErrBadInterpreter is a script whose #! interpreter cannot be found: the
// file exists, so "command not found" would mislead. Code maps it to 127,
// as bash does.
var ErrBadInterpreter = errors.New("interpreter not found")

func classifyExec(path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		if interp, ok := interpreter(path); ok {
			hint := ""
			if strings.HasSuffix(interp, "\r") {
				hint = " (the #! line ends in CRLF: a file saved with Windows line ends?)"
			}
			return fmt.Errorf("%s: %w: interpreter %q%s", path, ErrBadInterpreter, interp, hint)
		}
		return fmt.Errorf("%s: %w", path, ErrNotFound)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.ENOEXEC), errors.Is(err, unix.EISDIR),
		errors.Is(err, unix.EPERM), errors.Is(err, unix.ETXTBSY):
		return fmt.Errorf("%s: %w: %v", path, ErrNotExecutable, err)
	}
	return fmt.Errorf("start %s: %w", path, err)
}

// interpreter returns the interpreter named by path's #! line, as the
// kernel reads it (up to the first space or tab; a CR stays part of it),
// when path is a regular file that has one.
func interpreter(path string) (string, bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return "", false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	var head [256]byte
	n, _ := f.Read(head[:]) // a short or failed read: no #! line seen
	line, _, _ := strings.Cut(string(head[:n]), "\n")
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return "", false
	}
	rest = strings.TrimLeft(rest, " \t")
	if i := strings.IndexAny(rest, " \t"); i >= 0 {
		rest = rest[:i]
	}
	return rest, rest != ""
}

// shell is what runs a file the kernel cannot execute (ENOEXEC: a script
// with no #! line), as execvp and so tini, dumb-init and catatonit do.
const shell = "/bin/sh"

// shellArgv is the argv execvp gives the shell for such a script.
func shellArgv(path string, argv []string) []string {
	out := []string{shell, path}
	if len(argv) > 1 {
		out = append(out, argv[1:]...)
	}
	return out
}

// needsShim reports whether the worker must be started through baton's
// shim: LISTEN_PID and rlimits can only be set between fork and exec, which
// Go cannot do itself.
func (s Spec) needsShim() bool {
	return s.ListenPID || s.WatchdogPID || len(s.Rlimits) > 0 || s.ResetSignals || s.Intercept
}

// Start starts the worker in a new process group, with an empty signal
// mask and default signal dispositions. It never waits for it.
func Start(s Spec) (*Proc, error) {
	path, err := LookPath(s.Path)
	if err != nil {
		return nil, err
	}
	files := make([]uintptr, 0, listenFdsStart+len(s.Files)+1)
	files = append(files, 0, 1, 2)
	if s.Output > 2 {
		files[1], files[2] = uintptr(s.Output), uintptr(s.Output)
	}
	for _, fd := range s.Files {
		files = append(files, uintptr(fd))
	}
	sys := &syscall.SysProcAttr{Setpgid: true}
	if s.Foreground {
		// Ctty is a descriptor number in the child; stdin stays fd 0.
		sys.Foreground = true
		sys.Ctty = 0
	}
	argv0, argv := path, s.Args
	execR, execW := -1, -1
	if s.needsShim() {
		// A stat, only for the workers that need the shim.
		if argv0, err = selfPath(); err != nil {
			return nil, err
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("start %s: exec pipe: %w", path, err)
		}
		execR, execW = p[0], p[1]
		// The shim gets the write end after the listeners; it is not in
		// LISTEN_FDS, and it closes on the command's exec.
		argv = s.shimArgs(path, len(files))
		files = append(files, uintptr(execW))
		if s.Intercept {
			files = append(files, uintptr(s.InterceptFD)) // -bind-fd: execFD+1
		}
		// The shim drops privileges itself, after raising rlimits as root.
	} else if s.Cred != nil {
		sys.Credential = &syscall.Credential{Uid: s.Cred.UID, Gid: s.Cred.GID, Groups: s.Cred.Groups}
		// An empty Groups slice makes Go call setgroups(0) and clear them.
		if sys.Credential.Groups == nil {
			sys.Credential.Groups = []uint32{}
		}
	}
	var pid int
	attr := &syscall.ProcAttr{Dir: s.Dir, Env: s.Env, Files: files, Sys: sys}
	withEmptyMask(func() {
		pid, _, err = syscall.StartProcess(argv0, argv, attr)
		if errors.Is(err, unix.ENOEXEC) && execR < 0 {
			// Nothing ran: the exec failed in the child, which is gone.
			if spid, _, serr := syscall.StartProcess(shell, shellArgv(path, argv), attr); serr == nil {
				pid, err = spid, nil
			} // no shell either: report the script
		}
	})
	if execW >= 0 {
		_ = unix.Close(execW) // the shim's copy alone keeps the pipe open now
	}
	if err != nil {
		if execR >= 0 {
			_ = unix.Close(execR)
		}
		return nil, classifyExec(argv0, err)
	}
	// The handle syscall.StartProcess returns is unused on Linux (it is the
	// pid again); nothing needs releasing.
	return &Proc{pid: pid, execFD: execR}, nil
}

// selfPath is the path baton re-executes itself from: /proc/self/exe,
// which still works when the binary was replaced on disk, or without /proc
// the path it was started as, looked up in PATH as the shell that started
// it did (a bare "baton" is no path to exec).
func selfPath() (string, error) {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err == nil {
		return self, nil
	}
	if len(os.Args) > 0 && os.Args[0] != "" {
		if p, err := exec.LookPath(os.Args[0]); err == nil {
			return filepath.Abs(p)
		}
	}
	return "", fmt.Errorf("cannot find baton's own binary to start the worker shim: no %s, and argv[0] %q is not found in PATH", self, clip.Value(firstArg()))
}

func firstArg() string {
	if len(os.Args) > 0 {
		return os.Args[0]
	}
	return ""
}

func (s Spec) shimArgs(path string, execFD int) []string {
	args := []string{ShimName, "-exec-fd", strconv.Itoa(execFD)}
	if s.Intercept {
		args = append(args, "-bind-fd", strconv.Itoa(execFD+1))
	}
	if s.ListenPID {
		args = append(args, "-listen-pid")
	}
	if s.WatchdogPID {
		args = append(args, "-watchdog-pid")
	}
	for _, u := range s.Rlimits {
		args = append(args, "-rlimit", u.String())
	}
	if s.Cred != nil {
		groups := make([]string, len(s.Cred.Groups))
		for i, g := range s.Cred.Groups {
			groups[i] = strconv.FormatUint(uint64(g), 10)
		}
		args = append(args, "-user", fmt.Sprintf("%d:%d:%s", s.Cred.UID, s.Cred.GID, strings.Join(groups, ",")))
	}
	args = append(args, "--", path)
	return append(args, s.Args...)
}

// Command is a command line with no shell (BATON_RELOAD_CHECK): split on
// white space, the first word a program found as LookPath finds it.
type Command []string

// Decode implements envconfig.Decoder.
func (c *Command) Decode(v string) error {
	f := strings.Fields(v)
	if len(f) == 0 {
		return errors.New("want a command, split on spaces (no shell)")
	}
	if _, err := LookPath(f[0]); err != nil {
		if errors.Is(err, ErrNotExecutable) {
			return fmt.Errorf("%q: not executable", clip.Value(f[0]))
		}
		return fmt.Errorf("%q: not found", clip.Value(f[0]))
	}
	*c = f
	return nil
}
