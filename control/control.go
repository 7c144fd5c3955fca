//go:build linux

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/supervisor"
)

// The control socket is an abstract unix socket named
// @baton/ctl/<PID namespace inode>/<baton's pid in that namespace>.
// Abstract sockets need no filesystem (FROM scratch, read-only root) and
// belong to the network namespace. The pid in the name keeps every baton
// apart, also two in one PID and network namespace (Kubernetes'
// shareProcessNamespace, baton under baton); a client checks with
// SO_PEERCRED that the process answering is the one the name says.
//
// Abstract names have no access control and namespace inodes are handed
// out lowest free first, so anyone in the network namespace can bind the
// name a baton not yet started will want. Such a baton binds
// <name>/<random suffix> instead; clients find it in /proc/net/unix, and
// the SO_PEERCRED check tells it from the squatter.
const namePrefix = "@baton/ctl/"

const (
	// controlTimeout bounds one request end to end, as the client sees it.
	controlTimeout = 2 * time.Second
	// controlReadTimeout bounds the wait for a request line.
	controlReadTimeout = time.Second
	// maxRequest bounds a request line, newline included.
	maxRequest = 256
	// maxControlConns bounds the connections the control socket holds
	// for status requests (and reload requests until they are read).
	maxControlConns = 64
	// maxReloadWaiters bounds the reload requests waiting for their
	// outcome, apart from maxControlConns: waiters never starve status.
	maxReloadWaiters = 64
	// controlBacklog is listen(2)'s backlog: more clients wait in their
	// connect (or fail), not in baton.
	controlBacklog = 64
	// maxCandidates bounds the control sockets a client tries for one
	// baton (its name and the names with a suffix /proc/net/unix lists).
	maxCandidates = 64
	// nameTries is how many random suffixes baton tries when its name is
	// taken.
	nameTries = 4
)

// pidNS returns the inode of the PID namespace of /proc/<proc> ("self" or
// a pid), "-" when /proc cannot tell (no /proc at all).
func pidNS(proc string) string {
	ns, err := nsOf(proc)
	if err != nil {
		return "-"
	}
	return ns
}

// nsOf returns the inode of the PID namespace of /proc/<proc>. Reading
// another user's needs the right to ptrace it (EACCES otherwise).
func nsOf(proc string) (string, error) {
	ns, err := os.Readlink("/proc/" + proc + "/ns/pid")
	if err != nil {
		return "", err
	}
	return strings.Trim(strings.TrimPrefix(ns, "pid:"), "[]"), nil // "pid:[4026531836]"
}

func name(ns string, pid int) string { return namePrefix + ns + "/" + strconv.Itoa(pid) }

// Listener is this baton's control socket, bound and listening.
type Listener struct {
	Addr string
	// Taken is the name baton wanted when another process held it (and
	// Addr is that name with a random suffix), else empty; Holder then
	// says what is known of that process.
	Taken, Holder string
	fd            int
	ln            net.Listener
}

