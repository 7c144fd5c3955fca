package test

// Deploy-time control: baton reload reports its outcome, BATON_RELOAD_CHECK
// refuses a broken reload, BATON_SURGE bounds the workers alive during a
// reload, BATON_WATCHDOG replaces a hung worker.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReloadReportsOutcome: baton reload exits 0 naming the generation
// that serves after a good swap; 1 with the reason after a rollback and
// after a failed reload check (no worker started then); 3 when no baton
// answers; two at once each get the outcome of the swap that covered
// them; a user other than root or baton's may not reload.
func TestReloadReportsOutcome(t *testing.T) {
	dir := t.TempDir()
	broken, badConfig := filepath.Join(dir, "broken"), filepath.Join(dir, "bad-config")
	check := filepath.Join(dir, "check.sh")
	os.WriteFile(check, []byte(fmt.Sprintf(`if [ -e %s ]; then echo "checking config"; echo "config invalid: no such upstream"; exit 4; fi`, badConfig)), 0o644)
	script := fmt.Sprintf(`[ -e %s ] && exit 1; exec %s hello`, broken, batonBin)
	b, _ := serve(t, []string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_RELOAD_CHECK=sh " + check}, "sh", "-c", script)
	pid := strconv.Itoa(b.PID())

	code, out := runBaton(t, "reload", "--pid", pid)
	if code != 0 || !strings.Contains(out, "generation 2 serving") {
		t.Fatalf("good reload: exit %d %q", code, out)
	}
	os.WriteFile(broken, nil, 0o644)
	code, out = runBaton(t, "reload", "--pid", pid)
	if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, "generation 2 serves on") {
		t.Fatalf("rolled-back reload: exit %d %q", code, out)
	}
	os.Remove(broken)
	os.WriteFile(badConfig, nil, 0o644)
	started := b.Count("worker started")
	code, out = runBaton(t, "reload", "--pid", pid)
	if code != 1 || !strings.Contains(out, "exited 4: config invalid: no such upstream") {
		t.Fatalf("reload with a failing check: exit %d %q", code, out)
	}
	b.Expect("reload refused")
	if n := b.Count("worker started"); n != started {
		t.Fatalf("%d workers started after a failed check", n-started)
	}
	os.Remove(badConfig)

	// Two at once.
	var wg sync.WaitGroup
	outs := make([]string, 2)
	codes := make([]int, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], outs[i] = runBaton(t, "reload", "--pid", pid)
		}()
	}
	wg.Wait()
	for i := range outs {
		if codes[i] != 0 || !strings.Contains(outs[i], " serving") {
			t.Fatalf("concurrent reload %d: exit %d %q", i, codes[i], outs[i])
		}
	}
	t.Logf("two at once: %q, %q", strings.TrimSpace(outs[0]), strings.TrimSpace(outs[1]))

	// Another user, inside the container (its PID namespace), as
	// kubectl exec with a non-root user would be.
	if nsenter, err := exec.LookPath("nsenter"); err == nil && os.Geteuid() == 0 {
		cmd := exec.Command(nsenter, "--target", pid, "--pid", "--setuid", "65534", "--setgid", "65534", "--", batonBin, "reload")
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "permission denied") {
			t.Fatalf("reload as uid 65534: %v %q, want exit 1, permission denied", err, out)
		}
	}

	b.Signal(unix.SIGTERM)
	b.Wait()
	if code, out := runBaton(t, "reload", "--pid", pid, "--timeout", "2s"); code != 3 {
		t.Fatalf("reload with no baton: exit %d %q, want 3", code, out)
	}
}

// TestRollingSurge: BATON_WORKERS=4 with BATON_SURGE=1 never has more
// than 5 workers alive during 20 reloads under load (baton's children,
// sampled every couple of milliseconds), and loses no request.
func TestRollingSurge(t *testing.T) {
	b, addr := serve(t, []string{"BATON_WORKERS=4", "BATON_SURGE=1", "BATON_READY=notify"}, batonBin, "hello")
	stop := load(t, addr, 16)
	var mu sync.Mutex
	most, samples := 0, 0
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(2 * time.Millisecond) // sampling, not waiting for an event
		defer tick.Stop()
		for {
			n := len(childrenOf(b.PID()))
			mu.Lock()
			most, samples = max(most, n), samples+1
			mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	for gen := 2; gen <= 21; gen++ {
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", gen)
	}
	settle(t, b, 4)
	close(done)
	waitGenerationServes(t, addr, "21")
	checkNoFailures(t, stop())
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d samples, at most %d workers alive", samples, most)
	if most > 5 {
		t.Fatalf("%d workers alive at once during rolling swaps, want at most 5", most)
	}
	if most < 5 {
		t.Errorf("never more than %d workers: the sampling missed the surge or the swaps did not overlap", most)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestWatchdogReplacesHungWorker: a worker that sent WATCHDOG=1 and is then
// stopped (SIGSTOP: it can act on nothing) is aborted, killed after the
// stop timeout and restarted, within BATON_WATCHDOG plus
// BATON_STOP_TIMEOUT; a worker that never sent WATCHDOG=1 is left alone.
func TestWatchdogReplacesHungWorker(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_WATCHDOG=1s", "BATON_STOP_TIMEOUT=1s",
		"BATON_LISTEN=127.0.0.1:0"}}, python(t), testdata("watchdog.py"))
	b.Expect("generation ready")
	var pinger, silent int
	for _, w := range []string{"0", "1"} {
		line, _ := b.ExpectOut(0, "watchdog worker="+w+" ")
		if !strings.Contains(line, "usec=1000000") || !strings.Contains(line, "pid_ok=yes") {
			t.Fatalf("worker %s got %q: want WATCHDOG_USEC=1000000 and WATCHDOG_PID its own pid", w, line)
		}
		var p int
		fmt.Sscanf(line[strings.Index(line, "pid="):], "pid=%d", &p)
		if w == "0" {
			pinger = p
		} else {
			silent = p
		}
	}
	host := map[int]int{}
	for _, k := range childrenOf(b.PID()) {
		host[nsPID(t, k)] = k
	}
	// Only a worker that has sent WATCHDOG=1 is watched: stop it once its
	// first is in baton's queue (stopped before it, under load, it was
	// rightly left alone, and the test waited in vain).
	b.ExpectOut(0, "pinged")
	stopped := time.Now()
	if err := syscall.Kill(host[pinger], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	b.Expect("worker hung", "pid", pinger)
	b.Expect("hung worker killed", "pid", pinger)
	ev := b.Expect("worker exited", "pid", pinger)
	if c := ev.Int("code"); c != 137 {
		t.Errorf("the hung worker exited %d, want 137 (SIGKILL: a stopped process cannot act on SIGABRT)", c)
	}
	b.Expect("worker restarting", "worker", 0)
	b.Expect("worker ready", "worker", 0)
	el := time.Since(stopped)
	t.Logf("replaced %v after SIGSTOP", el)
	if el > 4*time.Second {
		t.Errorf("replaced %v after it hung, want within BATON_WATCHDOG + BATON_STOP_TIMEOUT (2 s) and a margin", el)
	}
	if b.Count("worker hung", "pid", silent) != 0 {
		t.Fatal("a worker that never sent WATCHDOG=1 was taken for hung")
	}
	if err := syscall.Kill(host[silent], 0); err != nil {
		t.Fatalf("the silent worker is gone: %v", err)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}
