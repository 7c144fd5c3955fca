package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/internal/netns"
)

// batonBin is the baton binary built once by TestMain.
var batonBin string

// deadline bounds every wait in these tests: time only ever bounds a
// failure, it is never a reason to pass.
const deadline = 30 * time.Second

func TestMain(m *testing.M) {
	// The test binary doubles as a worker (tableflip and containerd do the
	// same): TEST_ROLE says which. Not BATON_*: baton strips those.
	if role := os.Getenv("TEST_ROLE"); role != "" {
		os.Exit(runRole(role))
	}
	dir, err := os.MkdirTemp("", "baton-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	batonBin = filepath.Join(dir, "baton")
	if bin := os.Getenv("TEST_BATON_BIN"); bin != "" {
		// Another build, e.g. an older commit's, to see which tests it
		// fails: TEST_BATON_BIN=/tmp/baton-old go test ./test. A copy,
		// which every user may run.
		if err = copyFile(bin, batonBin); err != nil {
			err = fmt.Errorf("TEST_BATON_BIN: %w", err)
		}
	} else {
		build := exec.Command("go", "build", "-trimpath", "-o", batonBin, "..")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err = build.Run(); err != nil {
			err = fmt.Errorf("build baton: %w", err)
		}
	}
	if err == nil {
		err = shareWithAll(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// As root, off the host's loopback: the swaps under load open
	// thousands of connections a second (see package netns). The Docker
	// test stays here, in the host's namespace, where the container's port
	// is published; the re-executed tests use the baton built above.
	code := netns.Main(m, "TestDockerE2E", "TEST_BATON_BIN="+batonBin)
	os.RemoveAll(dir)
	os.Exit(code)
}

// python is Debian's python3 (gunicorn and uvicorn live there); any python3
// runs the small test workers.
func python(t testing.TB) string {
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("python3 not found: the test workers are small Python scripts")
	return ""
}

// testdata is the path of a test worker's file: TestMain's copy of
// test/testdata/name, which every user may read (see shareWithAll).
func testdata(name string) string {
	return filepath.Join(filepath.Dir(batonBin), "testdata", name)
}

// shareWithAll copies test/testdata into dir, beside baton, and lets every
// user read dir: workers that run as another user (BATON_USER=65534,
// nsenter --setuid, a user namespace) can then run baton and read the
// scripts, wherever the clone is. It may be in a directory no other user
// may enter (/root, any mktemp -d), or its files 0600 (cloned under umask
// 077); this copy does not depend on either, and the clone is not changed.
func shareWithAll(dir string) error {
	if err := os.CopyFS(filepath.Join(dir, "testdata"), os.DirFS("testdata")); err != nil {
		return fmt.Errorf("copy testdata: %w", err)
	}
	// Explicit modes: the umask applies to what was created above.
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() || info.Mode()&0o100 != 0 {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	})
}

// copyFile copies the file src to dst, keeping its owner's execute bit.
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// nsAttr returns the SysProcAttr that makes baton PID 1 of a new PID
// namespace: directly as root, inside a new user namespace otherwise.
// The skip ladder follows Go's own checkUserNS.
func nsAttr(t testing.TB) *syscall.SysProcAttr {
	if os.Geteuid() == 0 {
		return &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Setpgid: true}
	}
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		t.Skip("not root and no user namespaces (/proc/self/ns/user missing): cannot make baton PID 1")
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		t.Skip("not root and user.max_user_namespaces=0: cannot make baton PID 1")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		t.Skip("not root and kernel.unprivileged_userns_clone=0: cannot make baton PID 1")
	}
	return &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWPID | unix.CLONE_NEWUSER,
		Setpgid:     true,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
}

// Event is one JSON log line of baton's.
type Event map[string]any

// Msg is the event's message.
func (e Event) Msg() string { s, _ := e["message"].(string); return s }

// Int returns a numeric field (JSON numbers decode as float64).
func (e Event) Int(k string) int {
	f, ok := e[k].(float64)
	if !ok {
		return -1
	}
	return int(f)
}

// Str returns a string field.
func (e Event) Str(k string) string { s, _ := e[k].(string); return s }

// lines collects a stream's lines and lets tests wait for one.
type lines struct {
	mu     sync.Mutex
	all    []string
	events []Event
	grew   chan struct{} // closed and replaced on every new line
	closed bool
}

