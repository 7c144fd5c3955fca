package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the user+system CPU time pid has used, from /proc/PID/stat.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// After the command: state(0) ... utime(11) stime(12), in clock ticks
	// (USER_HZ, 100 on Linux).
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// hostileLinks is what a hostile worker does to the directory it owns and
// baton watches: links out of it (absolute, and a chain ending in a
// relative escape) to a file that never ends, and a FIFO nobody writes.
const hostileLinks = `ln -s /proc/self/pagemap evil && ln -s hop chain &&
ln -s ../../../../../../../../../../proc/self/pagemap hop && mkfifo fifo`

// TestWatchHostileLinks: a worker (uid 65534) that owns a watched
// directory cannot turn BATON_WATCH against baton. With its links to
// /proc/self/pagemap there (made before baton starts, or by the worker
// while it runs), baton starts the worker promptly, an edit of app.conf
// still swaps (and the links alone do not), baton's CPU stays low, TERM
// ends it well within the stop timeout, and a missing watched path with a
// long name costs no long log line.
func TestWatchHostileLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a worker of another user")
	}
	const stopTimeout = 5 * time.Second
	for _, when := range []string{"at-start", "while-running"} {
		t.Run(when, func(t *testing.T) {
			base, err := os.MkdirTemp("", "baton-watch-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			os.Chmod(base, 0o755)
			dir := filepath.Join(base, "conf")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, "app.conf")
			edit := func(content string) {
				t.Helper()
				tmp := filepath.Join(dir, ".app.conf.tmp")
				if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, conf); err != nil {
					t.Fatal(err)
				}
			}
			edit("v1")
			if when == "at-start" {
				cmd := exec.Command("sh", "-c", hostileLinks)
				cmd.Dir = dir
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("links as uid 65534: %v %s", err, out)
				}
			}
			// A missing watched path whose name the kernel refuses as too long.
			missing := filepath.Join(base, strings.Repeat("m", 64<<10))

			script := `cd "$1" && echo "config gen=$BATON_GENERATION $(cat app.conf)"
if [ "$BATON_GENERATION" = 1 ] && [ "$2" = while-running ]; then ` + hostileLinks + ` && echo linked; fi
exec sleep 1000`
			t0 := time.Now()
			b := StartBaton(t, Opt{Env: []string{
				"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms", "BATON_USER=65534:65534",
				"BATON_STOP_TIMEOUT=" + stopTimeout.String(), "BATON_WATCH=" + dir + "," + missing,
			}}, "--", "sh", "-c", script, "sh", dir, when)
			b.Expect("generation ready", "gen", 1)
			b.ExpectOut(0, "config gen=1 v1")
			if el := time.Since(t0); el > 10*time.Second {
				t.Errorf("the first generation was ready %v after baton started", el)
			}
			if when == "while-running" {
				b.ExpectOut(0, "linked")
			}

			cpu0, wall0 := cpuTime(t, b.PID()), time.Now()
			// The links alone are no change: a swap they caused would have
			// started a generation with the old content.
			edit("v2")
			expectWatchSwap(t, b, 2, "v2")
			edit("v3")
			expectWatchSwap(t, b, 3, "v3")
			cpu, wall := cpuTime(t, b.PID())-cpu0, time.Since(wall0)
			t.Logf("baton used %v of CPU in %v for two watched edits and swaps", cpu, wall)
			if cpu > wall/4 {
				t.Errorf("baton used %v of CPU in %v", cpu, wall)
			}

			t1 := time.Now()
			b.Signal(syscall.SIGTERM)
			code := b.Wait()
			el := time.Since(t1)
			t.Logf("baton exited %v after TERM, code %d", el, code)
			if el >= stopTimeout {
				t.Errorf("baton took %v to exit after TERM (stop timeout %v)", el, stopTimeout)
			}
			if code != 0 && code != 128+int(syscall.SIGTERM) { // sleep's own end by TERM
				t.Errorf("exit %d after TERM, want the worker's", code)
			}
			for _, l := range b.ErrLines() {
				if len(l) > 512 {
					t.Errorf("a log line of %d bytes: %.200s…", len(l), l)
				}
			}
		})
	}
}
