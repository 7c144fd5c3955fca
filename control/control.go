//go:build linux

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/handoff"
)

// The control socket is an abstract unix socket named
// @baton/ctl/<PID namespace inode>/<baton's pid in that namespace>.
// Abstract sockets need no filesystem (FROM scratch, read-only root) and
// belong to the network namespace. The pid in the name keeps every baton
// apart, also two in one PID and network namespace (Kubernetes'
// shareProcessNamespace, baton under baton); a client checks with
// SO_PEERCRED that the process answering is the one the name says.
const namePrefix = "@baton/ctl/"

const (
	// controlTimeout bounds one request end to end, as the client sees it.
	controlTimeout = 2 * time.Second
	// controlReadTimeout bounds the wait for a request line.
	controlReadTimeout = time.Second
	// maxRequest bounds a request line, newline included.
	maxRequest = 256
	// maxControlConns bounds the connections the control socket holds.
	maxControlConns = 64
	// controlBacklog is listen(2)'s backlog: more clients wait in their
	// connect (or fail), not in baton.
	controlBacklog = 64
)

// pidNS returns the inode of the PID namespace of /proc/<proc> ("self" or
// a pid), "-" when /proc cannot tell (no /proc at all).
func pidNS(proc string) string {
	ns, err := os.Readlink("/proc/" + proc + "/ns/pid")
	if err != nil {
		return "-"
	}
	return strings.Trim(strings.TrimPrefix(ns, "pid:"), "[]") // "pid:[4026531836]"
}

func name(ns string, pid int) string { return namePrefix + ns + "/" + strconv.Itoa(pid) }

// Listener is this baton's control socket, bound and listening.
type Listener struct {
	Addr string
	fd   int
	ln   net.Listener
}

// Listen binds this baton's control socket. It uses raw system calls, so
// that binding it before the first worker starts costs no set-up of the Go
// runtime's network poller; Serve does that later. A name that another
// process holds is an error naming that process: either a squatter, which
// `baton health` would otherwise believe, or a bug.
func Listen() (*Listener, error) {
	addr := name(pidNS("self"), os.Getpid())
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", addr, err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: addr})
	if errors.Is(err, unix.EADDRINUSE) {
		_ = unix.Close(fd)
		holder := "another process"
		if pid, perr := holderPID(addr); perr == nil {
			holder = "pid " + strconv.Itoa(pid)
		}
		return nil, fmt.Errorf("control socket %s is held by %s; baton will not share its name", addr, holder)
	}
	if err == nil {
		err = unix.Listen(fd, controlBacklog)
	}
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("control socket %s: %w", addr, err)
	}
	return &Listener{Addr: addr, fd: fd}, nil
}

// holderPID asks the kernel who listens on addr.
func holderPID(addr string) (int, error) {
	c, err := net.DialTimeout("unix", "\x00"+strings.TrimPrefix(addr, "@"), controlTimeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}

// peerCred returns the credentials of the process at the other end of a
// unix socket: for the client, those of the process that called listen.
// The kernel translates the pid into the caller's PID namespace (0 when the
// process is not visible there).
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// Serve answers requests until Close. Each request is a Query to the
// loop; the socket's rules bound what clients can make baton hold: at most
// maxControlConns connections (the oldest idle one gives way to a new
// one), a request line of maxRequest bytes within controlReadTimeout.
func (l *Listener) Serve(s *handoff.Supervisor) error {
	f := os.NewFile(uintptr(l.fd), l.Addr)
	ln, err := net.FileListener(f) // a duplicate, in the network poller
	_ = f.Close()                  // ours: the duplicate keeps the socket
	if err != nil {
		return fmt.Errorf("control socket %s: %w", l.Addr, err)
	}
	l.ln = ln
	go acceptLoop(ln, newLimiter(maxControlConns), func(h *held) { answer(s, h) }, time.Sleep)
	return nil
}

// Close stops serving and releases the name.
func (l *Listener) Close() error {
	if l.ln != nil {
		return l.ln.Close()
	}
	return unix.Close(l.fd)
}

// readRequestLine reads one request line of at most maxRequest bytes.
func readRequestLine(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxRequest), maxRequest).ReadString('\n')
	if err != nil {
		return "", err // EOF: too long, or the client went away
	}
	return strings.TrimSpace(line), nil
}

