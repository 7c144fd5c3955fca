//go:build linux

// Package reaper holds baton's PID 1 duties that touch the kernel's process
// table directly: draining wait4(-1) and becoming a child subreaper.
//
// It owns no goroutines, no logger and no state. The caller (the one event
// loop in package handoff) decides when to reap, and it alone must call Reap:
// a second waiter in the same process (os/exec's Wait, Process.Wait) would
// race it for exit statuses.
package reaper

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// exitSignalOffset is the shell convention for "killed by signal N": 128+N.
const exitSignalOffset = 128

// Exit is one reaped child: its pid and raw wait status.
type Exit struct {
	PID    int
	Status unix.WaitStatus
}

// Code returns the exit status a shell would report: the exit code, or
// 128+N when signal N killed the process.
func (e Exit) Code() int {
	return StatusCode(e.Status)
}

// StatusCode converts a wait status into a shell-style exit code.
func StatusCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return exitSignalOffset + int(ws.Signal())
	}
	// Stopped or continued: wait4 without WUNTRACED never reports these,
	// but be total rather than return a misleading 0.
	return exitSignalOffset + int(ws.StopSignal())
}

// Reap drains every child that has exited, without blocking. It returns
// when wait4 reports no more exited children (0) or no children at all
// (ECHILD). SIGCHLDs merge, so the caller must call Reap on every SIGCHLD and
// must not assume one signal means one exit.
//
// Returns:
//   - (exits, nil): possibly empty; every exited child has been reaped.
//   - (exits, err): an unexpected wait4 error; exits holds what was reaped
//     before it.
func Reap() ([]Exit, error) {
	var exits []Exit
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			return exits, nil // no children left: done
		case err != nil:
			return exits, fmt.Errorf("wait4: %w", err)
		case pid <= 0:
			return exits, nil // children exist, none has exited
		}
		exits = append(exits, Exit{PID: pid, Status: ws})
	}
}

// HasChildren reports whether the calling process has any child left, exited
// or not. It never reaps.
func HasChildren() bool {
	var info unix.Siginfo
	// WNOWAIT leaves a zombie in place; ECHILD is the only "none" answer.
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return !errors.Is(err, unix.ECHILD)
}

// SetSubreaper marks the calling process as a child subreaper, so orphaned
// descendants are reparented to it instead of to the namespace's PID 1
// (prctl PR_SET_CHILD_SUBREAPER, Linux 3.4+). tini does the same with -s.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_CHILD_SUBREAPER: %w", err)
	}
	return nil
}
