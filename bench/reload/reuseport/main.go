// Command reuseport is the "naive per-worker SO_REUSEPORT" design that
// bench/reload/run measures against baton. It is not part of baton.
//
//	reuseport super -addr HOST:PORT [-workers N] -- COMMAND [ARG...]
//	reuseport bind -addr HOST:PORT -- COMMAND [ARG...]    (internal)
//
// super is a tiny supervisor: it starts a generation of N workers, each as
// `reuseport bind -addr ADDR -- COMMAND...`; bind creates the worker's OWN
// listening socket (SO_REUSEADDR + SO_REUSEPORT, bound to ADDR, listen 4096,
// non-blocking) as fd 3 and execs COMMAND with LISTEN_FDS=1 and LISTEN_PID
// set to its own pid (exec keeps the pid). So with COMMAND = `baton hello`,
// the worker's HTTP server and its drain are exactly baton's built-in worker
// (close the listener, answer with Connection: close for 500 ms, shut down);
// the only difference from baton is that every worker has its own socket in
// the kernel's SO_REUSEPORT group instead of every generation sharing one.
//
// On SIGHUP super starts a new generation, waits until each of its workers
// has sent READY=1 to super's NOTIFY_SOCKET (attributed by SO_PASSCRED),
// then SIGTERMs the old generation. A SIGHUP during a swap is coalesced into
// one more swap after it. On SIGTERM or SIGINT it SIGTERMs every worker,
// waits for them (SIGKILL after 10 s) and exits 0.
//
// Its log is the subset of baton's JSON log lines the benchmark driver
// reads, on stderr: "generation ready" {gen, elapsed}, "swap begun" {gen},
// "swap complete" {gen, elapsed}, "swap aborted" {gen, reason},
// "worker ready" {gen, worker, pid, elapsed}, "worker exited" {gen, worker,
// pid, code}. elapsed is in milliseconds.
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
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "bind":
		os.Exit(bind(os.Args[2:]))
	case "super":
		os.Exit(super(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprint(os.Stderr, "usage: reuseport super -addr HOST:PORT [-workers N] -- COMMAND [ARG...]\n"+
		"       reuseport bind -addr HOST:PORT -- COMMAND [ARG...]\n")
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
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
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
	gen, idx int
	pid      int
	started  time.Time
	ready    bool
}

type generation struct {
	num     int
	begun   time.Time
	workers []*worker
}

type exitEvent struct {
	pid  int
	code int
}

type noteEvent struct {
	pid   int
	ready bool
}

type supervisor struct {
	addr     string
	n        int
	self     string
	command  []string
	notify   string
	byPID    map[int]*worker
	gens     map[int]*generation
	current  *generation
	next     *generation
	queued   bool
	lastGen  int
	exits    chan exitEvent
	stopping bool
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
	self, err := os.Executable()
	if err != nil {
		logf("error", map[string]any{"err": err.Error()})
		return 1
	}
	dir, err := os.MkdirTemp("", "reuseport.")
	if err != nil {
		logf("error", map[string]any{"err": err.Error()})
		return 1
	}
	defer os.RemoveAll(dir)
	notifyPath := filepath.Join(dir, "notify")
	notes, err := listenNotify(notifyPath)
	if err != nil {
		logf("error", map[string]any{"err": err.Error()})
		return 1
	}

	s := &supervisor{
		addr: *addr, n: *n, self: self, command: fs.Args(), notify: notifyPath,
		byPID: map[int]*worker{}, gens: map[int]*generation{},
		exits: make(chan exitEvent, 64),
	}
	g, err := s.startGen()
	if err != nil {
		logf("error", map[string]any{"err": err.Error()})
		s.stopAll()
		return 1
	}
	s.current = g
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case unix.SIGHUP:
				if s.stopping {
					continue
				}
				if s.next != nil {
					s.queued = true
					continue
				}
				s.beginSwap()
			default:
				s.stopping = true
				s.stopAll()
				return 0
			}
		case ev := <-notes:
			w := s.byPID[ev.pid]
			if w == nil || !ev.ready || w.ready {
				continue
			}
			w.ready = true
			logf("worker ready", map[string]any{"gen": w.gen, "worker": w.idx, "pid": w.pid, "elapsed": ms(time.Since(w.started))})
			s.checkReady(s.gens[w.gen])
		case ev := <-s.exits:
			w := s.byPID[ev.pid]
			if w == nil {
				continue
			}
			delete(s.byPID, ev.pid)
			logf("worker exited", map[string]any{"gen": w.gen, "worker": w.idx, "pid": w.pid, "code": ev.code})
			g := s.gens[w.gen]
			switch {
			case g == s.next && !w.ready:
				logf("swap aborted", map[string]any{"gen": g.num, "reason": "worker exited before ready"})
				s.retire(g)
				s.next = nil
			case g == s.current && g.num == 1 && !w.ready:
				logf("error", map[string]any{"err": "first generation failed"})
				s.stopAll()
				return 1
			}
			if s.live(g) == 0 {
				delete(s.gens, g.num)
			}
		}
	}
}

