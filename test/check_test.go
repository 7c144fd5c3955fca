package test

// Checks (BATON_RELOAD_CHECK, BATON_CANARY_CHECK) that leave a child
// behind: the outcome is the check's exit status, its output is read for a
// bounded time after that, and what it left in its process group is
// stopped.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsGroupMembers lists the host pids of the live processes in host pid
// nsOf's PID namespace whose process group is pgid, as that namespace
// numbers it.
func nsGroupMembers(nsOf, pgid int) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", nsOf))
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range processes() {
		if p.state == "Z" {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); err != nil || l != ns {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "NSpgid:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 && f[len(f)-1] == strconv.Itoa(pgid) {
					out = append(out, p.pid)
				}
			}
		}
	}
	return out
}

// readPID reads the pid a check script wrote to file.
func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return n
}

// TestCheckLeavesChild: a reload check and a canary check that start a
// child in their process group (`sleep 20 &`), print a line and exit, 0
// or 1, give baton reload its outcome promptly, with the check's last
// line as the reason of a failure, twice in a row; after each, what the
// check left behind is gone (baton reaped it, and nothing of the check's
// process group remains).
func TestCheckLeavesChild(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		code int
		want [2]string // baton reload's answer, first and second time
	}{
		{"reload pass", nil, 0, [2]string{"generation 2 serving", "generation 3 serving"}},
		{"reload fail", nil, 1, [2]string{
			"BATON_RELOAD_CHECK exited 1: error rate 7% (generation 1 serves on)",
			"BATON_RELOAD_CHECK exited 1: error rate 7% (generation 1 serves on)"}},
		{"canary pass", []string{"BATON_HANDOFF=steer", "BATON_CANARY=10%:100ms"}, 0, [2]string{"generation 2 serving", "generation 3 serving"}},
		{"canary fail", []string{"BATON_HANDOFF=steer", "BATON_CANARY=10%:100ms"}, 1, [2]string{
			"canary of generation 2 aborted at step 1: BATON_CANARY_CHECK exited 1: error rate 7%",
			"canary of generation 3 aborted at step 1: BATON_CANARY_CHECK exited 1: error rate 7%"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			left, check := filepath.Join(dir, "left"), filepath.Join(dir, "check.sh")
			line := "ok"
			if c.code != 0 {
				line = "error rate 7%"
			}
			os.WriteFile(check, []byte(fmt.Sprintf("sleep 20 &\necho $! > %s\necho 'checking'\necho '%s'\nexit %d\n", left, line, c.code)), 0o644)
			name := "BATON_RELOAD_CHECK"
			if strings.HasPrefix(c.name, "canary") {
				name = "BATON_CANARY_CHECK"
			}
			env := append([]string{"BATON_READY=notify", "BATON_LOG_LEVEL=debug", name + "=sh " + check}, c.env...)
			b, _ := serve(t, env, batonBin, "hello")
			pid := strconv.Itoa(b.PID())
			for i, want := range c.want {
				// Well below the 20 s the child lives: an outcome that waits
				// for the end of the check's output comes too late.
				begun := time.Now()
				code, out := runBaton(t, "reload", "--pid", pid, "--timeout", "5s")
				t.Logf("reload %d: exit %d after %v: %q", i+1, code, time.Since(begun).Round(time.Millisecond), strings.TrimSpace(out))
				if code != c.code || !strings.Contains(out, want) {
					t.Fatalf("reload %d: exit %d %q, want exit %d and %q", i+1, code, out, c.code, want)
				}
				checkPID := b.Expect("reload check begun").Int("pid")
				b.Expect("orphan reaped", "pid", readPID(t, left))
				if m := nsGroupMembers(b.PID(), checkPID); len(m) > 0 {
					t.Fatalf("reload %d: processes %v of the check's group (%d) still alive", i+1, m, checkPID)
				}
			}
			b.Signal(unix.SIGTERM)
			b.Wait()
		})
	}
}

// TestCheckLeftoversShutdown: baton not PID 1 (a subreaper), with
// BATON_STOP_TIMEOUT=1s, gets SIGTERM as a reload check exits that left
// a child in its own session holding the check's output, and one in its
// group that ignores SIGTERM. baton exits within the stop timeout and a
// margin, not when the output ends, and the child in the check's group
// does not outlive it.
func TestCheckLeftoversShutdown(t *testing.T) {
	dir := t.TempDir()
	escaped, left := filepath.Join(dir, "escaped"), filepath.Join(dir, "left")
	fifo, check := filepath.Join(dir, "fifo"), filepath.Join(dir, "check.sh")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(check, []byte(fmt.Sprintf(`setsid sleep 20 &
echo $! > %s
(trap '' TERM; exec sleep 20) &
echo $! > %s
echo ok
echo end > %s
exit 0
`, escaped, left, fifo)), 0o644)
	const stop = time.Second
	b := StartBaton(t, Opt{NoPIDNS: true, Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify",
		"BATON_STOP_TIMEOUT=1s", "BATON_RELOAD_CHECK=sh " + check}}, batonBin, "hello")
	b.Expect("generation ready")
	b.Signal(unix.SIGHUP)
	checkPID := b.Expect("reload check begun").Int("pid")
	f, err := os.Open(fifo) // until the check opens it for its last line
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Scan()
	f.Close()
	esc := readPID(t, escaped)
	t.Cleanup(func() {
		// Out of baton's reach by design (another session): ours to end.
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", esc)); strings.HasPrefix(string(cmd), "sleep\x00") {
			syscall.Kill(esc, syscall.SIGKILL)
		}
	})
	begun := time.Now()
	b.Signal(unix.SIGTERM)
	b.Wait()
	took := time.Since(begun)
	t.Logf("SIGTERM to exit: %v (stop timeout %v)", took.Round(time.Millisecond), stop)
	if took > stop+3*time.Second {
		t.Errorf("baton took %v to exit after SIGTERM, want at most the stop timeout (%v) and a margin", took, stop)
	}
	if m := nsGroupMembers(os.Getpid(), checkPID); len(m) > 0 { // baton's namespace is ours
		t.Errorf("processes %v of the check's group (%d) outlived baton (the one that ignores SIGTERM: %d)", m, checkPID, readPID(t, left))
	}
}
