package test

// PID 1 trust: every signal from the first instant, nothing baton does
// itself reaches a worker, workers start with a clean signal state, and a
// late SIGKILL never reaches a process that is not baton's.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
)

// selfWorker returns the command line that runs this test binary as a
// worker in the given role, and the environment entry that selects it.
func selfWorker(t *testing.T, role string) (args []string, env string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe}, "TEST_ROLE=" + role
}

// lostWithin is how long a forwarded signal may take before it counts as
// lost. Forwarding takes microseconds; this only bounds a failure.
const lostWithin = 5 * time.Second

// expectOutWithin is ExpectOut with a shorter bound.
func (b *Baton) expectOutWithin(from int, prefix string, within time.Duration) int {
	b.t.Helper()
	idx := -1
	b.Out.waitFor(b.t, fmt.Sprintf("stdout line %q", prefix), within, func(all []string, _ []Event) bool {
		for i := from; i < len(all); i++ {
			if strings.HasPrefix(all[i], prefix) {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

// TestEarlySignalsForwarded: a worker that is up a millisecond after it
// starts gets USR1, USR2, WINCH and two real-time signals sent to PID 1
// right after its ready line, in every one of 25 rounds (tini delivers
// all of them; a baton that subscribed them late lost every one).
func TestEarlySignalsForwarded(t *testing.T) {
	args, role := selfWorker(t, "sigecho")
	send := []syscall.Signal{unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, syscall.Signal(36), syscall.Signal(64)}
	for round := 0; round < 25; round++ {
		b := StartBaton(t, Opt{Env: []string{role}}, append([]string{"--"}, args...)...)
		b.expectOutWithin(0, "ready ", deadline)
		for _, s := range send {
			b.Signal(s)
		}
		for _, s := range send {
			b.expectOutWithin(0, "sig "+sigName(s), lostWithin)
		}
		b.Signal(unix.SIGTERM)
		if code := b.Wait(); code != 0 {
			t.Fatalf("round %d: exit %d, want the worker's 0", round, code)
		}
	}
}

// TestPendingSignalAtStartReachesWorker: a signal already pending when
// baton is exec'd (blocked by its parent, as tini's pending signals are)
// is forwarded once the worker exists, not dropped.
func TestPendingSignalAtStartReachesWorker(t *testing.T) {
	py := python(t)
	// The worker has no handler yet when the forwarded USR2 arrives, or
	// has one: either it dies of it (140) or it reports it. Not a Go
	// worker: between its runtime's start and its signal.Notify, Go
	// catches USR2 and drops it (os/signal: "caught but no action will be
	// taken"), a loss of the worker's own that made this test fail 1 run
	// in 15 with any baton. sh has no such window.
	worker := `trap 'echo sig SIGUSR2; exit 0' USR2; echo ready; while :; do sleep 0.05; done`
	b := StartBaton(t, Opt{Bin: py},
		testdata("hostile-parent.py"), "--pending", "SIGUSR2", "--", batonBin, "--", "/bin/sh", "-c", worker)
	select {
	case <-b.Exited():
		if b.code != 128+int(unix.SIGUSR2) {
			t.Fatalf("exit %d: the worker neither reported SIGUSR2 nor died of it (140)", b.code)
		}
	case <-waitLine(b.Out, "sig SIGUSR2"):
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want the worker's 0 after it reported SIGUSR2", code)
		}
	case <-time.After(deadline):
		t.Fatal("the pending SIGUSR2 never reached the worker")
	}
}

// waitLine returns a channel closed once a line with prefix appears.
func waitLine(l *lines, prefix string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for {
			l.mu.Lock()
			for _, s := range l.all {
				if strings.HasPrefix(s, prefix) {
					l.mu.Unlock()
					close(done)
					return
				}
			}
			grew, closed := l.grew, l.closed
			l.mu.Unlock()
			if closed {
				return
			}
			<-grew
		}
	}()
	return done
}

// TestOwnSIGPIPENeverForwarded: SIGPIPEs the kernel raises for baton's own
// writes (a control-socket client that hangs up, an HTTP client that
// resets, a dead log reader) never reach a worker, and a broken stderr
// never ends baton.
func TestOwnSIGPIPENeverForwarded(t *testing.T) {
	py := python(t)
	t.Run("clients-hang-up", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: []string{"BATON_HTTP_ADDR=127.0.0.1:0", "BATON_LOG_LEVEL=debug"}},
			py, testdata("sigworker.py"))
		b.ExpectOut(0, "ready ")
		addr := b.Expect("http serving").Str("addr")
		b.Expect("worker started")
		ctl := "\x00" + strings.TrimPrefix(control.TargetOf(b.PID()).Addr, "@")
		for i := 0; i < 50; i++ {
			// baton health that gives up before the answer: the answer
			// is written to a socket whose peer is gone (EPIPE).
			c, err := net.Dial("unix", ctl)
			if err != nil {
				t.Fatalf("control socket: %v", err)
			}
			c.Write([]byte("status\n"))
			c.Close()
			// A /metrics scrape that resets its connection.
			h, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			h.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
			h.(*net.TCPConn).SetLinger(0)
			h.Close()
		}
		// The status queries above went through the loop in order, so a
		// last complete one proves every answer was written (or failed).
		if _, err := control.AskStatus(control.TargetOf(b.PID())); err != nil {
			t.Fatal(err)
		}
		b.Signal(unix.SIGTERM)
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want the worker's 0", code)
		}
		noSIGPIPE(t, b)
	})
	t.Run("log-reader-gone", func(t *testing.T) {
		// Debug logs a line per forwarded signal, each a write to a pipe
		// nobody reads.
		b := StartBaton(t, Opt{BrokenStderr: true, Env: []string{"BATON_LOG_LEVEL=debug"}}, py, testdata("sigworker.py"))
		b.ExpectOut(0, "ready ")
		for i := 0; i < 5; i++ {
			from := len(b.OutLines())
			b.Signal(unix.SIGUSR1)
			b.ExpectOut(from, "sig SIGUSR1 ")
		}
		b.Signal(unix.SIGTERM)
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want the worker's 0 (141 means a write to stderr ended baton)", code)
		}
		noSIGPIPE(t, b)
	})
}