func answer(s *handoff.Supervisor, h *held) {
	_ = h.SetReadDeadline(time.Now().Add(controlReadTimeout)) // without it a slow client only holds a place longer
	req, err := readRequestLine(h)
	if err != nil || (req != "status" && req != "reload") || !h.working() {
		return
	}
	if req == "reload" {
		answerReload(s, h)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	st, err := s.Query(ctx)
	if err != nil {
		return // the client treats no answer as not ready
	}
	_ = h.SetWriteDeadline(time.Now().Add(controlTimeout))
	_ = json.NewEncoder(h).Encode(st) // a client that went away gets nothing
}

// maxReloadWait bounds how long the control socket waits for a reload's
// outcome (the client's own --timeout is usually shorter).
const maxReloadWait = time.Hour

// answerReload runs a reload and answers its outcome. A reload changes
// what serves, so only root and baton's own user may ask (SO_PEERCRED);
// status is anyone's in the network namespace.
func answerReload(s *handoff.Supervisor, h *held) {
	var o handoff.Outcome
	cred, err := peerCred(h.Conn)
	switch {
	case err != nil:
		o.Reason = "peer credentials: " + err.Error()
	case cred.Uid != 0 && int(cred.Uid) != os.Geteuid():
		o.Reason = "permission denied: uid " + strconv.Itoa(int(cred.Uid)) + " may not reload baton (root or baton's own user may)"
	default:
		ctx, cancel := context.WithTimeout(context.Background(), maxReloadWait)
		defer cancel()
		if o, err = s.Reload(ctx, "baton reload"); err != nil {
			return // the loop has ended: the client sees no answer
		}
	}
	_ = h.SetWriteDeadline(time.Now().Add(controlTimeout))
	_ = json.NewEncoder(h).Encode(o)
}

// AskReload asks the baton t for a reload and waits up to wait for its
// outcome.
func AskReload(t Target, wait time.Duration) (handoff.Outcome, error) {
	var o handoff.Outcome
	err := ask(t, "reload", wait, &o)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return o, fmt.Errorf("no outcome within %v (the reload may still complete)", wait)
	}
	return o, err
}

// ask sends the baton t one request line and decodes its JSON answer into
// v, all within wait.
func ask(t Target, req string, wait time.Duration, v any) error {
	c, err := dial(t)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		return fmt.Errorf("control %s: %w", t.Addr, err)
	}
	if err := json.NewDecoder(io.LimitReader(c, 1<<16)).Decode(v); err != nil {
		return fmt.Errorf("control %s: %w", t.Addr, err)
	}
	return nil
}

// Target is one baton to ask: its control socket, and its pid as the
// caller's PID namespace numbers it, which the process answering there
// must have.
type Target struct {
	Addr string
	PID  int
}

// TargetOf is the baton whose pid, as the caller sees it, is pid (the
// caller may be outside baton's PID namespace, as `docker top` is).
func TargetOf(pid int) Target {
	p := strconv.Itoa(pid)
	return Target{Addr: name(pidNS(p), innermostPID(p, pid)), PID: pid}
}

// innermostPID is pid as its own PID namespace numbers it (the last NSpid
// field of /proc/<p>/status), or def when /proc cannot tell.
func innermostPID(p string, def int) int {
	b, err := os.ReadFile("/proc/" + p + "/status")
	if err != nil {
		return def
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				if n, err := strconv.Atoi(f[len(f)-1]); err == nil {
					return n
				}
			}
		}
	}
	return def
}

// Find is the baton of the caller's own PID namespace: PID 1 when that is
// a baton, else the one baton this namespace's control sockets name
// (/proc/net/unix), preferring one in the caller's mount namespace (its
// container, when several share the PID namespace).
func Find() (Target, error) {
	ns := pidNS("self")
	first := Target{Addr: name(ns, 1), PID: 1}
	if c, err := dial(first); err == nil {
		_ = c.Close()
		return first, nil
	}
	pids := listed(ns)
	if len(pids) > 1 {
		mine := pids[:0:0]
		self, _ := os.Readlink("/proc/self/ns/mnt")
		for _, p := range pids {
			if m, err := os.Readlink("/proc/" + strconv.Itoa(p) + "/ns/mnt"); err == nil && m == self {
				mine = append(mine, p)
			}
		}
		if len(mine) == 1 {
			pids = mine
		}
	}
	switch len(pids) {
	case 0:
		return Target{}, errors.New("no baton answers in this PID namespace")
	case 1:
		return Target{Addr: name(ns, pids[0]), PID: pids[0]}, nil
	}
	return Target{}, fmt.Errorf("several batons answer in this PID namespace (pids %s): choose one with --pid", joinInts(pids))
}

// listed returns the pids of the control sockets /proc/net/unix lists for
// PID namespace ns, in order.
func listed(ns string) []int {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	prefix := []byte(" " + namePrefix + ns + "/")
	var out []int
	for _, line := range bytes.Split(b, []byte("\n")) {
		i := bytes.Index(line, prefix)
		if i < 0 {
			continue
		}
		if p, err := strconv.Atoi(string(line[i+len(prefix):])); err == nil && !containsInt(out, p) {
			out = append(out, p)
		}
	}
	sort.Ints(out)
	return out
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func joinInts(s []int) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, ", ")
}

// dial connects to t and checks that the process answering is t.PID.
func dial(t Target) (net.Conn, error) {
	c, err := net.DialTimeout("unix", "\x00"+strings.TrimPrefix(t.Addr, "@"), controlTimeout)
	if err != nil {
		return nil, fmt.Errorf("no baton answers on %s: %w", t.Addr, err)
	}
	cred, err := peerCred(c)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("control %s: peer credentials: %w", t.Addr, err)
	}
	if int(cred.Pid) != t.PID {
		_ = c.Close()
		return nil, fmt.Errorf("control %s: answered by pid %d, not baton's %d: not asking it", t.Addr, cred.Pid, t.PID)
	}
	return c, nil
}

// AskStatus asks the baton t for its status.
func AskStatus(t Target) (handoff.Status, error) {
	var st handoff.Status
	return st, ask(t, "status", controlTimeout, &st)
}
