//go:build linux

package spawn

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Signal state a worker must not inherit from baton: a blocked signal mask
// (inherited across fork and execve) and ignored dispositions (SIG_IGN
// survives execve; handlers do not). baton's own parent may have left both
// (a shell, a supervisor, a careless wrapper), and the Go runtime keeps
// some of it: the mask it started with on its threads, and SIG_IGN for the
// signals it never takes over (32 and 34, the C libraries' internal ones).

// sigDfl and sigIgn are the kernel's handler values.
const (
	sigDfl = 0
	sigIgn = 1
)

// maxSignal is the highest signal number on Linux.
const maxSignal = 64

// kernelSigaction is the kernel's struct sigaction, as far as it is read
// here: the handler comes first on every architecture baton builds for,
// and an all-zero action is SIG_DFL with no flags and an empty mask.
type kernelSigaction struct {
	handler, flags, restorer, mask uint64
}

// sigsetSize is the kernel's sigset_t size, which rt_sigaction checks.
const sigsetSize = 8

func sigaction(sig int, act, old *kernelSigaction) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig),
		uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), sigsetSize, 0, 0)
	return e
}

func catchable(sig int) bool { return sig != int(unix.SIGKILL) && sig != int(unix.SIGSTOP) }

// libcInternal are glibc's SIGCANCEL and SIGSETXID: no program can set
// them through the C library, which installs its own handlers when it
// needs them. Some parents leave them ignored (hyperfine does); that is no
// reason to start every worker through the shim. 34 is not among them: it
// is glibc's SIGRTMIN, which programs use.
func libcInternal(sig int) bool { return sig == 32 || sig == 33 }

// InheritsIgnored reports whether the calling process ignores a signal
// (SIG_IGN) that a child started directly would inherit and that matters
// to it. Workers are then started through the shim, which resets it. For a
// Go process (baton) only 34 can be left so after it subscribed every
// signal: the runtime never takes it over, and a caller that ignored it
// would pass that on.
func InheritsIgnored() bool {
	for sig := 1; sig <= maxSignal; sig++ {
		var old kernelSigaction
		if catchable(sig) && !libcInternal(sig) && sigaction(sig, nil, &old) == 0 && old.handler == sigIgn {
			return true
		}
	}
	return false
}

// resetIgnored sets every ignored signal back to SIG_DFL. Handlers need no
// reset: execve does that.
func resetIgnored() {
	for sig := 1; sig <= maxSignal; sig++ {
		var old, dfl kernelSigaction
		if catchable(sig) && sigaction(sig, nil, &old) == 0 && old.handler == sigIgn {
			_ = sigaction(sig, &dfl, nil) // only fails for signals nobody can set
		}
	}
}

// withEmptyMask runs f on a thread whose signal mask is empty. A child
// forked by f starts with that mask (the Go runtime restores the forking
// thread's mask in the child), whatever mask baton's threads inherited.
// Meanwhile signals baton's threads block may arrive on this thread; baton
// handles every signal it does not leave to the runtime, so they go where
// they would have gone.
func withEmptyMask(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var empty, old unix.Sigset_t
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &empty, &old); err != nil {
		f() // cannot happen with valid arguments; start the child anyway
		return
	}
	defer func() { _ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }() // restores a mask just read
	f()
}

// SetForeground makes pgid the foreground process group of the terminal on
// fd 0 (tcsetpgrp). baton may call it from a background group: the kernel
// then sends the caller SIGTTOU instead, unless the caller blocks it, which
// it does here on the calling thread.
func SetForeground(pgid int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ttou, old unix.Sigset_t
	ttou.Val[(unix.SIGTTOU-1)/64] |= 1 << ((uint(unix.SIGTTOU) - 1) % 64)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &ttou, &old); err != nil {
		return err
	}
	defer func() { _ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }() // restores a mask just read
	return unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, pgid)
}
