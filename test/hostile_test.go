package test

// Hostile local clients and faults: whatever a process in baton's network
// namespace does to its endpoints, baton's memory and descriptors stay
// bounded, probes are answered, and nobody can answer in baton's name.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// procStatus returns a /proc/PID/status field's first number (kB for
// VmRSS), -1 if missing.
func procStatus(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return -1
}

// fdCount is how many descriptors pid holds.
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// controlName is the control socket's abstract name of the baton whose
// host pid is pid (its namespace's inode and its own pid there), as
// /proc/net/unix shows it.
func controlName(t testing.TB, pid int) string {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	ns = strings.Trim(strings.TrimPrefix(ns, "pid:"), "[]")
	return fmt.Sprintf("@baton/ctl/%s/%d", ns, nsPID(t, pid))
}

// nsPID is pid as its own (innermost) PID namespace numbers it, -1 when
// the process is gone.
func nsPID(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return -1
}

// dialControl connects to the control socket of the baton with host pid.
func dialControl(t testing.TB, pid int) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", "\x00"+strings.TrimPrefix(controlName(t, pid), "@"))
	if err != nil {
		t.Fatalf("control socket of %d: %v", pid, err)
	}
	return c
}

// TestControlSocketBounded: a client that writes without end, and one
// that holds thousands of connections, leave baton's memory bounded and
// its descriptors where they were, and `baton health` still answers.
// During the flood baton holds at most controlMaxHeld connections for
// status, and once the clients close theirs it holds exactly the
// descriptors it held before. Its RSS grows by a few MB, which the Go
// runtime keeps (4.7 -> 9.1 MB, measured once 2026-12-06, see
// docs/operations.md); what is asserted is a bound far below the 64 MB
// written, so that a buffered request line would fail it.
func TestControlSocketBounded(t *testing.T) {
	const (
		controlMaxHeld = 64       // control's cap on connections held for status
		rssBound       = 16 << 10 // kB: the RSS growth allowed, a quarter of what was written
	)
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms"}}, "sleep", "1000")
	b.Expect("generation ready")
	// One health check first, so that what the first connection makes the
	// runtime allocate is in the baseline.
	if code, out := runBaton(t, "health", "--pid", strconv.Itoa(b.PID())); code != 0 {
		t.Fatalf("baton health: exit %d %q", code, out)
	}
	rss0, fds0 := procStatus(b.PID(), "VmRSS"), fdCount(t, b.PID())

	// A request line that never ends: baton must hang up long before 64 MB.
	c := dialControl(t, b.PID())
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	written, hungUp := 0, false
	c.SetWriteDeadline(time.Now().Add(deadline))
	for written < 64<<20 {
		n, err := c.Write(chunk)
		written += n
		if err != nil {
			hungUp = true
			break
		}
	}
	c.Close()
	if !hungUp {
		t.Errorf("baton read %d MB of one request line without hanging up", written>>20)
	}
	rss1 := procStatus(b.PID(), "VmRSS")
	if rss1 > rss0+rssBound {
		t.Errorf("after a %d kB request line baton's RSS went from %d kB to %d kB, want at most +%d kB", written>>10, rss0, rss1, rssBound)
	}

	// Thousands of idle connections: baton holds at most controlMaxHeld.
	var held []net.Conn
	for i := 0; i < 3000; i++ {
		c, err := net.Dial("unix", "\x00"+strings.TrimPrefix(controlName(t, b.PID()), "@"))
		if err != nil {
			break // the backlog is full: fine, the client is the one that waits
		}
		held = append(held, c)
	}
	closeHeld := func() {
		for _, c := range held {
			c.Close()
		}
		held = nil
	}
	t.Cleanup(closeHeld)
	n := len(held)
	// +1: the connection accepted and not yet admitted (or the one being
	// closed to admit it).
	fds1 := fdCount(t, b.PID())
	if fds1 > fds0+controlMaxHeld+1 {
		t.Errorf("with %d idle control connections baton holds %d descriptors (%d before), want at most %d more", n, fds1, fds0, controlMaxHeld+1)
	}
	start := time.Now()
	if code, out := runBaton(t, "health", "--pid", strconv.Itoa(b.PID())); code != 0 {
		t.Errorf("baton health among %d idle connections: exit %d %q", n, code, out)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("baton health took %v among %d idle connections", el, n)
	}

	// The clients go: baton closes its ends, and holds what it held before.
	closeHeld()
	end := time.Now().Add(deadline)
	fds2 := fdCount(t, b.PID())
	for fds2 != fds0 {
		if time.Now().After(end) {
			t.Fatalf("%v after the clients closed their connections baton holds %d descriptors, %d before", deadline, fds2, fds0)
		}
		// A health check apart: a connection baton must accept, answer and close.
		runBaton(t, "health", "--pid", strconv.Itoa(b.PID()))
		fds2 = fdCount(t, b.PID())
	}
	rss2 := procStatus(b.PID(), "VmRSS")
	if rss2 > rss0+rssBound {
		t.Errorf("after the flood baton's RSS went from %d kB to %d kB, want at most +%d kB", rss0, rss2, rssBound)
	}
	t.Logf("descriptors %d -> %d (%d idle connections) -> %d; RSS %d -> %d (64 MB line) -> %d kB", fds0, fds1, n, fds2, rss0, rss1, rss2)
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestControlSocketIdentity: two batons in one PID and network namespace
// (here baton under baton) each answer for themselves; a process that
// took baton's control socket name first neither keeps baton from
// starting nor makes `baton health` believe it.
func TestControlSocketIdentity(t *testing.T) {
	t.Run("baton-under-baton", func(t *testing.T) {
		// The outer baton reloads once (generation 2); the inner one, its
		// worker, is at generation 1. (The outer baton strips BATON_* from
		// its workers' environment; env sets the inner one's.)
		b := StartBaton(t, Opt{Env: []string{"BATON_RELOAD_SIGNAL=HUP", "BATON_READY=delay:20ms"}},
			"env", "BATON_READY=delay:20ms", batonBin, "--", "sleep", "1000")
		b.Expect("generation ready")
		b.Signal(unix.SIGHUP)
		inner := b.Expect("worker started", "gen", 2).Int("pid")
		b.Expect("swap complete", "gen", 2)
		var innerHost int
		for _, p := range childrenOf(b.PID()) {
			if nsPID(t, p) == inner {
				innerHost = p
			}
		}
		if innerHost == 0 {
			t.Fatalf("inner baton %d not found", inner)
		}
		code, out := runBaton(t, "health", "--pid", strconv.Itoa(b.PID()))
		if !strings.Contains(out, "generation 2") {
			t.Fatalf("outer baton's health: exit %d %q, want generation 2", code, out)
		}
		// The inner baton is ready 20 ms after it starts: poll its health,
		// bounded by the deadline.
		end := time.Now().Add(deadline)
		for {
			code, out = runBaton(t, "health", "--pid", strconv.Itoa(innerHost))
			if strings.Contains(out, "generation 2") {
				t.Fatalf("the inner baton's health reports the outer one's state: %q", out)
			}
			if code == 0 && strings.Contains(out, "generation 1") {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("inner baton's health: exit %d %q, want ready at generation 1", code, out)
			}
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
	t.Run("squatter", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: the squatter binds the name of a baton in another PID namespace")
		}
		// The squatter binds the name the baton started below will
		// want: its PID namespace is new, its pid there 1. The inode of
		// a new namespace is not known in advance, so the test makes the
		// namespace first, with a process that waits (sleep), and starts
		// baton inside it with nsenter.
		holder := StartBaton(t, Opt{Bin: "/bin/sleep"}, "1000")
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", holder.PID()))
		ns = strings.Trim(strings.TrimPrefix(ns, "pid:"), "[]")
		name := fmt.Sprintf("@baton/ctl/%s/2", ns)
		sq, err := net.Listen("unix", "\x00"+name[1:])
		if err != nil {
			t.Fatal(err)
		}
		defer sq.Close()
		go func() {
			for {
				c, err := sq.Accept()
				if err != nil {
					return
				}
				c.Write([]byte(`{"Gen":7,"Ready":true,"Serving":1}` + "\n"))
				c.Close()
			}
		}()
		nsenter, err := execLookPath("nsenter")
		if err != nil {
			t.Skip("nsenter not installed")
		}
		// In the holder's namespace baton gets pid 2. It starts all the
		// same, on its name with a suffix, and health asks it, not the
		// squatter (which would say generation 7).
		b := StartBaton(t, Opt{Bin: nsenter, NoPIDNS: true, Env: []string{"BATON_READY=delay:20ms"}},
			"--pid=/proc/"+strconv.Itoa(holder.PID())+"/ns/pid", "--", batonBin, "--", "sleep", "1000")
		ev := b.Expect("control socket name taken", "taken", name)
		if h := ev.Str("holder"); h != "a process outside baton's PID namespace (uid 0)" {
			t.Errorf("holder %q, want the squatter (this test, outside baton's PID namespace, uid 0)", h)
		}
		if a := ev.Str("addr"); !strings.HasPrefix(a, name+"/") {
			t.Errorf("baton listens on %q, want %s/<suffix>", a, name)
		}
		b.Expect("generation ready")
		var inner int
		for _, p := range childrenOf(b.PID()) {
			if nsPID(t, p) == 2 {
				inner = p
			}
		}
		if inner == 0 {
			t.Fatal("baton (pid 2 in the holder's namespace) not found")
		}
		if code, out := runBaton(t, "health", "--pid", strconv.Itoa(inner)); code != 0 || !strings.Contains(out, "ready: generation 1") {
			t.Fatalf("health: exit %d %q, want baton's own ready at generation 1", code, out)
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
}

// TestControlNameSquatted: a uid-65534 process that took in advance the
// control socket names of the next few thousand PID namespaces
// (@baton/ctl/<inode>/1; the kernel hands inodes out lowest free first)
// keeps no baton from starting. baton listens on its name with a random
// suffix, says who holds its name, and `baton health` finds it: with
// --pid from outside its PID namespace, and without from inside.
func TestControlNameSquatted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the squatter as uid 65534")
	}
	const first, count = 0xF0000000, 4000
	sq := execCommand(python(t), testdata("ctlsquat.py"), strconv.Itoa(first), strconv.Itoa(count))
	sq.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := sq.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sq.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Process.Kill(); sq.Wait() })
	newLines(out).waitFor(t, "the squatter's names", deadline, func(all []string, _ []Event) bool {
		return len(all) > 0 && strings.HasPrefix(all[0], "squatting ")
	})

	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms"}}, "sleep", "1000")
	name := controlName(t, b.PID())
	ns, _ := strconv.Atoi(strings.Split(name, "/")[2])
	if ns < first || ns >= first+count {
		t.Fatalf("baton's PID namespace %d is not among the %d squatted from %d: this run proves nothing", ns, count, first)
	}
	ev := b.Expect("control socket name taken", "taken", name)
	if h := ev.Str("holder"); !strings.Contains(h, "uid 65534") {
		t.Errorf("holder %q does not name the squatter's uid 65534", h)
	}
	b.Expect("generation ready")
	if code, out := runBaton(t, "health", "--pid", strconv.Itoa(b.PID())); code != 0 || !strings.Contains(out, "ready: generation 1") {
		t.Errorf("health --pid: exit %d %q, want 0 and ready", code, out)
	}
	nsenter, err := execLookPath("nsenter")
	if err != nil {
		t.Skip("nsenter not installed")
	}
	inside, err := execCommand(nsenter, "--target", strconv.Itoa(b.PID()), "--pid", "--", batonBin, "health").CombinedOutput()
	if err != nil || !strings.Contains(string(inside), "ready: generation 1") {
		t.Errorf("health inside baton's PID namespace: %v %q, want 0 and ready", err, inside)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

var execCommand = exec.Command

func execLookPath(name string) (string, error) {
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// TestHTTPProbeAmidIdleClients: thousands of idle or slow connections to
// BATON_HTTP_ADDR do not keep a /healthz probe from an answer within
// kubelet's default 1 s timeout, and baton's descriptors stay bounded.
func TestHTTPProbeAmidIdleClients(t *testing.T) {
	b, base := StartBatonHTTP(t, []string{"BATON_READY=delay:20ms"}, "sleep", "1000")
	b.Expect("generation ready")
	addr := strings.TrimPrefix(base, "http://")
	fds0 := fdCount(t, b.PID())
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := 0; i < 2000; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		if i%2 == 0 {
			c.Write([]byte("GET /metrics HTTP/1.1\r\n")) // slow: a head that never ends
		}
		held = append(held, c)
	}
	for i := 0; i < 5; i++ {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("probe %d: connect: %v (with %d idle clients)", i, err, len(held))
		}
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("probe %d among %d idle clients: %q %v after %v", i, len(held), buf[:n], err, time.Since(start))
		}
	}
	if fds := fdCount(t, b.PID()); fds > fds0+512 {
		t.Errorf("with %d idle HTTP connections baton holds %d descriptors (%d before)", len(held), fds, fds0)
	}
	b.Signal(syscall.SIGTERM)
	b.Wait()
}

// TestPoolSurvivesCorrelatedCrashes: all 8 workers SIGKILLed at once (as
// the OOM killer or a dependency outage would), twice within a few
// seconds, is not a crash loop: baton restarts every one and serves on.
func TestPoolSurvivesCorrelatedCrashes(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_WORKERS=8", "BATON_READY=delay:20ms", "BATON_RESTART=on-failure"}},
		"sleep", "1000")
	b.Expect("generation ready")
	ready := 8
	for round := 1; round <= 2; round++ {
		kids := childrenOf(b.PID())
		if len(kids) != 8 {
			t.Fatalf("round %d: baton has %d children, want 8", round, len(kids))
		}
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
		// Every slot is restarted and its new worker becomes ready.
		ready += 8
		limit := false
		b.Err.waitFor(t, fmt.Sprintf("%d workers ready", ready), deadline, func(_ []string, evs []Event) bool {
			n := 0
			for _, ev := range evs {
				limit = limit || ev.Msg() == "restart limit reached"
				if ev.Msg() == "worker ready" {
					n++
				}
			}
			return limit || n >= ready
		})
		if limit {
			t.Fatalf("round %d: baton took a crash of the whole pool for a crash loop", round)
		}
	}
	settle(t, b, 8)
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// connectAs connects to the unix socket path as uid/gid (a Python client),
// and returns its one line of output: "connected" or the error.
func connectAs(t *testing.T, uid, gid uint32, path string) string {
	t.Helper()
	cmd := execCommand(python(t), "-c", `import socket,sys
s=socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("connected")
except OSError as e:
    print(e)`, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as %d: %v %s", uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestUnixListenerPermissions: a unix listener's file lets every user in
// by default (systemd's SocketMode=0666), and ?mode= and ?owner= set it.
func TestUnixListenerPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a client of another user")
	}
	dir, err := os.MkdirTemp("", "baton-unix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the directory is the admin's to open or close
	open := filepath.Join(dir, "open.sock")
	owned := filepath.Join(dir, "owned.sock")
	b := StartBaton(t, Opt{Env: []string{"BATON_READY=delay:20ms",
		"BATON_LISTEN=unix://" + open + ",unix://" + owned + "?mode=0600&owner=65534:65534"}}, "sleep", "1000")
	b.Expect("generation ready")
	if fi, err := os.Stat(open); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("default socket mode %v (%v), want 0666", fi.Mode().Perm(), err)
	}
	if got := connectAs(t, 65534, 65534, open); got != "connected" {
		t.Errorf("a client of another user: %q", got)
	}
	fi, err := os.Stat(owned)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o600 || st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("?mode=0600&owner=65534:65534 gave %v %d:%d", fi.Mode().Perm(), st.Uid, st.Gid)
	}
	if got := connectAs(t, 65534, 65534, owned); got != "connected" {
		t.Errorf("its owner: %q", got)
	}
	if got := connectAs(t, 65533, 65533, owned); got == "connected" {
		t.Error("another user connected to a 0600 socket")
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestListenerAddressTaken: an address another socket holds, even one
// bound with SO_REUSEPORT by the same user (which the kernel would let
// baton share, splitting the traffic), stops baton with a clear error.
func TestListenerAddressTaken(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			cmd := execCommand(python(t), "-c", `import socket,sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s=socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
if kind == socket.SOCK_STREAM: s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()`, network)
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { in.Close(); cmd.Wait() })
			var port int
			if _, err := fmt.Fscan(out, &port); err != nil {
				t.Fatal(err)
			}
			b := StartBaton(t, Opt{Env: []string{fmt.Sprintf("BATON_LISTEN=%s://127.0.0.1:%d", network, port)}}, "sleep", "1000")
			if code := b.Wait(); code != 2 {
				t.Fatalf("baton on a taken address: exit %d, want 2", code)
			}
			if all := b.ErrLines(); len(all) != 1 || !strings.Contains(all[0], "in use") {
				t.Fatalf("want one line saying the address is in use, got %q", all)
			}
		})
	}
}

