// Package harness starts a server under test (baton, or a design it is
// compared with) for the benchmark programs under bench/, reads its JSON
// log as events, waits for them, and stops it: the one start/await/stop
// harness of bench/.
package harness

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

	"github.com/baton-init/baton/bench/internal/procfs"
	"github.com/baton-init/baton/internal/logread"
)

// Event is one JSON line of a server's log (baton's log contract; the seed
// master and the reuseport supervisor write the same messages), stamped
// with the time it was read.
type Event struct {
	Message string  `json:"message"`
	Gen     int     `json:"gen"`
	Worker  int     `json:"worker"`
	PID     int     `json:"pid"`
	Step    int     `json:"step"`
	Percent int     `json:"percent"`
	Parked  int     `json:"parked"`
	Code    int     `json:"code"`
	Elapsed float64 `json:"elapsed"` // ms
	Reason  string  `json:"reason"`
	Seen    time.Time
}

// Options are the optional parts of Start.
type Options struct {
	Verbose bool        // copy every line read to stderr
	Raw     string      // a file that gets every line read, stamped ("" for none)
	Hook    func(Event) // runs in the reader for each event, before any waiter sees it
}

// Server is a process under test in a process group of its own, which gets
// SIGTERM should this program die first. Its stdout and stderr (and its
// workers', which inherit them) are read line by line; the last 30 lines that
// are not events are kept for diagnosis.
type Server struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *logread.Log[Event]
}

var (
	runningMu sync.Mutex
	running   = map[*Server]bool{}
)

// StopAll stops every server still running (on a signal or a failure).
func StopAll(wait time.Duration) {
	runningMu.Lock()
	ss := make([]*Server, 0, len(running))
	for s := range running {
		ss = append(ss, s)
	}
	runningMu.Unlock()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { _ = s.Stop(wait) })
	}
	wg.Wait()
}

// Start starts argv with the environment env.
func Start(argv, env []string, o Options) (*Server, error) {
	var raw *os.File
	if o.Raw != "" {
		var err error
		if raw, err = os.Create(o.Raw); err != nil {
			return nil, err
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	s := &Server{exited: make(chan struct{}), log: logread.New[Event](30)}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = w, w
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	runningMu.Lock()
	running[s] = true
	runningMu.Unlock()
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	parse := func(line string, seen time.Time) (ev Event, ok bool) {
		if !logread.JSON(line, &ev) || ev.Message == "" {
			return ev, false
		}
		ev.Seen = seen
		if o.Hook != nil {
			o.Hook(ev)
		}
		return ev, true
	}
	each := func(line string, seen time.Time) {
		if o.Verbose {
			fmt.Fprintln(os.Stderr, line)
		}
		if raw != nil {
			fmt.Fprintf(raw, "%s %s\n", seen.Format("15:04:05.000000"), line)
		}
	}
	go func() {
		s.log.Read(r, parse, each)
		if raw != nil {
			raw.Close()
		}
	}()
	return s, nil
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Signal sends sig to the server.
func (s *Server) Signal(sig syscall.Signal) error { return s.cmd.Process.Signal(sig) }

// Events returns the events read so far.
func (s *Server) Events() []Event { return s.log.Snapshot() }

// ErrFailed is the error Await ends with when the server logged that a
// reload did not go through.
var ErrFailed = errors.New("reload failed")

// failure names the events that end a reload without its swap.
var failure = map[string]bool{"swap aborted": true, "canary aborted": true, "swap reverted": true,
	"swap halted": true, "reload refused": true}

// Await returns the first event at index >= *cursor that ok accepts,
// advancing *cursor past it; what names it in errors. A failure event, the
// server's exit or the timeout end the wait with an error.
func (s *Server) Await(cursor *int, what string, timeout time.Duration, ok func(Event) bool) (Event, error) {
	ev, err := s.log.Await(cursor, timeout, s.exited, func(ev Event) (bool, error) {
		if failure[ev.Message] {
			return true, fmt.Errorf("%w: %s (gen %d): %s", ErrFailed, ev.Message, ev.Gen, ev.Reason)
		}
		return ok(ev), nil
	})
	tail := func() string { return s.log.TailText("; last output:\n  ") }
	switch err {
	case logread.ErrEnded:
		err = fmt.Errorf("server output ended while waiting for %s%s", what, tail())
	case logread.ErrExited:
		err = fmt.Errorf("server exited while waiting for %s%s", what, tail())
	case logread.ErrTimeout:
		err = fmt.Errorf("no %s within %v%s", what, timeout, tail())
	}
	return ev, err
}

// Message is an Await condition: an event named msg of a generation gen
// accepts (any generation when gen is 0).
func Message(msg string, gen int) func(Event) bool {
	return func(e Event) bool { return e.Message == msg && (gen == 0 || e.Gen == gen) }
}

// Stop sends the server SIGTERM and waits up to wait for it to exit, then
// SIGKILLs its process group and every process that was below it.
func (s *Server) Stop(wait time.Duration) error {
	defer func() {
		runningMu.Lock()
		delete(running, s)
		runningMu.Unlock()
	}()
	select {
	case <-s.exited:
		return nil
	default:
	}
	left := procfs.Descendants(s.PID())
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.exited:
		return nil
	case <-t.C:
		_ = syscall.Kill(-s.PID(), syscall.SIGKILL)
		for _, p := range left {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
		<-s.exited
		return fmt.Errorf("server did not exit within %v of SIGTERM: killed", wait)
	}
}

// CleanEnv is this program's environment without anything that would
// configure the server under test from outside (we may run under baton
// ourselves), plus extra.
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "BATON_") || strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "HELLO_") ||
			strings.HasPrefix(k, "GUNICORN_") || strings.HasPrefix(k, "WATCHDOG_") || k == "NOTIFY_SOCKET" ||
			k == "PORT" || k == "WORKERS" || k == "GEN" || k == "HOST" || k == "NODE_OPTIONS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// FreeAddr returns a 127.0.0.1 address whose TCP port was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// PollUntil polls cond every 10 ms until it holds or timeout passes.
func PollUntil(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