func newLines(r io.Reader) *lines {
	l := &lines{grew: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			text := sc.Text()
			var ev Event
			if json.Unmarshal([]byte(text), &ev) != nil || ev.Msg() == "" {
				ev = nil
			}
			l.mu.Lock()
			l.all = append(l.all, text)
			if ev != nil {
				l.events = append(l.events, ev)
			}
			close(l.grew)
			l.grew = make(chan struct{})
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.closed = true
		close(l.grew)
		l.mu.Unlock()
	}()
	return l
}

// waitFor waits until pred holds for the snapshot, or fails the test.
func (l *lines) waitFor(t testing.TB, what string, timeout time.Duration, pred func(all []string, events []Event) bool) {
	t.Helper()
	end := time.After(timeout)
	for {
		l.mu.Lock()
		ok := pred(l.all, l.events)
		grew, closed := l.grew, l.closed
		l.mu.Unlock()
		if ok {
			return
		}
		if closed {
			t.Fatalf("stream ended before %s", what)
		}
		select {
		case <-grew:
		case <-end:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// Baton is a running baton under test.
type Baton struct {
	t      testing.TB
	cmd    *exec.Cmd
	Err    *lines // stderr: baton's JSON and the workers' stderr
	Out    *lines // stdout: the workers' stdout
	done   chan struct{}
	code   int
	cursor int // index into Err.events for Expect
}

// Opt configures StartBaton.
type Opt struct {
	Env     []string // added to a minimal environment
	NoPIDNS bool     // run as a plain child (not PID 1)
	Stdin   *os.File
	Sys     *syscall.SysProcAttr
	Bin     string // another init instead of baton (anchor comparisons)
	// BrokenStderr gives baton a stderr pipe whose reader is gone before
	// it starts, as when a log collector dies: every write to it fails.
	// Err then stays empty; watch the workers' stdout instead.
	BrokenStderr bool
}

// StartBaton runs baton with args as PID 1 of a new PID namespace.
func StartBaton(t testing.TB, opt Opt, args ...string) *Baton {
	t.Helper()
	bin := batonBin
	if opt.Bin != "" {
		bin = opt.Bin
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "BATON_LOG_FORMAT=json"}, opt.Env...)
	switch {
	case opt.Sys != nil:
		cmd.SysProcAttr = opt.Sys
	case opt.NoPIDNS:
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	default:
		cmd.SysProcAttr = nsAttr(t)
	}
	if opt.Stdin != nil {
		cmd.Stdin = opt.Stdin
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr, cmd.Stdout = errW, outW
	if opt.BrokenStderr {
		errR.Close()
		errR, _ = os.Open(os.DevNull) // Err reads nothing
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	errW.Close()
	outW.Close()
	b := &Baton{t: t, cmd: cmd, Err: newLines(errR), Out: newLines(outR), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		b.code = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				b.code = 128 + int(ws.Signal())
			}
		}
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			if t.Failed() {
				t.Logf("signal state before the kill:\n%s", signalState(cmd.Process.Pid))
			}
			_ = cmd.Process.Kill()
			<-b.done
		}
		if t.Failed() {
			b.Err.mu.Lock()
			t.Logf("baton stderr (%d lines, last 60):\n%s", len(b.Err.all), strings.Join(tail(b.Err.all, 60), "\n"))
			b.Err.mu.Unlock()
			b.Out.mu.Lock()
			t.Logf("workers' stdout (last 30):\n%s", strings.Join(tail(b.Out.all, 30), "\n"))
			b.Out.mu.Unlock()
		}
	})
	return b
}

