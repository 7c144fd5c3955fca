package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExitCodes: the worker's own code passes through, a signal death is
// 128+N, and a command that cannot run is 127/126 with a clear message.
func TestExitCodes(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(notExec, []byte("not a program\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"zero", []string{"sh", "-c", "exit 0"}, 0, ""},
		{"three", []string{"sh", "-c", "exit 3"}, 3, ""},
		{"255", []string{"sh", "-c", "exit 255"}, 255, ""},
		{"term", []string{"sh", "-c", "kill -TERM $$"}, 143, ""},
		{"kill", []string{"sh", "-c", "kill -KILL $$"}, 137, ""},
		{"missing", []string{"/no/such/command"}, 127, "command not found"},
		{"missing-in-path", []string{"no-such-command-anywhere"}, 127, "command not found"},
		{"not-executable", []string{notExec}, 126, "not executable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := StartBaton(t, Opt{}, append([]string{"--"}, c.args...)...)
			if got := b.Wait(); got != c.code {
				t.Fatalf("exit %d, want %d", got, c.code)
			}
			if c.msg != "" {
				ev := b.Expect("worker start failed", "code", c.code)
				if !strings.Contains(ev.Str("err"), c.msg) {
					t.Fatalf("error %q does not say %q", ev.Str("err"), c.msg)
				}
			}
			// Plain init mode is tini's: an exit is the end, not a failed
			// deployment.
			if n := b.Count("worker failed before ready"); n != 0 {
				t.Fatalf("plain mode logged %d 'worker failed before ready'", n)
			}
		})
	}
}

// TestReapTenThousandOrphans: 10,000 double-forked grandchildren are all
// reaped by baton as PID 1, leaving no zombie.
func TestReapTenThousandOrphans(t *testing.T) {
	const n = 10000
	b := StartBaton(t, Opt{Env: []string{"BATON_LOG_LEVEL=debug"}}, python(t), testdata("orphans.py"), fmt.Sprint(n), "--wait")
	b.ExpectOut(0, fmt.Sprintf("done %d", n))
	// Each grandchild's exit is logged as it is reaped: wait for all.
	b.Err.waitFor(t, "10000 orphans reaped", deadline, func(_ []string, evs []Event) bool {
		c := 0
		for _, ev := range evs {
			if ev.Msg() == "orphan reaped" {
				c++
			}
		}
		return c >= n
	})
	if z := zombiesUnder(b.PID()); z != 0 {
		t.Fatalf("%d zombies left under baton", z)
	}
	b.Signal(syscall.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d after TERM, want 0 (the worker exits 0 on TERM)", code)
	}
}

