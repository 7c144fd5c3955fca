package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeBaton stands in for baton in Run's tests, so the demo can be tested
// without the real binary: it speaks the same log lines (docs/pid1.md) and
// the same worker protocol, with none of baton's care (it is no reaper, no
// PID 1). args are "-- COMMAND ARG...". FAKE_BATON_MODE (comma-separated)
// breaks it on purpose: "abort" answers every SIGHUP with "swap aborted",
// "stubborn" ignores SIGTERM, "crash" exits 3 once generation 1 is ready.
func fakeBaton(args []string) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGHUP, unix.SIGTERM, unix.SIGINT)
	mode := os.Getenv("FAKE_BATON_MODE")
	var logMu sync.Mutex
	logf := func(msg string, kv ...any) {
		m := map[string]any{"level": "info", "message": msg}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		b, _ := json.Marshal(m)
		logMu.Lock()
		os.Stderr.Write(append(b, '\n'))
		logMu.Unlock()
	}
	if len(args) < 2 || args[0] != "--" {
		logf("bad usage")
		return 2
	}
	workers, _ := strconv.Atoi(os.Getenv("BATON_WORKERS"))

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = unix.Listen(fd, 4096)
	}
	if err != nil {
		logf("listen failed", "error", err.Error())
		return 1
	}
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	ln := os.NewFile(uintptr(fd), "http")
	logf("listener opened", "name", "http", "addr", addr, "fd", 3)

	dir, err := os.MkdirTemp("", "fb")
	if err != nil {
		return 1
	}
	defer os.RemoveAll(dir)

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATON_") {
			env = append(env, kv)
		}
	}
	var live sync.WaitGroup
	gen := 0
	startGen := func() ([]*exec.Cmd, error) {
		gen++
		t0 := time.Now()
		var cmds []*exec.Cmd
		var ready []chan struct{}
		for w := range workers {
			sock := filepath.Join(dir, fmt.Sprintf("g%dw%d", gen, w))
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
			if err != nil {
				return nil, err
			}
			r := make(chan struct{})
			go func() {
				defer conn.Close()
				buf := make([]byte, 512)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					if strings.Contains(string(buf[:n]), "READY=1") {
						close(r)
						return
					}
				}
			}()
			cmd := exec.Command(args[1], args[2:]...)
			cmd.Env = append(env, roleEnv+"=hello", "LISTEN_FDS=1", "LISTEN_PID="+shimPID,
				"BATON_GENERATION="+strconv.Itoa(gen), "BATON_WORKER="+strconv.Itoa(w), "NOTIFY_SOCKET="+sock)
			cmd.ExtraFiles = []*os.File{ln}
			cmd.Stderr = os.Stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			logf("worker started", "gen", gen, "worker", w, "pid", cmd.Process.Pid)
			live.Add(1)
			go func(g, w int) {
				defer live.Done()
				cmd.Wait()
				logf("worker exited", "gen", g, "worker", w, "pid", cmd.Process.Pid, "code", cmd.ProcessState.ExitCode())
			}(gen, w)
			cmds = append(cmds, cmd)
			ready = append(ready, r)
		}
		for _, r := range ready {
			select {
			case <-r:
			case <-time.After(testDeadline):
				return nil, fmt.Errorf("generation %d not ready", gen)
			}
		}
		logf("generation ready", "gen", gen, "elapsed", float64(time.Since(t0))/1e6)
		return cmds, nil
	}
	signalAll := func(cmds []*exec.Cmd) {
		for _, c := range cmds {
			c.Process.Signal(unix.SIGTERM)
		}
	}

	cur, err := startGen()
	if err != nil {
		logf("start failed", "error", err.Error())
		return 1
	}
	if strings.Contains(mode, "crash") {
		os.Exit(3) // leaves its workers behind, as a crashed baton would
	}
	for sig := range sigs {
		switch sig {
		case unix.SIGHUP:
			if strings.Contains(mode, "abort") {
				logf("swap aborted", "gen", gen+1, "reason", "test")
				continue
			}
			t0 := time.Now()
			logf("swap begun", "gen", gen+1)
			next, err := startGen()
			if err != nil {
				logf("swap aborted", "gen", gen, "reason", err.Error())
				continue
			}
			logf("swap complete", "gen", gen, "elapsed", float64(time.Since(t0))/1e6)
			signalAll(cur)
			cur = next
		default:
			if strings.Contains(mode, "stubborn") {
				continue
			}
			logf("shutdown begun", "signal", unix.SignalName(sig.(syscall.Signal)))
			signalAll(cur)
			live.Wait()
			logf("baton exiting", "code", 0)
			return 0
		}
	}
	return 0
}

func testDemoOptions(t *testing.T, mode string, reloads int) demoOptions {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := defaultDemoOptions()
	o.self = self
	o.reloads = reloads
	o.interval = 100 * time.Millisecond
	o.killWait = 500 * time.Millisecond
	o.verbose = true // the test reads worker pids from the forwarded log
	o.env = append(childEnv(), roleEnv+"=fakebaton", "FAKE_BATON_MODE="+mode)
	return o
}