func tail(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// PID is baton's pid as the test sees it.
func (b *Baton) PID() int { return b.cmd.Process.Pid }

// Signal sends sig to baton from outside its namespace, as docker kill does.
func (b *Baton) Signal(sig syscall.Signal) {
	b.t.Helper()
	if err := syscall.Kill(b.PID(), sig); err != nil {
		b.t.Fatalf("kill %d %v: %v", b.PID(), sig, err)
	}
}

// Wait waits for baton to exit and returns its status.
func (b *Baton) Wait() int {
	b.t.Helper()
	select {
	case <-b.done:
		return b.code
	case <-time.After(deadline):
		b.t.Fatalf("baton did not exit within %v", deadline)
		return -1
	}
}

// Exited returns the exit channel.
func (b *Baton) Exited() <-chan struct{} { return b.done }

// Expect waits for the next event (after the previous Expect's) with
// message msg whose fields match kv (pairs of key, value; ints compare as
// numbers).
func (b *Baton) Expect(msg string, kv ...any) Event {
	b.t.Helper()
	if err := kvErr(kv); err != nil {
		b.t.Fatal(err)
	}
	var found Event
	b.Err.waitFor(b.t, fmt.Sprintf("log %q %v", msg, kv), deadline, func(_ []string, evs []Event) bool {
		for i := b.cursor; i < len(evs); i++ {
			if evs[i].Msg() == msg && match(evs[i], kv) {
				found, b.cursor = evs[i], i+1
				return true
			}
		}
		return false
	})
	return found
}

// Count returns how many events so far have message msg and match kv.
func (b *Baton) Count(msg string, kv ...any) int {
	b.t.Helper()
	if err := kvErr(kv); err != nil {
		b.t.Fatal(err)
	}
	b.Err.mu.Lock()
	defer b.Err.mu.Unlock()
	n := 0
	for _, ev := range b.Err.events {
		if ev.Msg() == msg && match(ev, kv) {
			n++
		}
	}
	return n
}

// Events returns a copy of the events so far.
func (b *Baton) Events() []Event {
	b.Err.mu.Lock()
	defer b.Err.mu.Unlock()
	return append([]Event(nil), b.Err.events...)
}

// match reports whether ev has every field of kv (pairs of key, value)
// with that value: an int is a JSON number equal to it, a string or a bool
// the same; a field ev lacks never matches. kv that is not such pairs (an
// odd length, a key that is not a string, a value of another type) is a
// mistake in the test, not a mismatch, and must not pass as a match:
// match panics with what is wrong. Expect and Count check kv first and
// fail the test instead.
func match(ev Event, kv []any) bool {
	if err := kvErr(kv); err != nil {
		panic(err)
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		switch want := kv[i+1].(type) {
		case int:
			if v, ok := ev[k].(float64); !ok || v != float64(want) {
				return false
			}
		case string:
			if v, ok := ev[k].(string); !ok || v != want {
				return false
			}
		case bool:
			if v, ok := ev[k].(bool); !ok || v != want {
				return false
			}
		}
	}
	return true
}

// TestHarnessMatch: match compares what it is given and nothing else
// passes. A value of a type it does not compare (a float64, an int64, a
// time.Duration) or pairs that are not pairs is a test's mistake: it must
// not count as a match, so match panics and Expect fails the test.
func TestHarnessMatch(t *testing.T) {
	ev := Event{"message": "worker exited", "gen": 2.0, "pid": 40.0, "code": 0.0, "signal": "SIGTERM", "pid1": true, "elapsed": 10.5}
	for _, c := range []struct {
		kv   []any
		want bool
	}{
		{nil, true},
		{[]any{"gen", 2, "pid", 40, "code", 0}, true},
		{[]any{"signal", "SIGTERM", "pid1", true}, true},
		{[]any{"gen", 3}, false},
		{[]any{"elapsed", 10}, false}, // 10.5 is not 10
		{[]any{"signal", "SIGKILL"}, false},
		{[]any{"pid1", false}, false},
		{[]any{"worker", -1}, false}, // absent, not -1
		{[]any{"reason", ""}, false}, // absent, not ""
		{[]any{"ok", false}, false},  // absent, not false
		{[]any{"gen", "2"}, false},   // a number is not a string
	} {
		if got := match(ev, c.kv); got != c.want {
			t.Errorf("match(%v) = %v, want %v", c.kv, got, c.want)
		}
	}
	for _, kv := range [][]any{
		{"elapsed", 10.5},
		{"gen", int64(2)},
		{"elapsed", 10 * time.Millisecond},
		{"gen"},
		{2, "gen"},
	} {
		if err := kvErr(kv); err == nil {
			t.Errorf("kvErr(%v) = nil, want an error", kv)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("match(%v) did not panic", kv)
				}
			}()
			match(ev, kv)
		}()
	}
}