// TestExitCodeAmidOrphans: the main worker's code is right in 50 of 50
// runs while 100 orphans die around it (a reaper racing os/exec gets it
// wrong in 7-10 of 50).
func TestExitCodeAmidOrphans(t *testing.T) {
	py := python(t)
	bad := 0
	for i := 0; i < 50; i++ {
		b := StartBaton(t, Opt{}, py, testdata("orphans.py"), "100", "--linger-ms", "5", "--exit", "3")
		if code := b.Wait(); code != 3 {
			bad++
			t.Errorf("run %d: exit %d, want 3", i, code)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of 50 runs had the wrong exit code", bad)
	}
}

// TestSignalsReachWorkerGroup: every catchable signal 1-31 that baton does
// not consume reaches the worker and its process group; SIGURG and SIGPIPE
// never do (the Go runtime's preemption signal, and the one the kernel
// raises for baton's own writes).
func TestSignalsReachWorkerGroup(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LOG_LEVEL=debug"}}, python(t), testdata("sigworker.py"), "--children", "1")
	b.ExpectOut(0, "ready ")
	b.ExpectOut(0, "child-ready ")
	from := len(b.OutLines())
	for s := syscall.Signal(1); s <= 31; s++ {
		switch s {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
			continue // uncatchable, consumed by baton (TERM/INT/QUIT below), or never forwarded (below)
		case unix.SIGPROF:
			continue // consumed by the Go runtime's profiler, never delivered to os/signal
		}
		name := strings.TrimPrefix(unix.SignalName(s), "")
		b.Signal(s)
		_, i := b.ExpectOut(from, "sig "+name+" ")
		_, j := b.ExpectOut(from, "child-sig "+name+" ")
		from = max(i, j) + 1
	}
	// SIGURG and SIGPIPE must not be forwarded: send them, then a barrier
	// signal, and the barrier must be the next thing both processes report.
	// (The barrier is WINCH, 28, above both: of signals pending together
	// the kernel delivers the lowest number first.)
	b.Signal(unix.SIGURG)
	b.Signal(unix.SIGPIPE)
	b.Signal(unix.SIGWINCH)
	_, i := b.ExpectOut(from, "sig SIGWINCH ")
	_, j := b.ExpectOut(from, "child-sig SIGWINCH ")
	for _, l := range b.OutLines()[from : max(i, j)+1] {
		if strings.Contains(l, "SIGURG") || strings.Contains(l, "SIGPIPE") {
			t.Fatalf("a signal baton must not forward reached a worker: %q", l)
		}
	}
	b.Signal(unix.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// TestHUPAndTERMNeverExit2: as PID 1, a Go program that leaves a signal to
// the runtime exits 2. HUP and TERM, early or late, must not do that.
func TestHUPAndTERMNeverExit2(t *testing.T) {
	t.Run("hup-plain-forwarded", func(t *testing.T) {
		b := StartBaton(t, Opt{}, python(t), testdata("sigworker.py"))
		b.ExpectOut(0, "ready ")
		b.Signal(unix.SIGHUP)
		b.ExpectOut(0, "sig SIGHUP ")
		b.Signal(unix.SIGTERM)
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
	})
	t.Run("term-right-after-start", func(t *testing.T) {
		// As soon as baton has started (its first log line follows the
		// subscription), TERM must give 143. Earlier than that is the Go
		// runtime's own start-up window, which no Go program can close:
		// see docs/choices.md, "Known limits".
		for i := 0; i < 20; i++ {
			b := StartBaton(t, Opt{}, "sleep", "1000")
			b.Expect("baton started")
			b.Signal(unix.SIGTERM)
			if code := b.Wait(); code != 143 {
				t.Fatalf("run %d: exit %d, want 143 (2 means the runtime's default handler ran)", i, code)
			}
		}
	})
	t.Run("hup-reload-mode", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: []string{"BATON_RELOAD_SIGNAL=HUP", "BATON_READY=delay:50ms"}}, "sleep", "1000")
		b.Expect("generation ready")
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", 2)
		b.Signal(unix.SIGTERM)
		if code := b.Wait(); code != 143 {
			t.Fatalf("exit %d, want 143", code)
		}
	})
}

// TestDockerStopSleep: TERM from outside the namespace, as docker stop
// sends it, with sleep as the child: baton exits 143 promptly.
func TestDockerStopSleep(t *testing.T) {
	b := StartBaton(t, Opt{}, "sleep", "1000")
	b.Expect("worker started")
	start := time.Now()
	b.Signal(unix.SIGTERM)
	code := b.Wait()
	if code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
	// Generous bound: a missed signal would take the 8 s stop timeout.
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %v to stop sleep", el)
	}
}

// TestHelpersFinishCleanup: a worker with 100 helpers (half in their own
// sessions) that need time to clean up on TERM: baton lets all of them
// finish before it exits. tini, dumb-init and catatonit are measured on
// the same test for comparison; they exit with their main child.
func TestHelpersFinishCleanup(t *testing.T) {
	py := python(t)
	run := func(bin string, args ...string) int {
		t.Helper()
		b := StartBaton(t, Opt{Bin: bin}, append(args, py, testdata("helpers.py"), "100", "300")...)
		b.ExpectOut(0, "ready")
		b.Signal(unix.SIGTERM)
		b.Wait()
		b.WaitOutClosed()
		n := 0
		for _, l := range b.OutLines() {
			if strings.HasPrefix(l, "cleaned ") {
				n++
			}
		}
		return n
	}
	if n := run("", "--"); n != 100 {
		t.Fatalf("baton: %d of 100 helpers finished their cleanup", n)
	}
	for _, anchor := range [][]string{{"tini", "--"}, {"dumb-init"}, {"catatonit", "--"}} {
		path, err := exec.LookPath(anchor[0])
		if err != nil {
			t.Logf("%s not installed: comparison skipped", anchor[0])
			continue
		}
		t.Logf("%s: %d of 100 helpers finished their cleanup", anchor[0], run(path, anchor[1:]...))
	}
}

