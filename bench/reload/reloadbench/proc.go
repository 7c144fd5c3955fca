package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
// (and its workers', which inherit it) is parsed for events.
type server struct {
	cmd    *exec.Cmd
	exited chan struct{}

	mu     sync.Mutex
	events []event
	tail   []string // last non-JSON lines, for diagnosis
	more   chan struct{}
	eof    bool
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
	s := &server{exited: make(chan struct{}), more: make(chan struct{}, 1)}
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
	go s.read(r, verbose)
	active.Lock()
	active.s = s
	active.Unlock()
	return s, nil
}

func (s *server) read(r io.ReadCloser, verbose bool) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if verbose {
			fmt.Fprintln(os.Stderr, line)
		}
		var ev event
		s.mu.Lock()
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &ev) == nil && ev.Message != "" {
			ev.seen = time.Now()
			s.events = append(s.events, ev)
		} else {
			s.tail = append(s.tail, line)
			if len(s.tail) > 30 {
				s.tail = s.tail[1:]
			}
		}
		s.mu.Unlock()
		select {
		case s.more <- struct{}{}:
		default:
		}
	}
	s.mu.Lock()
	s.eof = true
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
}

var errAborted = errors.New("swap aborted")

// await returns the first event at index >= *cursor named msg that ok
// accepts, advancing *cursor past it. A "swap aborted", the process's exit or
// the timeout end the wait with an error.
func (s *server) await(cursor *int, msg string, timeout time.Duration, ok func(event) bool) (event, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for *cursor < len(s.events) {
			ev := s.events[*cursor]
			*cursor++
			if ev.Message == "swap aborted" {
				s.mu.Unlock()
				return ev, fmt.Errorf("%w: gen %d: %s", errAborted, ev.Gen, ev.Reason)
			}
			if ev.Message == msg && (ok == nil || ok(ev)) {
				s.mu.Unlock()
				return ev, nil
			}
		}
		eof := s.eof
		s.mu.Unlock()
		if eof {
			return event{}, fmt.Errorf("server output ended while waiting for %q%s", msg, s.tailText())
		}
		select {
		case <-s.more:
		case <-s.exited:
			// let the reader catch up, then report
			time.Sleep(100 * time.Millisecond)
			s.mu.Lock()
			pending := *cursor < len(s.events)
			s.mu.Unlock()
			if !pending {
				return event{}, fmt.Errorf("server exited while waiting for %q%s", msg, s.tailText())
			}
		case <-deadline.C:
			return event{}, fmt.Errorf("no %q within %v%s", msg, timeout, s.tailText())
		}
	}
}

func (s *server) snapshot() []event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event(nil), s.events...)
}

func (s *server) tailText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tail) == 0 {
		return ""
	}
	return "; last output:\n  " + strings.Join(s.tail, "\n  ")
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