func runFake(t *testing.T, o demoOptions) (int, string, string) {
	t.Helper()
	var stdout, stderr lockedBuffer
	code := runDemo(o, &stdout, &stderr)
	t.Logf("stdout:\n%s", stdout.String())
	return code, stdout.String(), stderr.String()
}

// workerPids lists the pids of every "worker started" line.
func workerPids(t *testing.T, log string) []int {
	t.Helper()
	var pids []int
	for _, m := range regexp.MustCompile(`"message":"worker started","pid":(\d+)`).FindAllStringSubmatch(log, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("no worker started in:\n%s", log)
	}
	return pids
}

// assertGone checks that no process is left behind: each pid is gone or a
// zombie (already dead; whoever inherited it has not reaped it yet).
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		waitGone(pid, testDeadline) // SIGKILL takes effect asynchronously
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone
		}
		// state is the field after "(comm)"
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 && s[i+2] == 'Z' {
			continue
		}
		t.Errorf("worker %d still alive: %s", pid, s)
	}
}

func TestRunWithFakeBaton(t *testing.T) {
	code, out, errs := runFake(t, testDemoOptions(t, "", 3))
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, errs)
	}
	for _, want := range []string{"reload 1: SIGHUP -> generation 2 took over", "reload 3: SIGHUP -> generation 4", "p99 by swap  ",
		"baton: exited with code 0 after SIGTERM", "failures     0 (refused 0, reset 0, eof 0, timeout 0, status 0, other 0)",
		"OK: 3 reloads, "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the report", want)
		}
	}
	if !regexp.MustCompile(`generations  1: \d+  2: \d+  3: \d+  4: \d+\n`).MatchString(out) {
		t.Error("the report does not list generations 1 to 4")
	}
	assertGone(t, workerPids(t, errs))
}

// A swap baton aborts is a failure, and a baton that ignores SIGTERM is
// killed with its whole process group, and its workers with it.
func TestRunAbortedSwapStubbornBaton(t *testing.T) {
	code, out, errs := runFake(t, testDemoOptions(t, "abort,stubborn", 2))
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(out, "FAIL: reload 1: baton aborted the swap to generation 2: test") {
		t.Errorf("the report does not say the swap was aborted")
	}
	assertGone(t, workerPids(t, errs))
}

// baton dying under the demo is a failure that names its exit status, and
// the workers it left behind are killed.
func TestRunBatonCrash(t *testing.T) {
	o := testDemoOptions(t, "crash", 2)
	o.verbose = false
	code, out, errs := runFake(t, o)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(out, "FAIL: baton exited (exited with code 3)") {
		t.Errorf("the report does not say baton exited with code 3")
	}
	// Without -v the failure report carries baton's last lines.
	if !strings.Contains(errs, "last lines from baton:") {
		t.Errorf("no tail of baton's output on failure:\n%s", errs)
	}
	assertGone(t, workerPids(t, errs))
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"-reloads", "x"}, {"-clients", "0"}, {"-keepalive", "2"}, {"-bind", "on"}, {"extra"}} {
		var stdout, stderr bytes.Buffer
		if code := Run(args, &stdout, &stderr); code != 2 {
			t.Errorf("Run(%q) = %d, want 2", args, code)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := Run([]string{"-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "-reloads") {
		t.Errorf("Run(-h) = %d, usage:\n%s", code, stderr.String())
	}
}

func TestBatonEnv(t *testing.T) {
	env := batonEnv([]string{"PATH=/bin", "BATON_HTTP_ADDR=:9090", "LISTEN_FDS=1", "NOTIFY_SOCKET=/x", "HELLO_DRAIN=1s"}, 2)
	got := strings.Join(env, " ")
	want := "PATH=/bin HELLO_DRAIN=1s BATON_LISTEN=127.0.0.1:0 BATON_WORKERS=2 BATON_READY=notify BATON_LOG_LEVEL=info BATON_LOG_FORMAT=json"
	if got != want {
		t.Errorf("batonEnv:\n got %s\nwant %s", got, want)
	}
}

// TestRunRealBaton runs the demo against a real baton binary, when
// DEMO_BATON_BIN names one (the test/ package builds it; here it is
// opt-in so that demo's tests do not depend on the rest of the tree).
func TestRunRealBaton(t *testing.T) {
	bin := os.Getenv("DEMO_BATON_BIN")
	if bin == "" {
		t.Skip("set DEMO_BATON_BIN to a baton binary")
	}
	for _, bind := range []string{"", "intercept"} {
		t.Run("bind="+bind, func(t *testing.T) {
			o := defaultDemoOptions()
			o.self = bin
			o.interval = 150 * time.Millisecond
			o.bind = bind
			var stdout, stderr lockedBuffer
			code := runDemo(o, &stdout, &stderr)
			t.Logf("stdout:\n%s", stdout.String())
			if code != 0 {
				t.Errorf("exit %d, want 0; stderr:\n%s", code, stderr.String())
			}
			if unchanged := strings.Contains(stdout.String(), "unchanged hello workers"); unchanged != (bind == "intercept") {
				t.Errorf("with bind %q the report says unchanged workers: %v", bind, unchanged)
			}
		})
	}
}