// TestSubreaperWhenNotPID1: not PID 1, baton becomes a child subreaper and
// still reaps orphans: each of the 5 the worker names is reaped by baton.
func TestSubreaperWhenNotPID1(t *testing.T) {
	const n = 5
	b := StartBaton(t, Opt{NoPIDNS: true, Env: []string{"BATON_LOG_LEVEL=debug"}}, python(t), testdata("orphans.py"), fmt.Sprint(n), "--wait")
	b.ExpectOut(0, fmt.Sprintf("done %d", n))
	var orphans []int
	for _, l := range b.OutLines() {
		var pid int
		if _, err := fmt.Sscanf(l, "orphan %d", &pid); err == nil {
			orphans = append(orphans, pid)
		}
	}
	// Without this, a worker that names no orphan (or a changed line
	// format) would leave nothing to check and the test would pass.
	if len(orphans) != n {
		t.Fatalf("the worker named %d orphans (%v), want %d:\n%s", len(orphans), orphans, n, strings.Join(b.OutLines(), "\n"))
	}
	for _, pid := range orphans {
		b.Err.waitFor(t, fmt.Sprintf("orphan %d reaped", pid), deadline, func(_ []string, evs []Event) bool {
			for _, ev := range evs {
				if ev.Msg() == "orphan reaped" && ev.Int("pid") == pid {
					return true
				}
			}
			return false
		})
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestSubreaperStopsWorkerGroup: not PID 1 (docker run --init), a worker
// that exits leaves a helper in its process group. baton sends that group
// the stop signal, as dumb-init does, and waits for it to finish its
// cleanup, as it waits for every process as PID 1; one that ignores the
// signal gets SIGKILL after BATON_STOP_TIMEOUT. Either way nothing of the
// group outlives baton, and baton exits with the worker's code.
func TestSubreaperStopsWorkerGroup(t *testing.T) {
	py := python(t)
	run := func(t *testing.T, env []string, args ...string) (*Baton, int) {
		t.Helper()
		b := StartBaton(t, Opt{NoPIDNS: true, Env: append([]string{"BATON_LOG_LEVEL=debug"}, env...)}, append([]string{py, testdata("groupleft.py")}, args...)...)
		line, _ := b.ExpectOut(0, "helper pid=")
		var pid, pgid int
		if _, err := fmt.Sscanf(line, "helper pid=%d pgid=%d", &pid, &pgid); err != nil {
			t.Fatalf("helper line %q: %v", line, err)
		}
		t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) }) // in case it outlived baton
		worker := b.Expect("worker started").Int("pid")
		if pgid != worker {
			t.Fatalf("helper %d is in group %d, not the worker's %d", pid, pgid, worker)
		}
		if code := b.Wait(); code != 3 {
			t.Fatalf("exit %d, want the worker's 3", code)
		}
		// Reaped by baton, not merely killed: a zombie would answer kill 0.
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Fatalf("helper %d outlived baton (kill 0: %v)", pid, err)
		}
		b.ErrLines()
		b.Expect("worker exited", "pid", worker, "code", 3)
		b.Expect("orphan reaped", "pid", pid)
		b.Expect("baton exiting", "code", 3)
		return b, pid
	}
	t.Run("term", func(t *testing.T) {
		b, _ := run(t, nil)
		b.WaitOutClosed()
		out := strings.Join(b.OutLines(), "\n")
		if !strings.Contains(out, "helper got TERM") || !strings.Contains(out, "helper done") {
			t.Fatalf("the helper did not get TERM and finish its cleanup:\n%s", out)
		}
	})
	t.Run("kill", func(t *testing.T) {
		b, pid := run(t, []string{"BATON_STOP_TIMEOUT=500ms"}, "--ignore")
		if b.Count("stop timeout: killing what remains") != 1 {
			t.Fatal("no stop timeout logged")
		}
		for _, ev := range b.Events() {
			if ev.Msg() == "orphan reaped" && ev.Int("pid") == pid && ev.Int("code") != 128+int(unix.SIGKILL) {
				t.Fatalf("helper exited %d, want 137 (SIGKILL)", ev.Int("code"))
			}
		}
	})
}

