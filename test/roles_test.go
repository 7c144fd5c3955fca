package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// runRole runs the test binary as a worker (TEST_ROLE) and returns its
// exit status.
func runRole(role string) int {
	switch role {
	case "sigecho":
		return sigecho()
	case "naive":
		return naive()
	case "relay":
		return relayWorker()
	case "noseccomp":
		return noSeccomp()
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

// notifyReady sends READY=1 to $NOTIFY_SOCKET, if set, as a worker that
// speaks baton's protocol does (Go's net turns a leading '@' into an
// abstract name).
func notifyReady() {
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		if c, err := net.Dial("unixgram", addr); err == nil {
			c.Write([]byte("READY=1"))
			c.Close()
		}
	}
}

// naive is a Go HTTP worker written the way most are: on SIGTERM it closes
// its listeners and calls http.Server.Shutdown at once, which also closes
// idle keep-alive connections and drops connections accepted but not yet
// read. It takes its listeners from LISTEN_FDS and says READY=1.
func naive() int {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || n < 1 {
		fmt.Fprintln(os.Stderr, "naive: no LISTEN_FDS for this process")
		return 2
	}
	gen := os.Getenv("BATON_GENERATION")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Baton-Generation", gen)
		fmt.Fprintf(w, "hello from generation %s\n", gen)
	})}
	for fd := 3; fd < 3+n; fd++ {
		ln, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "naive:", err)
			return 1
		}
		go srv.Serve(ln)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM)
	notifyReady()
	// TEST_FAIL_AFTER plays a release that breaks once it is up: that long
	// after READY=1 it shuts down the same naive way, unasked and without
	// a word to baton (no STOPPING=1), and exits 1.
	var fail <-chan time.Time
	if d, err := time.ParseDuration(os.Getenv("TEST_FAIL_AFTER")); err == nil {
		fail = time.After(d)
	}
	select {
	case <-sigs:
	case <-fail:
		srv.Shutdown(context.Background())
		return 1
	}
	srv.Shutdown(context.Background())
	return 0
}
