package test

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// runRole runs the test binary as a worker (TEST_ROLE) and returns its
// exit status.
func runRole(role string) int {
	switch role {
	case "sigecho":
		return sigecho()
	}
	fmt.Fprintf(os.Stderr, "unknown TEST_ROLE %q\n", role)
	return 2
}

// echoSignals are what the sigecho worker reports: classic signals a user
// sends on purpose and two real-time ones.
var echoSignals = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGWINCH, unix.SIGALRM, unix.SIGCONT, syscall.Signal(36), syscall.Signal(64),
}

// sigName is unix.SignalName, with a name for real-time signals too.
func sigName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return fmt.Sprintf("SIG%d", int(s))
}

// sigecho is a worker that is up within a millisecond or two, like any Go
// or C program: it prints "ready pid=P" once its handlers are in place,
// then "sig NAME" per signal; TERM and INT end it with status 0.
func sigecho() int {
	c := make(chan os.Signal, 64)
	signal.Notify(c, echoSignals...)
	fmt.Printf("ready pid=%d\n", os.Getpid())
	for s := range c {
		sig := s.(syscall.Signal)
		fmt.Printf("sig %s\n", sigName(sig))
		if sig == unix.SIGTERM || sig == unix.SIGINT {
			return 0
		}
	}
	return 0
}
