//go:build linux

package control

import (
	"bytes"
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

	"github.com/baton-init/baton/supervisor"
	"golang.org/x/sys/unix"
)

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
