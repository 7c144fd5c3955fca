package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/bench/internal/logread"
)

// event is one JSON log line of a server under test (baton's log contract;
// the seed master and the reuseport supervisor write the same messages).
type event struct {
	Message string  `json:"message"`
	Gen     int     `json:"gen"`
	Worker  int     `json:"worker"`
	PID     int     `json:"pid"`
	Elapsed float64 `json:"elapsed"` // ms
	Reason  string  `json:"reason"`
	Addr    string  `json:"addr"`
	seen    time.Time
}

// server is a process under test, in its own process group, whose stderr
// (and its workers', which inherit it) is parsed for events; the last 30
// other lines are kept for diagnosis.
type server struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *logread.Log[event]
}

// active is the server under test that is running, if any (one at a time).
var active struct {
	sync.Mutex
	s *server
}

// stopActive stops the running server under test, if any.
func stopActive(wait time.Duration) {
	active.Lock()
	defer active.Unlock()
	if active.s != nil {
		_ = active.s.stop(wait)
	}
}

func startServer(argv, env []string, verbose bool) (*server, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	s := &server{exited: make(chan struct{}), log: logread.New[event](30)}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = env
	s.cmd.Stderr = w
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	go func() {
		_, _ = s.cmd.Process.Wait()
		close(s.exited)
	}()
	var echo func(string, time.Time)
	if verbose {
		echo = func(line string, _ time.Time) { fmt.Fprintln(os.Stderr, line) }
	}
	go s.log.Read(r, parseEvent, echo)
	active.Lock()
	active.s = s
	active.Unlock()
	return s, nil
}

// parseEvent returns the event a line is, if it is one.
func parseEvent(line string, seen time.Time) (ev event, ok bool) {
	if !logread.JSON(line, &ev) || ev.Message == "" {
		return ev, false
	}
	ev.seen = seen
	return ev, true
}

var errAborted = errors.New("swap aborted")

// await returns the first event at index >= *cursor named msg that ok
// accepts, advancing *cursor past it. A "swap aborted", the process's exit or
// the timeout end the wait with an error.
func (s *server) await(cursor *int, msg string, timeout time.Duration, ok func(event) bool) (event, error) {
	ev, err := s.log.Await(cursor, timeout, s.exited, func(ev event) (bool, error) {
		if ev.Message == "swap aborted" {
			return true, fmt.Errorf("%w: gen %d: %s", errAborted, ev.Gen, ev.Reason)
		}
		return ev.Message == msg && (ok == nil || ok(ev)), nil
	})
	tail := func() string { return s.log.TailText("; last output:\n  ") }
	switch err {
	case logread.ErrEnded:
		err = fmt.Errorf("server output ended while waiting for %q%s", msg, tail())
	case logread.ErrExited:
		err = fmt.Errorf("server exited while waiting for %q%s", msg, tail())
	case logread.ErrTimeout:
		err = fmt.Errorf("no %q within %v%s", msg, timeout, tail())
	}
	return ev, err
}

func (s *server) signal(sig syscall.Signal) error { return s.cmd.Process.Signal(sig) }

// stop sends SIGTERM to the server and waits up to wait for it to exit, then
// SIGKILLs its process group (workers that stayed in it go too). Workers that
// baton put in process groups of their own are stopped by baton itself.
func (s *server) stop(wait time.Duration) error {
	_ = s.cmd.Process.Signal(unix.SIGTERM) // it may be gone already
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.exited:
		return nil
	case <-t.C:
		_ = unix.Kill(-s.cmd.Process.Pid, unix.SIGKILL)
		<-s.exited
		return fmt.Errorf("server did not exit within %v of SIGTERM: killed", wait)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// cleanEnv is our environment without anything that would configure the
// server under test from the outside (we may ourselves run under baton).
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "BATON_") || strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "HELLO_") ||
			k == "NOTIFY_SOCKET" || k == "PORT" || k == "WORKERS" || k == "GEN" || k == "HOST" || k == "NODE_OPTIONS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// waitConnect polls addr until a TCP connect succeeds.
func waitConnect(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting within %v: %v", addr, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
