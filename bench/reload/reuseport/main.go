// Command reuseport is the "naive per-worker SO_REUSEPORT" design that
// bench/reload/run measures against baton. It is not part of baton.
//
//	reuseport super -addr HOST:PORT [-workers N] -- COMMAND [ARG...]
//	reuseport bind -addr HOST:PORT -- COMMAND [ARG...]    (internal)
//
// super starts a generation of N workers, each through bind, which creates
// the worker's OWN listening socket (SO_REUSEADDR + SO_REUSEPORT, listen
// 4096, non-blocking) as fd 3 and execs COMMAND with LISTEN_FDS=1. With
// COMMAND = `baton hello` the worker and its drain are baton's; only the
// socket differs. On SIGHUP super starts a new generation, waits for READY=1
// from each of its workers (NOTIFY_SOCKET, SO_PASSCRED), then SIGTERMs the
// old one; a SIGHUP during a swap is coalesced into one more. On SIGTERM it
// stops every worker (SIGKILL after 10 s). It logs, on stderr, the subset of
// baton's JSON lines the driver reads: "generation ready", "swap begun",
// "swap complete", "swap aborted", "worker ready", "worker exited".
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bind" {
		os.Exit(bind(os.Args[2:]))
	} else if len(os.Args) > 1 && os.Args[1] == "super" {
		os.Exit(super(os.Args[2:]))
	}
	fmt.Fprint(os.Stderr, "usage: reuseport super -addr HOST:PORT [-workers N] -- COMMAND [ARG...]\n")
	os.Exit(2)
}

// bind creates this worker's own SO_REUSEPORT listener as fd 3 and execs
// the command on it. Only raw system calls run before the exec, so nothing
// of the Go runtime can be using fd 3 when it is replaced.
func bind(args []string) int {
	fs := flag.NewFlagSet("bind", flag.ContinueOnError)
	addr := fs.String("addr", "", "HOST:PORT to bind (IPv4)")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return 2
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().Is4() {
		fmt.Fprintf(os.Stderr, "reuseport bind: -addr %q: want IPv4 HOST:PORT\n", *addr)
		return 2
	}
	path, err := exec.LookPath(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "reuseport bind: %v\n", err)
		return 127
	}
	// Not close-on-exec: the worker inherits it. Non-blocking, as baton
	// creates its sockets, so the worker sees the same kind of fd.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1)
		}
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	if err == nil {
		err = unix.Listen(fd, 4096) // what Go's net.Listen asks for here (somaxconn)
	}
	if err == nil && fd != 3 {
		err = unix.Dup3(fd, 3, 0)
		_ = unix.Close(fd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "reuseport bind %s: %v\n", *addr, err)
		return 1
	}
	env := append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=http", "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err = unix.Exec(path, fs.Args(), env)
	fmt.Fprintf(os.Stderr, "reuseport bind: exec %s: %v\n", path, err)
	return 126
}

type worker struct {
	gen, idx, pid int
	started       time.Time
	ready         bool
}

type generation struct {
	num     int
	begun   time.Time
	workers []*worker
}

// event is a worker's exit (code) or its READY=1 (ready).
type event struct {
	pid, code int
	ready     bool
}

type supervisor struct {
	addr, self, notify string
	n, lastGen         int
	command            []string
	byPID              map[int]*worker
	current, next      *generation
	queued             bool
	events             chan event
}

func super(args []string) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGHUP, unix.SIGTERM, unix.SIGINT)
	fs := flag.NewFlagSet("super", flag.ContinueOnError)
	addr := fs.String("addr", "", "HOST:PORT every worker binds")
	n := fs.Int("workers", 2, "workers per generation")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 || *addr == "" || *n < 1 {
		return 2
	}
	s := &supervisor{addr: *addr, n: *n, command: fs.Args(), byPID: map[int]*worker{}, events: make(chan event, 64)}
	self, err := os.Executable()
	dir := ""
	if err == nil {
		dir, err = os.MkdirTemp("", "reuseport.")
		defer os.RemoveAll(dir)
	}
	if err == nil {
		s.self, s.notify = self, filepath.Join(dir, "notify")
		err = s.listenNotify()
	}
	if err == nil {
		s.current, err = s.startGen()
	}
	if err != nil {
		logf("error", map[string]any{"err": err.Error()})
		s.stopAll()
		return 1
	}
	for {
		select {
		case sig := <-sigs:
			if sig != unix.SIGHUP {
				s.stopAll()
				return 0
			}
			if s.next != nil {
				s.queued = true
			} else {
				s.beginSwap()
			}
		case ev := <-s.events:
			w := s.byPID[ev.pid]
			switch {
			case w == nil:
			case ev.ready && !w.ready:
				w.ready = true
				logf("worker ready", map[string]any{"gen": w.gen, "worker": w.idx, "pid": w.pid, "elapsed": ms(time.Since(w.started))})
				s.checkReady(w.gen)
			case !ev.ready:
				delete(s.byPID, ev.pid)
				logf("worker exited", map[string]any{"gen": w.gen, "worker": w.idx, "pid": w.pid, "code": ev.code})
				if s.next != nil && w.gen == s.next.num && !w.ready {
					logf("swap aborted", map[string]any{"gen": w.gen, "reason": "worker exited before ready"})
					s.retire(s.next)
					s.next = nil
				} else if w.gen == 1 && s.current.num == 1 && !w.ready {
					logf("error", map[string]any{"err": "first generation failed"})
					s.stopAll()
					return 1
				}
			}
		}
	}
}

