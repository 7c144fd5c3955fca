//go:build linux

package spawn

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/baton-init/baton/intercept"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// ShimName is argv[0] when baton re-executes itself as the worker shim.
// main checks it before anything else. The colon makes it a name no user
// command would be started as.
const ShimName = "baton:shim"

// Shim runs in the child, between baton and the worker command: it applies
// rlimits and the user, sets LISTEN_PID to its own pid, restores default
// signal handling and an empty signal mask, then execs the command in
// place, so the pid the worker sees is the pid baton recorded.
//
// baton holds back the signals it would send the worker until the shim has
// exec'd: -exec-fd names a pipe the shim keeps open until then.
//
// It only returns on failure, with the shell's exit code (127, 126) after
// printing one line on stderr (which is the worker's stderr).
func Shim(args []string) int {
	var (
		listenPID   bool
		watchdogPID bool
		rlimits     []*units.Ulimit
		user        string
		bindFD      = -1
	)
	i := 0
	for ; i < len(args); i++ {
		switch args[i] {
		case "-listen-pid":
			listenPID = true
			continue
		case "-watchdog-pid":
			watchdogPID = true
			continue
		case "-rlimit", "-user", "-exec-fd", "-bind-fd":
			if i+1 >= len(args) {
				return shimFail(fmt.Errorf("shim: %s needs a value", args[i]), 2)
			}
			switch args[i] {
			case "-exec-fd":
				fd, err := strconv.Atoi(args[i+1])
				if err != nil || fd < listenFdsStart {
					return shimFail(fmt.Errorf("shim: bad -exec-fd %q", args[i+1]), 2)
				}
				// Closed by the exec: that EOF tells baton the command runs.
				unix.CloseOnExec(fd)
			case "-bind-fd":
				fd, err := strconv.Atoi(args[i+1])
				if err != nil || fd < listenFdsStart {
					return shimFail(fmt.Errorf("shim: bad -bind-fd %q", args[i+1]), 2)
				}
				bindFD = fd
			case "-user":
				user = args[i+1]
			default:
				u, err := units.ParseUlimit(args[i+1])
				if err != nil {
					return shimFail(fmt.Errorf("shim: rlimit %q: %w", args[i+1], err), 2)
				}
				rlimits = append(rlimits, u)
			}
			i++
			continue
		case "--":
			i++
		}
		break
	}
	if len(args)-i < 2 {
		return shimFail(fmt.Errorf("shim: want -- PATH ARGV0 [ARG...]"), 2)
	}
	path, argv := args[i], args[i+1:]

	for _, u := range rlimits {
		rl, err := u.GetRlimit()
		if err != nil {
			return shimFail(fmt.Errorf("rlimit %s: %w", u, err), 1)
		}
		lim := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		if err := unix.Setrlimit(rl.Type, &lim); err != nil {
			return shimFail(fmt.Errorf("setrlimit %s: %w", u, err), 1)
		}
	}
	if user != "" {
		if err := dropTo(user); err != nil {
			return shimFail(err, 1)
		}
	}
	env := os.Environ()
	if listenPID {
		env = setEnv(env, "LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	if watchdogPID {
		env = setEnv(env, "WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}

	// An inherited SIG_IGN survives execve: the Go runtime leaves it in
	// place for HUP, INT, CONT, TSTP, TTIN, TTOU and its reserved signals.
	// Reset directly, not through os/signal, which would catch them.
	resetIgnored()
	// The mask is per thread and inherited by execve: clear it on the
	// thread that execs.
	runtime.LockOSThread()
	var empty unix.Sigset_t
	_ = unix.PthreadSigmask(unix.SIG_SETMASK, &empty, nil) // best effort: exec follows either way
	if bindFD >= 0 {
		// Last, on the thread that execs: the filter and no_new_privs
		// are per thread until the exec makes it the only one. Never
		// exec without it (a half-started worker).
		if err := interceptBinds(bindFD); err != nil {
			return shimFail(err, 1)
		}
	}
	err := syscall.Exec(path, argv, env)
	if errors.Is(err, unix.ENOEXEC) {
		// Returns only if there is no shell either: report the script.
		_ = syscall.Exec(shell, shellArgv(path, argv), env)
	}
	err = classifyExec(path, err)
	return shimFail(err, Code(err))
}

// interceptBinds installs the bind filter and sends its listener to baton
// over sock, then closes both.
func interceptBinds(sock int) error {
	fd, err := intercept.Install()
	if err == nil {
		err = intercept.Send(sock, fd)
		_ = unix.Close(fd)
	}
	_ = unix.Close(sock)
	if err != nil {
		return fmt.Errorf("BATON_BIND=intercept: %w", err)
	}
	return nil
}

// dropTo applies "uid:gid:g1,g2" as the shim's identity.
func dropTo(spec string) error {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		return fmt.Errorf("shim: bad user %q", spec)
	}
	uid, err1 := strconv.Atoi(parts[0])
	gid, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("shim: bad user %q", spec)
	}
	groups := []int{}
	if parts[2] != "" {
		for _, g := range strings.Split(parts[2], ",") {
			n, err := strconv.Atoi(g)
			if err != nil {
				return fmt.Errorf("shim: bad group %q", g)
			}
			groups = append(groups, n)
		}
	}
	// Order matters: groups and gid need privilege, so uid goes last.
	// The syscall package applies these to every thread (Go 1.16+).
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	return nil
}

func setEnv(env []string, key, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// shimFail prints one JSON line in baton's log format and returns code.
// The write is raw: through os.Stderr, a stderr nobody reads would make the
// Go runtime end the shim with SIGPIPE instead of code.
func shimFail(err error, code int) int {
	line := fmt.Sprintf("{\"level\":\"error\",\"err\":%q,\"code\":%d,\"message\":\"worker exec failed\"}\n", err.Error(), code)
	_, _ = unix.Write(2, []byte(line)) // nowhere else to report it
	return code
}