// TestNotifySocketNotWorkers: with BATON_USER, workers can send to the
// NOTIFY_SOCKET but not replace or remove it: its directory is baton's.
func TestNotifySocketNotWorkers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: workers of another user")
	}
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify", "BATON_USER=65534:65534"}},
		python(t), testdata("notifysquat.py"))
	squat, _ := b.ExpectOut(0, "squat ")
	unlink, _ := b.ExpectOut(0, "unlink ")
	if squat != "squat refused 13" || unlink != "unlink refused 13" {
		t.Errorf("a worker could touch the notify socket: %q, %q", squat, unlink)
	}
	b.Expect("generation ready") // its READY=1 still arrives
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// flood starts n uid-65534 processes that connect to addr ("@abstract" or
// host:port) and close, in a loop, and returns once each has connected.
func flood(t *testing.T, n int, addr string) {
	t.Helper()
	for i := 0; i < n; i++ {
		cmd := execCommand(python(t), testdata("flood.py"), addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		l := newLines(out)
		l.waitFor(t, "flood dialer's first connection", deadline, func(all []string, _ []Event) bool {
			return len(all) > 0 && all[0] == "flooding"
		})
	}
}

// probes runs probe 20 times and returns how many answered (nil) within
// 1 s, the failures and the slowest answer.
func probes(probe func() error) (ok int, fails []string, slowest time.Duration) {
	for i := 0; i < 20; i++ {
		start := time.Now()
		err := probe()
		el := time.Since(start)
		if err == nil {
			slowest = max(slowest, el)
		}
		switch {
		case err != nil:
			fails = append(fails, fmt.Sprintf("probe %d: %v after %v", i, err, el.Round(time.Millisecond)))
		case el > time.Second:
			fails = append(fails, fmt.Sprintf("probe %d: answered after %v", i, el.Round(time.Millisecond)))
		default:
			ok++
		}
	}
	return ok, fails, slowest.Round(time.Millisecond)
}

// TestProbesUnderConnectFlood: uid-65534 processes that connect and close
// in a loop (2 and 8 against the control socket, 4 against
// BATON_HTTP_ADDR) keep neither `baton health` nor /readyz from an answer
// within 1 s: at least 19 of 20 of each are answered in time.
func TestProbesUnderConnectFlood(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the flood as uid 65534")
	}
	for _, n := range []int{2, 8} {
		t.Run(fmt.Sprintf("control-%d", n), func(t *testing.T) {
			b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms"}}, "sleep", "1000")
			b.Expect("generation ready")
			flood(t, n, controlName(t, b.PID()))
			pid := strconv.Itoa(b.PID())
			ok, fails, slowest := probes(func() error {
				if code, out := runBaton(t, "health", "--pid", pid); code != 0 {
					return fmt.Errorf("exit %d %q", code, strings.TrimSpace(out))
				}
				return nil
			})
			t.Logf("%d dialers: %d of 20 baton health answered within 1 s (slowest %v)", n, ok, slowest)
			if ok < 19 {
				t.Errorf("%d dialers: only %d of 20 baton health answered within 1 s:\n%s", n, ok, strings.Join(fails, "\n"))
			}
			b.Signal(unix.SIGTERM)
			b.Wait()
		})
	}
	t.Run("http-4", func(t *testing.T) {
		b, base := StartBatonHTTP(t, []string{"BATON_READY=delay:20ms"}, "sleep", "1000")
		b.Expect("generation ready")
		addr := strings.TrimPrefix(base, "http://")
		flood(t, 4, addr)
		curl, err := execLookPath("curl")
		if err != nil {
			t.Skip("curl not installed")
		}
		ok, fails, slowest := probes(func() error {
			// curl, as a kubelet-like probe: a fresh connection, 1 s in all.
			out, err := execCommand(curl, "-sS", "-m1", "-o", "/dev/null", "-w", "%{http_code}", base+"/readyz").CombinedOutput()
			if err != nil || string(out) != "200" {
				return fmt.Errorf("curl: %v %q", err, out)
			}
			return nil
		})
		t.Logf("4 dialers: %d of 20 /readyz answered within 1 s (slowest %v)", ok, slowest)
		if ok < 19 {
			t.Errorf("4 dialers: only %d of 20 /readyz answered within 1 s:\n%s", ok, strings.Join(fails, "\n"))
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
}