func (s *supervisor) startGen() (*generation, error) {
	s.lastGen++
	g := &generation{num: s.lastGen, begun: time.Now()}
	for i := range s.n {
		cmd := exec.Command(s.self, append([]string{"bind", "-addr", s.addr, "--"}, s.command...)...)
		cmd.Env = append(os.Environ(), "BATON_GENERATION="+strconv.Itoa(g.num), "BATON_WORKER="+strconv.Itoa(i), "NOTIFY_SOCKET="+s.notify)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return g, err
		}
		w := &worker{gen: g.num, idx: i, pid: cmd.Process.Pid, started: time.Now()}
		g.workers = append(g.workers, w)
		s.byPID[w.pid] = w
		go func() {
			err := cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
				if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
					code = 128 + int(st.Signal())
				}
			}
			s.events <- event{pid: w.pid, code: code}
		}()
	}
	return g, nil
}

func (s *supervisor) beginSwap() {
	logf("swap begun", map[string]any{"gen": s.lastGen + 1})
	g, err := s.startGen()
	s.next = g
	if err != nil {
		logf("swap aborted", map[string]any{"gen": g.num, "reason": err.Error()})
		s.retire(g)
		s.next = nil
	}
}

// checkReady completes the first generation, or the swap, once every
// worker of generation gen is ready.
func (s *supervisor) checkReady(gen int) {
	g := s.current
	if s.next != nil {
		g = s.next
	}
	if g.num != gen {
		return
	}
	for _, w := range g.workers {
		if !w.ready {
			return
		}
	}
	if g == s.current {
		logf("generation ready", map[string]any{"gen": g.num, "elapsed": ms(time.Since(g.begun))})
		return
	}
	old := s.current
	s.current, s.next = g, nil
	logf("swap complete", map[string]any{"gen": g.num, "elapsed": ms(time.Since(g.begun))})
	s.retire(old)
	if s.queued {
		s.queued = false
		s.beginSwap()
	}
}

func (s *supervisor) retire(g *generation) {
	for _, w := range g.workers {
		if _, ok := s.byPID[w.pid]; ok {
			_ = unix.Kill(w.pid, unix.SIGTERM) // it may have exited already
		}
	}
}

// stopAll SIGTERMs every worker and waits for them, SIGKILL after 10 s.
func (s *supervisor) stopAll() {
	sig := unix.SIGTERM
	for len(s.byPID) > 0 {
		for pid := range s.byPID {
			_ = unix.Kill(pid, sig)
		}
		deadline := time.After(10 * time.Second)
		for wait := true; wait && len(s.byPID) > 0; {
			select {
			case ev := <-s.events:
				if !ev.ready {
					delete(s.byPID, ev.pid)
				}
			case <-deadline:
				sig, wait = unix.SIGKILL, false
			}
		}
	}
}

// listenNotify opens a NOTIFY_SOCKET and sends an event for each READY=1,
// attributed to its sender by SO_PASSCRED.
func (s *supervisor) listenNotify() error {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.notify, Net: "unixgram"})
	if err != nil {
		return err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	serr := raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if serr != nil || err != nil {
		return errors.Join(serr, err)
	}
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if cred, err := unix.ParseUnixCredentials(&m); err == nil && strings.Contains("\n"+string(buf[:n])+"\n", "\nREADY=1\n") {
					s.events <- event{pid: int(cred.Pid), ready: true}
				}
			}
		}
	}()
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func logf(msg string, fields map[string]any) {
	fields["message"] = msg
	fields["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(fields) // only plain values: cannot fail
	_, _ = os.Stderr.Write(append(b, '\n'))
}
