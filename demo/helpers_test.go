package demo

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sharedSocket makes a listening TCP socket on 127.0.0.1 the way baton does:
// non-blocking from creation (SOCK_NONBLOCK), SO_REUSEADDR, never changed
// afterwards. It returns the raw fd (to check its flags without Fd()), an
// *os.File to pass in ExtraFiles and the bound address.
//
// Passing it through exec.Cmd.ExtraFiles calls Fd(), which does not change
// the flags of a file made by os.NewFile from a non-blocking fd (see
// inheritedListeners); assertNonblock checks that at the end of each test.
func sharedSocket(t *testing.T) (int, *os.File, string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	in := sa.(*unix.SockaddrInet4)
	addr := fmt.Sprintf("127.0.0.1:%d", in.Port)
	f := os.NewFile(uintptr(fd), "shared")
	t.Cleanup(func() { f.Close() })
	return fd, f, addr
}

func assertNonblock(t *testing.T, fd int) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Errorf("shared socket lost O_NONBLOCK (flags %#x): someone switched it to blocking", fl)
	}
}

// childEnv is the environment for a re-executed test binary. Under -race
// the race runtime sleeps 1 s before every exit (atexit_sleep_ms), which
// would only slow each drain down.
func childEnv() []string {
	return append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
}

// proc is a re-executed test binary playing a role.
type proc struct {
	cmd    *exec.Cmd
	name   string
	stderr *lockedBuffer
	ready  chan struct{} // closed on READY=1
	done   chan struct{} // closed when Wait returned
	err    error         // Wait's result, valid after done
}

// lockedBuffer collects a child's stderr and lets a test wait for a line.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every Write
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the output contains substr and returns the line.
func (l *lockedBuffer) waitFor(t *testing.T, substr string) string {
	t.Helper()
	deadline := time.After(testDeadline)
	for {
		l.mu.Lock()
		s := l.b.String()
		if i := strings.Index(s, substr); i >= 0 {
			l.mu.Unlock()
			start := strings.LastIndexByte(s[:i], '\n') + 1
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				return s[start:]
			}
			return s[start : i+end]
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %q in output within %v:\n%s", substr, testDeadline, s)
		}
	}
}

var notifySeq atomic.Int64

// notifySocket listens on a fresh NOTIFY_SOCKET (a path, or an abstract
// name when abstract) and closes ready on the first READY=1.
func notifySocket(t *testing.T, abstract bool) (string, <-chan struct{}) {
	t.Helper()
	var name string
	if abstract {
		name = fmt.Sprintf("@baton-demo-test-%d-%d", os.Getpid(), notifySeq.Add(1))
	} else {
		// sun_path is 108 bytes: keep the directory short.
		dir, err := os.MkdirTemp("", "bd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		name = filepath.Join(dir, "n")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		var once sync.Once
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					once.Do(func() { close(ready) })
				}
			}
		}
	}()
	return name, ready
}

// startRole starts the test binary as role with the given listener (may be
// nil), extra environment and a fresh NOTIFY_SOCKET. Its stderr is kept and
// logged if the test fails. The process is killed at cleanup if still alive.
func startRole(t *testing.T, role, name string, ln *os.File, abstract bool, env ...string) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock, ready := notifySocket(t, abstract)
	p := &proc{name: name, stderr: &lockedBuffer{}, ready: make(chan struct{}), done: make(chan struct{})}
	p.cmd = exec.Command(self, "hello")
	p.cmd.Env = append(childEnv(), roleEnv+"="+role, "NOTIFY_SOCKET="+sock)
	if ln != nil {
		p.cmd.ExtraFiles = []*os.File{ln}
		p.cmd.Env = append(p.cmd.Env, "LISTEN_FDS=1", "LISTEN_PID="+shimPID, "LISTEN_FDNAMES=http")
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { <-ready; close(p.ready) }()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatalf("%s exited before READY=1: %v\n%s", p.name, p.err, p.stderr.String())
	case <-time.After(testDeadline):
		t.Fatalf("%s: no READY=1 within %v", p.name, testDeadline)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(testDeadline):
		t.Fatalf("%s still running after %v", p.name, testDeadline)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}