// kvErr says what is wrong with kv as match's pairs, or nil.
func kvErr(kv []any) error {
	if len(kv)%2 != 0 {
		return fmt.Errorf("match: %d values, want key, value pairs: %v", len(kv), kv)
	}
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return fmt.Errorf("match: key %v is a %T, want a string", kv[i], kv[i])
		}
		switch kv[i+1].(type) {
		case int, string, bool:
		default:
			return fmt.Errorf("match: %q wants an int, a string or a bool, not %T (%v)", k, kv[i+1], kv[i+1])
		}
	}
	return nil
}

// ExpectOut waits for a stdout line with prefix, starting after line from,
// and returns the line and its index.
func (b *Baton) ExpectOut(from int, prefix string) (string, int) {
	b.t.Helper()
	var line string
	idx := -1
	b.Out.waitFor(b.t, fmt.Sprintf("stdout line %q", prefix), deadline, func(all []string, _ []Event) bool {
		for i := from; i < len(all); i++ {
			if strings.HasPrefix(all[i], prefix) {
				line, idx = all[i], i
				return true
			}
		}
		return false
	})
	return line, idx
}

// OutLines returns a copy of the stdout lines so far.
func (b *Baton) OutLines() []string {
	b.Out.mu.Lock()
	defer b.Out.mu.Unlock()
	return append([]string(nil), b.Out.all...)
}

// WaitOutClosed waits until every writer of stdout has gone (baton and
// everything that inherited it).
func (b *Baton) WaitOutClosed() {
	b.t.Helper()
	b.Out.waitClosed(b.t, "stdout")
}

// ErrLines waits until every writer of stderr has gone and returns all its
// lines: after Wait, the last ones may still be on their way.
func (b *Baton) ErrLines() []string {
	b.t.Helper()
	b.Err.waitClosed(b.t, "stderr")
	b.Err.mu.Lock()
	defer b.Err.mu.Unlock()
	return append([]string(nil), b.Err.all...)
}

func (l *lines) waitClosed(t testing.TB, what string) {
	t.Helper()
	end := time.After(deadline)
	for {
		l.mu.Lock()
		grew, closed := l.grew, l.closed
		l.mu.Unlock()
		if closed {
			return
		}
		select {
		case <-grew:
		case <-end:
			t.Fatalf("%s still open after %v", what, deadline)
		}
	}
}

// procEntry is one process of /proc as the test (host) sees it.
type procEntry struct {
	pid, ppid, pgrp int
	state           string
}

// processes lists every process from /proc/PID/stat.
func processes() []procEntry {
	ents, _ := os.ReadDir("/proc")
	var out []procEntry
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		// After the command: state, ppid, pgrp, ...
		var p procEntry
		if _, err := fmt.Sscanf(s[i+1:], " %s %d %d", &p.state, &p.ppid, &p.pgrp); err != nil {
			continue
		}
		fmt.Sscanf(e.Name(), "%d", &p.pid)
		out = append(out, p)
	}
	return out
}

// zombiesUnder counts zombie processes whose parent is pid.
func zombiesUnder(pid int) int {
	n := 0
	for _, p := range processes() {
		if p.ppid == pid && p.state == "Z" {
			n++
		}
	}
	return n
}

// childrenOf lists the host pids whose parent is pid (a Go parent's
// children are spread over its threads' /proc children files).
func childrenOf(pid int) []int {
	var out []int
	for _, p := range processes() {
		if p.ppid == pid {
			out = append(out, p.pid)
		}
	}
	return out
}

// signalState describes pid and every process under it, one line each:
// pid, parent, state, command and the signal masks of /proc/PID/status
// (pending, blocked, ignored, caught), for a failed test to show where a
// signal stopped.
func signalState(pid int) string {
	var b strings.Builder
	var walk func(pid, depth int)
	walk = func(pid, depth int) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			fmt.Fprintf(&b, "%*s%d: %v\n", 2*depth, "", pid, err)
			return
		}
		fields := map[string]string{}
		for _, l := range strings.Split(string(status), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		fmt.Fprintf(&b, "%*s%d %s %s SigPnd=%s ShdPnd=%s SigBlk=%s SigIgn=%s SigCgt=%s\n", 2*depth, "",
			pid, fields["Name"], fields["State"], fields["SigPnd"], fields["ShdPnd"], fields["SigBlk"], fields["SigIgn"], fields["SigCgt"])
		for _, c := range childrenOf(pid) {
			walk(c, depth+1)
		}
	}
	walk(pid, 0)
	return b.String()
}