func noSIGPIPE(t *testing.T, b *Baton) {
	t.Helper()
	b.WaitOutClosed()
	for _, l := range b.OutLines() {
		if strings.Contains(l, "SIGPIPE") {
			t.Fatalf("a worker got SIGPIPE: %q", l)
		}
	}
}

// TestCleanSignalStateUnderHostileParent: baton's parent blocked every
// signal and ignored many; every worker of every generation, plain mode
// (started directly) and pool mode (through the shim) alike, still starts
// with an empty mask and nothing ignored.
func TestCleanSignalStateUnderHostileParent(t *testing.T) {
	py := python(t)
	// sh reads the state it inherited before it execs the reporter.
	report := []string{"sh", testdata("execwith-sigstatus.sh"), "sh", "-c",
		`echo "state gen=$BATON_GENERATION worker=$BATON_WORKER $SIGSTATUS"; exec sleep 1000`}
	for _, mode := range []struct {
		name      string
		env       []string
		workers   int
		blockOnly bool
	}{
		{"plain", []string{"BATON_RELOAD_SIGNAL=HUP", "BATON_READY=delay:20ms"}, 1, false},
		{"pool", []string{"BATON_LISTEN=127.0.0.1:0", "BATON_WORKERS=2", "BATON_READY=delay:20ms"}, 2, false},
		// baton reads no undocumented variable: NOMASK was once a debug
		// switch that skipped clearing the mask.
		// Only blocked, nothing ignored: a plain-mode worker is started
		// directly, without the shim.
		{"plain-NOMASK", []string{"BATON_RELOAD_SIGNAL=HUP", "BATON_READY=delay:20ms", "NOMASK=1"}, 1, true},
		{"pool-NOMASK", []string{"BATON_LISTEN=127.0.0.1:0", "BATON_WORKERS=2", "BATON_READY=delay:20ms", "NOMASK=1"}, 2, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			parent := []string{testdata("hostile-parent.py")}
			if mode.blockOnly {
				parent = append(parent, "--block-only")
			}
			b := StartBaton(t, Opt{Bin: py, Env: mode.env},
				append(append(parent, "--", batonBin, "--"), report...)...)
			b.Expect("generation ready")
			b.Signal(unix.SIGHUP)
			b.Expect("swap complete", "gen", 2)
			for gen := 1; gen <= 2; gen++ {
				for w := 0; w < mode.workers; w++ {
					line, _ := b.ExpectOut(0, fmt.Sprintf("state gen=%d worker=%d ", gen, w))
					if !strings.Contains(line, "SigBlk:0000000000000000") || !strings.Contains(line, "SigIgn:0000000000000000") {
						t.Errorf("worker inherited signal state: %s", line)
					}
				}
			}
			b.Signal(unix.SIGTERM)
			if code := b.Wait(); code != 143 {
				t.Fatalf("exit %d, want 143", code)
			}
		})
	}
}