// TestRestartBackoffAndLimit: a crashing worker is restarted with growing
// backoff, and past the limit baton exits with the worker's code.
func TestRestartBackoffAndLimit(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{
		"BATON_RESTART=on-failure", "BATON_READY=delay:20ms", "BATON_RESTART_LIMIT=3/60s",
	}}, "sh", "-c", "sleep 0.1; exit 5")
	var prev float64
	for i := 1; i <= 3; i++ {
		ev := b.Expect("worker restarting", "restarts", i)
		backoff, _ := ev["backoff"].(float64)
		if backoff <= prev {
			t.Fatalf("restart %d: backoff %vms did not grow (previous %vms)", i, backoff, prev)
		}
		prev = backoff
	}
	b.Expect("restart limit reached")
	if code := b.Wait(); code != 5 {
		t.Fatalf("exit %d, want the worker's 5", code)
	}
}

// TestRestartNeverLikeTini: under never, the first worker exit ends baton
// with that worker's code, even with other workers still running.
func TestRestartNeverLikeTini(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_RESTART=never", "BATON_WORKERS=3", "BATON_READY=delay:10ms"}},
		"sh", "-c", `if [ "$BATON_WORKER" = 1 ]; then sleep 0.3; exit 7; fi; exec sleep 1000`)
	b.Expect("generation ready")
	if code := b.Wait(); code != 7 {
		t.Fatalf("exit %d, want 7", code)
	}
	if b.Count("worker restarting") != 0 {
		t.Fatal("a worker was restarted under never")
	}
}

// TestStartupFailureEndsBaton: a first-generation worker that exits before
// it is ready ends baton with its code, without restarts.
func TestStartupFailureEndsBaton(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_WORKERS=2", "BATON_READY=notify"}},
		"sh", "-c", `if [ "$BATON_WORKER" = 0 ]; then exit 4; fi; exec sleep 1000`)
	if code := b.Wait(); code != 4 {
		t.Fatalf("exit %d, want 4", code)
	}
	b.Expect("worker failed before ready", "code", 4)
}

// TestShutdownCodeFromCurrentGeneration: on TERM with several workers the
// status is the first non-zero among them (here, all die of TERM: 143).
func TestShutdownCodeFromCurrentGeneration(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_WORKERS=3", "BATON_READY=delay:10ms"}}, "sleep", "1000")
	b.Expect("generation ready")
	b.Signal(unix.SIGTERM)
	if code := b.Wait(); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
}

// TestExitMap: BATON_EXIT_MAP remaps baton's status last (tini -e).
func TestExitMap(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_EXIT_MAP=143:0,3:9"}}, "sleep", "1000")
	b.Expect("worker started")
	b.Signal(unix.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 143 mapped to 0", code)
	}
	// The last line gives the status baton exits with, not the one before
	// the map.
	b.ErrLines()
	b.Expect("worker exited", "code", 143)
	if ev := b.Expect("baton exiting"); ev.Int("code") != 0 {
		t.Fatalf("baton exiting with code %d, but it exits 0", ev.Int("code"))
	}
}

// TestStopTimeoutKills: a worker that ignores TERM is killed after
// BATON_STOP_TIMEOUT, and baton still exits with its status (137).
func TestStopTimeoutKills(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_STOP_TIMEOUT=300ms"}}, "sh", "-c", "trap '' TERM; echo armed; while :; do sleep 1; done")
	b.ExpectOut(0, "armed")
	b.Signal(unix.SIGTERM)
	b.Expect("stop timeout: killing what remains")
	if code := b.Wait(); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
}