func (s *supervisor) live(g *generation) int {
	n := 0
	for _, w := range g.workers {
		if _, ok := s.byPID[w.pid]; ok {
			n++
		}
	}
	return n
}

func (s *supervisor) startGen() (*generation, error) {
	s.lastGen++
	g := &generation{num: s.lastGen, begun: time.Now()}
	s.gens[g.num] = g
	for i := range s.n {
		args := append([]string{"bind", "-addr", s.addr, "--"}, s.command...)
		cmd := exec.Command(s.self, args...)
		cmd.Env = append(os.Environ(),
			"BATON_GENERATION="+strconv.Itoa(g.num), "BATON_WORKER="+strconv.Itoa(i),
			"NOTIFY_SOCKET="+s.notify)
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
			s.exits <- exitEvent{pid: w.pid, code: code}
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

func (s *supervisor) checkReady(g *generation) {
	if g == nil || len(g.workers) < s.n {
		return
	}
	for _, w := range g.workers {
		if !w.ready {
			return
		}
	}
	elapsed := ms(time.Since(g.begun))
	switch g {
	case s.current:
		logf("generation ready", map[string]any{"gen": g.num, "elapsed": elapsed})
	case s.next:
		old := s.current
		s.current, s.next = g, nil
		logf("swap complete", map[string]any{"gen": g.num, "elapsed": elapsed})
		s.retire(old)
		if s.queued && !s.stopping {
			s.queued = false
			s.beginSwap()
		}
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
	for pid := range s.byPID {
		_ = unix.Kill(pid, unix.SIGTERM)
	}
	deadline := time.After(10 * time.Second)
	for len(s.byPID) > 0 {
		select {
		case ev := <-s.exits:
			delete(s.byPID, ev.pid)
		case <-deadline:
			for pid := range s.byPID {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
			deadline = time.After(10 * time.Second)
		}
	}
}

// listenNotify opens a NOTIFY_SOCKET at path and delivers each datagram,
// attributed to its sender by SO_PASSCRED.
func listenNotify(path string) (<-chan noteEvent, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	out := make(chan noteEvent, 64)
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				continue
			}
			for _, m := range msgs {
				cred, err := unix.ParseUnixCredentials(&m)
				if err != nil {
					continue
				}
				ready := false
				for _, line := range strings.Split(string(buf[:n]), "\n") {
					if line == "READY=1" {
						ready = true
					}
				}
				out <- noteEvent{pid: int(cred.Pid), ready: ready}
			}
		}
	}()
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func logf(msg string, fields map[string]any) {
	fields["message"] = msg
	fields["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(fields) // only plain values: cannot fail
	b = append(b, '\n')
	_, _ = os.Stderr.Write(b)
}