// TestSignalsDuringShim: a signal forwarded while a worker is still
// baton's shim (between baton's exec and the command's, about a
// millisecond) reaches the command: it is neither swallowed nor turned
// into a Go crash dump. A reload signal and a second signal sent together
// usually arrive together: the loop starts the new worker for the first,
// then handles the second while that worker is in the shim. The kernel
// and the Go runtime do not promise that order, so a round in which the
// second signal never reached the new worker proves nothing and is run
// again; enough rounds must count. The forwarded signals are ABRT, which
// the shim's Go runtime would turn into a crash dump (as QUIT, which means
// shutdown), and HUP, the reload signal, which a rewrite forwards.
func TestSignalsDuringShim(t *testing.T) {
	py := python(t)
	env := []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:100ms", "BATON_ULIMITS=core=0",
		"BATON_SIGNAL_MAP=USR1:ABRT,USR2:HUP", "BATON_LOG_LEVEL=debug"}
	const wantRounds, maxRounds = 4, 40
	// reached reports whether baton sent (or held) sig for pid.
	reached := func(b *Baton, pid int, sig syscall.Signal) bool {
		for _, ev := range b.Events() {
			if (ev.Msg() == "signal forwarded" || ev.Msg() == "signal held") && ev.Int("pid") == pid && ev.Str("signal") == unix.SignalName(sig) {
				return true
			}
		}
		return false
	}
	// outcome waits for the swap to gen to end; if baton sent sig to its
	// worker, it checks what the worker made of it: it died of it (default
	// action, it had no handler yet) or reported it. Exit 2 is the Go
	// runtime's crash in the shim.
	outcome := func(t *testing.T, b *Baton, gen int, sig syscall.Signal) (counted bool) {
		t.Helper()
		pid := b.Expect("worker started", "gen", gen).Int("pid")
		var end Event
		b.Err.waitFor(t, fmt.Sprintf("swap %d to end", gen), deadline, func(_ []string, evs []Event) bool {
			for _, ev := range evs {
				if (ev.Msg() == "swap complete" || ev.Msg() == "swap aborted") && ev.Int("gen") == gen {
					end = ev
					return true
				}
			}
			return false
		})
		if end.Msg() == "swap aborted" {
			ev := b.Expect("worker exited", "pid", pid)
			if ev.Int("code") != 128+int(sig) {
				t.Fatalf("generation %d's worker exited %d, want %d (died of %s); 2 is a crash in the shim",
					gen, ev.Int("code"), 128+int(sig), unix.SignalName(sig))
			}
			return true
		}
		if !reached(b, pid, sig) {
			return false // forwarded before the new worker existed
		}
		b.ExpectOut(0, fmt.Sprintf("sig %s pid=%d", unix.SignalName(sig), pid))
		return true
	}
	t.Run("forwarded", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: env}, py, testdata("sigworker.py"), "--stay")
		b.Expect("generation ready")
		gen, counted := 1, 0
		for round := 0; round < maxRounds && counted < wantRounds; round++ {
			pair := [2]syscall.Signal{unix.SIGUSR1, unix.SIGABRT}
			if round%2 == 1 {
				pair = [2]syscall.Signal{unix.SIGUSR2, unix.SIGHUP}
			}
			gen++
			b.Signal(unix.SIGHUP) // reload
			b.Signal(pair[0])     // forwarded as pair[1]
			if outcome(t, b, gen, pair[1]) {
				counted++
			}
		}
		if counted < wantRounds {
			t.Fatalf("only %d of %d rounds sent the signal to the new worker", counted, maxRounds)
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
		noCrashDump(t, b)
	})
	t.Run("stop", func(t *testing.T) {
		// QUIT means shutdown: as PID 1 baton sends it to every process,
		// the new worker in its shim included.
		for attempt := 0; attempt < 10; attempt++ {
			b := StartBaton(t, Opt{Env: env}, py, testdata("sigworker.py"))
			b.Expect("generation ready")
			b.Signal(unix.SIGHUP)
			b.Signal(unix.SIGQUIT)
			b.Wait()
			b.ErrLines()
			pid := -1
			for _, ev := range b.Events() {
				if ev.Msg() == "worker started" && ev.Int("gen") == 2 {
					pid = ev.Int("pid")
				}
			}
			if pid < 0 {
				continue // QUIT came first: no reload while stopping
			}
			ev := b.Expect("worker exited", "pid", pid)
			if c := ev.Int("code"); c != 128+int(unix.SIGQUIT) && c != 0 {
				t.Fatalf("the new worker exited %d, want 131 (died of QUIT) or 0 (reported it); 2 is a crash in the shim", c)
			}
			noCrashDump(t, b)
			return
		}
		t.Fatal("in 10 attempts QUIT never came after the reload")
	})
}

func noCrashDump(t *testing.T, b *Baton) {
	t.Helper()
	for _, l := range b.ErrLines() {
		if strings.Contains(l, "goroutine ") || strings.HasPrefix(l, "SIGQUIT: quit") {
			t.Fatalf("a Go crash dump on stderr: %q", l)
		}
	}
}