// Listen binds this baton's control socket. It uses raw system calls, so
// that binding it before the first worker starts costs no set-up of the Go
// runtime's network poller; Serve does that later. When another process
// holds the name, Listen binds the name with a random suffix, which nobody
// can take in advance, and says so in Taken and Holder: a name someone
// else holds never keeps baton from starting. An error means no control
// socket at all.
func Listen() (*Listener, error) {
	addr := name(pidNS("self"), os.Getpid())
	fd, err := bindListen(addr)
	if err == nil {
		return &Listener{Addr: addr, fd: fd}, nil
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("control socket %s: %w", addr, err)
	}
	l := &Listener{Taken: addr, Holder: holder(addr)}
	for i := 0; i < nameTries; i++ {
		l.Addr = addr + "/" + suffix()
		if l.fd, err = bindListen(l.Addr); err == nil {
			return l, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("control socket %s is held by %s, and %s: %w", addr, l.Holder, l.Addr, err)
}

// bindListen returns a listening socket bound to the abstract name addr.
func bindListen(addr string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: addr})
	if err == nil {
		err = unix.Listen(fd, controlBacklog)
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// suffix is 16 random hex digits (getrandom(2); the time if it fails).
func suffix() string {
	var b [8]byte
	if n, err := unix.Getrandom(b[:], 0); err != nil || n != len(b) {
		return strconv.FormatInt(time.Now().UnixNano(), 16)
	}
	return hex.EncodeToString(b[:])
}

// holder says what the kernel tells of the process that listens on addr:
// its pid, or that it is outside baton's PID namespace (SO_PEERCRED's
// pid 0), or why nothing could be learnt. It never waits: the holder may
// never accept.
func holder(addr string) string {
	fd, err := connectUnix(addr, time.Time{})
	if err != nil {
		return "another process (" + errText(err) + ")"
	}
	defer unix.Close(fd)
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	switch {
	case err != nil:
		return "another process (" + errText(err) + ")"
	case cred.Pid == 0:
		return "a process outside baton's PID namespace (uid " + strconv.Itoa(int(cred.Uid)) + ")"
	}
	return "pid " + strconv.Itoa(int(cred.Pid)) + " (uid " + strconv.Itoa(int(cred.Uid)) + ")"
}

// connectUnix connects a new unix stream socket to the abstract name addr.
// Before deadline, a full backlog is waited out in the kernel's queue
// (SO_SNDTIMEO bounds the wait, unix(7)); a zero deadline fails it at
// once (EAGAIN). The socket returned is blocking.
func connectUnix(addr string, deadline time.Time) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for {
		wait := time.Until(deadline)
		if wait > 0 {
			tv := unix.NsecToTimeval(wait.Nanoseconds())
			err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		} else {
			err = unix.SetNonblock(fd, true)
		}
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: addr})
		}
		if !errors.Is(err, unix.EINTR) || wait <= 0 {
			break
		}
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err == nil {
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{})
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// errText is err without the address net's errors repeat (an abstract
// name begins with a NUL byte there).
func errText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sc *os.SyscallError
	if errors.As(err, &sc) && sc.Err != nil {
		err = sc.Err
	}
	return err.Error()
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
// one) and maxReloadWaiters reloads waiting for their outcome, a request
// line of maxRequest bytes within controlReadTimeout.
func (l *Listener) Serve(s *supervisor.Supervisor) error {
	f := os.NewFile(uintptr(l.fd), l.Addr)
	ln, err := net.FileListener(f) // a duplicate, in the network poller
	_ = f.Close()                  // ours: the duplicate keeps the socket
	if err != nil {
		return fmt.Errorf("control socket %s: %w", l.Addr, err)
	}
	l.ln = ln
	lim := newLimiter(maxControlConns)
	lim.maxWaiting = maxReloadWaiters
	go acceptLoop(ln, lim, func(h *held) { answer(s, h) }, time.Sleep)
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

func answer(s *supervisor.Supervisor, h *held) {
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
// status is anyone's in the network namespace. While it waits, the
// connection is set aside (held.wait), out of status's way, and a client
// that goes away (its end closed) ends the wait and frees its place; the
// reload itself goes on.
func answerReload(s *supervisor.Supervisor, h *held) {
	var o supervisor.Outcome
	cred, err := peerCred(h.Conn)
	switch {
	case err != nil:
		o.Reason = "peer credentials: " + err.Error()
	case cred.Uid != 0 && int(cred.Uid) != os.Geteuid():
		o.Reason = "permission denied: uid " + strconv.Itoa(int(cred.Uid)) + " may not reload baton (root or baton's own user may)"
	case !h.wait():
		o.Reason = strconv.Itoa(maxReloadWaiters) + " reload requests already wait for their outcome: not reloading"
		if st, err := queryNow(s); err == nil {
			o.Gen = st.Gen
		}
	default:
		ctx, cancel := context.WithTimeout(context.Background(), maxReloadWait)
		defer cancel()
		go func() {
			// The client sends nothing after its request: any end of
			// this read (end of file, a reset, or bytes it should not
			// send) means it is done with us. Its release ends the read.
			_ = h.SetReadDeadline(time.Time{})
			_, _ = h.Read(make([]byte, 1))
			cancel()
		}()
		if o, err = s.Reload(ctx, "baton reload"); err != nil {
			return // the client went away, or the loop has ended
		}
	}
	_ = h.SetWriteDeadline(time.Now().Add(controlTimeout))
	_ = json.NewEncoder(h).Encode(o)
}

// queryNow asks the loop for its status within controlTimeout.
func queryNow(s *supervisor.Supervisor) (supervisor.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	return s.Query(ctx)
}

// AskReload asks the baton t for a reload and waits up to wait for its
// outcome.
func AskReload(t Target, wait time.Duration) (supervisor.Outcome, error) {
	var o supervisor.Outcome
	err := ask(t, "reload", wait, false, &o)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return o, fmt.Errorf("no outcome within %v (the reload may still complete)", wait)
	}
	return o, err
}

// AskStatus asks the baton t for its status. A connection closed before
// the answer (baton gave its place to a newer one) is asked again, within
// controlTimeout in all.
func AskStatus(t Target) (supervisor.Status, error) {
	var st supervisor.Status
	return st, ask(t, "status", controlTimeout, true, &st)
}

// ask sends the baton t one request line and decodes its JSON answer into
// v, all within wait. With again, a connection that ends with no answer
// at all is retried while time is left.
func ask(t Target, req string, wait time.Duration, again bool, v any) error {
	deadline := time.Now().Add(wait)
	pause := time.Millisecond
	for {
		c, err := dial(t, deadline)
		if err != nil {
			return err
		}
		n, err := askOnce(c, req, deadline, v)
		if err == nil {
			return nil
		}
		if !again || n > 0 || time.Until(deadline) < 2*pause || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("control %s: %s", c.RemoteAddr(), errText(err))
		}
		time.Sleep(pause) // a client's retry, not a wait for an event
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// askOnce sends req on c, decodes the answer into v and closes c. n is
// how many bytes of answer came.
func askOnce(c net.Conn, req string, deadline time.Time, v any) (int64, error) {
	defer c.Close()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		return 0, err
	}
	r := &countReader{r: io.LimitReader(c, 1<<16)}
	err := json.NewDecoder(r).Decode(v)
	return r.n, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Target is one baton to ask: its pid as the caller's PID namespace
// numbers it, which the process answering must have, and where its
// control socket is. Addr is the name baton prefers,
// @baton/ctl/<PID namespace>/<its pid there>, or @baton/ctl/*/<pid> when
// the caller may not read the namespace; a baton whose name was taken
// listens on Addr/<suffix>, which /proc/net/unix lists.
type Target struct {
	Addr  string
	PID   int
	ns    string // "" when unknown: any namespace's names are tried
	inner int
}

// TargetOf is the baton whose pid, as the caller sees it, is pid (the
// caller may be outside baton's PID namespace, as `docker top` is). The
// namespace of another user's process is unreadable (ptrace rights): then
// the names of every namespace that end in its pid are tried, and
// SO_PEERCRED still picks the right one.
func TargetOf(pid int) Target {
	p := strconv.Itoa(pid)
	t := Target{PID: pid, inner: innermostPID(p, pid)}
	ns, err := nsOf(p)
	switch {
	case err == nil:
		t.ns = ns
	case !errors.Is(err, os.ErrPermission):
		t.ns = "-" // no /proc: the name baton takes without one
	}
	if t.ns != "" {
		t.Addr = name(t.ns, t.inner)
	} else {
		t.Addr = name("*", t.inner)
	}
	return t
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
	first := Target{Addr: name(ns, 1), PID: 1, ns: ns, inner: 1}
	if c, err := dial(first, time.Now().Add(controlTimeout)); err == nil {
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
		return Target{Addr: name(ns, pids[0]), PID: pids[0], ns: ns, inner: pids[0]}, nil
	}
	return Target{}, fmt.Errorf("several batons answer in this PID namespace (pids %s): choose one with --pid", joinInts(pids))
}

// controlNames returns the control sockets /proc/net/unix lists, each as
// its namespace, its pid and whether it has a suffix.
func controlNames() []ctlName {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	var out []ctlName
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) < 8 || !bytes.HasPrefix(f[len(f)-1], []byte(namePrefix)) {
			continue
		}
		path := string(f[len(f)-1])
		parts := strings.SplitN(strings.TrimPrefix(path, namePrefix), "/", 3)
		if len(parts) < 2 {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid < 1 {
			continue
		}
		n := ctlName{addr: path, ns: parts[0], pid: pid}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

type ctlName struct {
	addr, ns string
	pid      int
}

// listed returns the pids of the control sockets /proc/net/unix lists for
// PID namespace ns, in order.
func listed(ns string) []int {
	var out []int
	for _, n := range controlNames() {
		if n.ns == ns && !slices.Contains(out, n.pid) {
			out = append(out, n.pid)
		}
	}
	sort.Ints(out)
	return out
}

func joinInts(s []int) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, ", ")
}

// candidates are the names t's control socket may have: the one it
// prefers, then those /proc/net/unix lists with a suffix (or, with the
// namespace unknown, any namespace's), at most maxCandidates.
func (t Target) candidates() []string {
	var out []string
	if t.ns != "" {
		out = append(out, t.Addr)
	}
	for _, n := range controlNames() {
		if len(out) == maxCandidates {
			break
		}
		if n.pid == t.inner && (t.ns == "" || n.ns == t.ns) && !slices.Contains(out, n.addr) {
			out = append(out, n.addr)
		}
	}
	return out
}

// dial connects to t's control socket and checks that the process
// answering is t.PID: it tries every candidate name at once and keeps the
// first that t.PID answers, so that neither a squatter's name nor its full
// backlog can hide baton. A full backlog is waited out until deadline.
func dial(t Target, deadline time.Time) (net.Conn, error) {
	if err := unix.Kill(t.PID, 0); errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("no process has pid %d", t.PID)
	}
	names := t.candidates()
	if len(names) == 0 {
		return nil, fmt.Errorf("no baton answers as pid %d: no control socket %s or %s/* in this network namespace", t.PID, t.Addr, t.Addr)
	}
	type result struct {
		c     net.Conn
		other bool
		err   error
	}
	results := make(chan result, len(names))
	for _, addr := range names {
		go func() {
			c, other, err := dialOne(addr, t.PID, deadline)
			results <- result{c, other, err}
		}()
	}
	var first error
	for range names {
		r := <-results
		if r.err == nil {
			go func(left int) { // close the later ones that also answer
				for ; left > 0; left-- {
					if r := <-results; r.c != nil {
						_ = r.c.Close()
					}
				}
			}(len(names) - 1)
			return r.c, nil
		}
		if first == nil || r.other {
			first = r.err // another process answering says most
		}
	}
	return nil, first
}

// dialOne connects to addr and checks that pid answers there; other
// reports that another process answered.
func dialOne(addr string, pid int, deadline time.Time) (c net.Conn, other bool, err error) {
	fd, err := connectUnix(addr, deadline)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return nil, false, fmt.Errorf("no baton answers on %s: its backlog stayed full", addr)
		}
		return nil, false, fmt.Errorf("no baton answers on %s: %s", addr, errText(err))
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		_ = unix.Close(fd)
		return nil, false, fmt.Errorf("control %s: peer credentials: %s", addr, errText(err))
	}
	if int(cred.Pid) != pid {
		_ = unix.Close(fd)
		who := "pid " + strconv.Itoa(int(cred.Pid))
		if cred.Pid == 0 {
			who = "a process outside this PID namespace"
		}
		return nil, true, fmt.Errorf("control %s: answered by %s (uid %d), not baton's pid %d: not asking it", addr, who, cred.Uid, pid)
	}
	f := os.NewFile(uintptr(fd), addr)
	c, err = net.FileConn(f) // a duplicate, non-blocking, in the network poller
	_ = f.Close()
	if err != nil {
		return nil, false, fmt.Errorf("control %s: %s", addr, errText(err))
	}
	return c, false, nil
}