// TestSignalMap: BATON_SIGNAL_MAP rewrites a forwarded signal and drops
// one with an empty target.
func TestSignalMap(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LOG_LEVEL=debug", "BATON_SIGNAL_MAP=USR1:USR2,WINCH:"}}, python(t), testdata("sigworker.py"))
	b.ExpectOut(0, "ready ")
	from := len(b.OutLines())
	b.Signal(unix.SIGUSR1)
	_, i := b.ExpectOut(from, "sig ")
	if l := b.OutLines()[i]; !strings.HasPrefix(l, "sig SIGUSR2 ") {
		t.Fatalf("USR1 arrived as %q, want SIGUSR2", l)
	}
	// WINCH is dropped: the barrier ALRM must be the very next line.
	b.Signal(unix.SIGWINCH)
	b.Signal(unix.SIGALRM)
	_, j := b.ExpectOut(i+1, "sig ")
	if l := b.OutLines()[j]; !strings.HasPrefix(l, "sig SIGALRM ") {
		t.Fatalf("after a dropped WINCH the worker reported %q, want SIGALRM", l)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestSignalMapBeforeShutdown: BATON_SIGNAL_MAP applies before a signal is
// taken for a shutdown. A dropped TERM, INT or QUIT is dropped (dumb-init's
// -r 2:0), and a rewritten signal means what it was rewritten to: TERM
// rewritten to USR1 is forwarded as USR1, USR1 rewritten to TERM is a
// shutdown. Each check waits for baton's own log of the signal (dropped,
// forwarded): two signals sent to baton one after the other may reach its
// loop in either order, as different threads take them.
func TestSignalMapBeforeShutdown(t *testing.T) {
	py := python(t)
	// firstSig is the first signal the worker reported.
	firstSig := func(b *Baton) string {
		line, _ := b.ExpectOut(0, "sig ")
		return strings.Fields(line)[1]
	}
	for _, sig := range []syscall.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGQUIT} {
		name := unix.SignalName(sig)[3:]
		t.Run("drop "+name, func(t *testing.T) {
			b := StartBaton(t, Opt{Env: []string{"BATON_LOG_LEVEL=debug", "BATON_SIGNAL_MAP=" + name + ":"}}, py, testdata("sigworker.py"))
			b.ExpectOut(0, "ready ")
			b.Signal(sig)
			b.Expect("signal dropped", "signal", "SIG"+name)
			if n := b.Count("shutdown begun"); n != 0 {
				t.Fatalf("a dropped %s began a shutdown", name)
			}
			b.Signal(unix.SIGWINCH) // sent after the drop was handled
			b.Expect("signal forwarded", "signal", "SIGWINCH")
			if got := firstSig(b); got != "SIGWINCH" {
				t.Fatalf("the worker got %s first, want SIGWINCH (%s is dropped)", got, name)
			}
			end := unix.SIGTERM
			if sig == unix.SIGTERM {
				end = unix.SIGINT
			}
			b.Signal(end) // not dropped: a shutdown; the worker exits 0 on it
			b.Expect("shutdown begun")
			if code := b.Wait(); code != 0 {
				t.Fatalf("exit %d, want the worker's 0", code)
			}
		})
	}
	t.Run("TERM means USR1", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: []string{"BATON_LOG_LEVEL=debug", "BATON_SIGNAL_MAP=TERM:USR1"}}, py, testdata("sigworker.py"))
		b.ExpectOut(0, "ready ")
		b.Signal(unix.SIGTERM)
		b.Expect("signal forwarded", "signal", "SIGUSR1")
		if n := b.Count("shutdown begun"); n != 0 {
			t.Fatal("TERM rewritten to USR1 began a shutdown")
		}
		if got := firstSig(b); got != "SIGUSR1" {
			t.Fatalf("the worker got %s first, want SIGUSR1", got)
		}
		b.Signal(unix.SIGINT)
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want the worker's 0", code)
		}
	})
	t.Run("USR1 means TERM", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: []string{"BATON_SIGNAL_MAP=USR1:TERM"}}, py, testdata("sigworker.py"))
		b.ExpectOut(0, "ready ")
		b.Signal(unix.SIGUSR1)
		b.Expect("shutdown begun", "signal", "SIGUSR1")
		b.Expect("stopping", "signal", "SIGTERM")
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want the worker's 0", code)
		}
		if got := firstSig(b); got != "SIGTERM" {
			t.Fatalf("the worker got %s first, want SIGTERM", got)
		}
	})
}