// ptyPair opens a pseudo-terminal: the master, and the slave to be the
// controlling terminal of baton's session.
func ptyPair(t *testing.T) (master, slave *os.File) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a PID namespace with a controlling terminal")
	}
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// startOnTTY runs baton as PID 1 and session leader with the slave as its
// controlling terminal, as docker run -it does.
func startOnTTY(t *testing.T, slave *os.File, env []string, args ...string) *Baton {
	t.Helper()
	return StartBaton(t, Opt{Stdin: slave, Env: env, Sys: &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWPID, Setsid: true, Setctty: true, Ctty: 0,
	}}, args...)
}

// TestCtrlC: Ctrl-C on the terminal ends the container in an orderly way:
// in plain mode the app gets SIGINT and baton exits with its status (as
// tini), also after a rolled-back reload; in pool mode every worker gets
// SIGINT, drains, and baton exits.
func TestCtrlC(t *testing.T) {
	py := python(t)
	ctrlC := func(t *testing.T, m *os.File) {
		t.Helper()
		if _, err := m.Write([]byte{3}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("pool", func(t *testing.T) {
		m, s := ptyPair(t)
		b := startOnTTY(t, s, []string{"BATON_WORKERS=2", "BATON_READY=delay:20ms"}, py, testdata("sigworker.py"))
		b.Expect("generation ready")
		_, i := b.ExpectOut(0, "ready ")
		b.ExpectOut(i+1, "ready ")
		ctrlC(t, m)
		b.Expect("shutdown begun", "signal", "SIGINT")
		_, i = b.ExpectOut(0, "sig SIGINT ")
		b.ExpectOut(i+1, "sig SIGINT ")
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want 0 (both workers exit 0 on INT)", code)
		}
	})
	t.Run("plain-after-rollback", func(t *testing.T) {
		m, s := ptyPair(t)
		b := startOnTTY(t, s, []string{"BATON_RELOAD_SIGNAL=HUP", "BATON_READY=delay:20ms"},
			"sh", "-c", `if [ "$BATON_GENERATION" = 2 ]; then exit 3; fi; exec "$0" "$@"`, py, testdata("sigworker.py"))
		b.Expect("generation ready")
		b.ExpectOut(0, "ready ")
		b.Signal(unix.SIGHUP)
		b.Expect("swap aborted", "gen", 2)
		ctrlC(t, m)
		b.ExpectOut(0, "sig SIGINT ")
		if code := b.Wait(); code != 0 {
			t.Fatalf("exit %d, want the app's 0", code)
		}
		if b.Count("shutdown begun") != 0 {
			t.Fatal("in plain mode Ctrl-C must go to the app, not to baton")
		}
	})
}

// TestLateKillSparesReusedPID: a retired worker that exited at once leaves
// no SIGKILL behind. Its pid is then taken (forced through ns_last_pid) by
// an unrelated process leading its own group; when the stop timeout of
// the retirement comes, that process must live on.
func TestLateKillSparesReusedPID(t *testing.T) {
	py := python(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	b := StartBaton(t, Opt{Env: []string{
		"BATON_RELOAD_SIGNAL=HUP", "BATON_READY=delay:20ms", "BATON_STOP_TIMEOUT=1s", "REUSE_PID_FILE=" + pidFile,
	}}, py, testdata("reuse.py"))
	line, at := b.ExpectOut(0, "ready ")
	var pid1 int
	fmt.Sscanf(line, "ready pid=%d", &pid1)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid1)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Generation 1 retires and exits at once.
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	b.Expect("worker exited", "gen", 1, "pid", pid1)
	// Generation 2 makes the unrelated process with generation 1's pid,
	// once its handler is in place: "ready" for baton is 20 ms after the
	// start, and a Python still starting dies of the USR1 (baton then
	// ended: 21 runs in 30 with 3 busy loops on 2 cores).
	b.ExpectOut(at+1, "ready ")
	b.Signal(unix.SIGUSR1)
	vline, _ := b.ExpectOut(0, "victim")
	var nspid, hostpid int
	if _, err := fmt.Sscanf(vline, "victim nspid=%d hostpid=%d", &nspid, &hostpid); err != nil {
		t.Fatalf("no victim: %q", vline)
	}
	if nspid != pid1 {
		t.Fatalf("could not force pid reuse: victim got %d, want %d", nspid, pid1)
	}
	// Barrier: generation 2 ignores TERM, so its retirement, begun after
	// generation 1's, ends in a SIGKILL at its stop timeout, later.
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 3)
	b.Expect("worker killed after stop timeout", "gen", 2)
	if n := b.Count("worker killed after stop timeout", "gen", 1); n != 0 {
		t.Errorf("baton SIGKILLed generation 1's group %d after it had emptied", pid1)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", hostpid))
	if err != nil {
		t.Fatalf("the unrelated process %d is gone: %v", hostpid, err)
	}
	if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 0 && f[0] == "Z" {
		t.Fatalf("the unrelated process %d was killed (zombie)", hostpid)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}
