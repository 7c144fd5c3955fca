package test

// Canary and bake (BATON_CANARY, BATON_BAKE) on steer mode: a share of new
// connections for the new generation first, the old one parked after the
// cutover, and a way back from either at once.

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
)

// answeredBy makes n requests, each on a fresh connection (4 at a time),
// and counts them by the generation that answered; a failed one counts
// under "failed".
func answeredBy(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	var mu sync.Mutex
	by := map[string]int{}
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range 4 {
		wg.Go(func() {
			for range next {
				gen := "failed"
				if resp, err := c.Get("http://" + addr + "/"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					gen = resp.Header.Get("X-Baton-Generation")
				}
				mu.Lock()
				by[gen]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return by
}

// TestCanaryShare: with BATON_CANARY=10%:3s the new generation answers
// 10 % ± 5 % of new connections during the step, then all of them, and the
// load (no retries) sees no hard failure throughout, for a careful worker
// and for one that drains badly.
func TestCanaryShare(t *testing.T) {
	naive, role := selfWorker(t, "naive")
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"careful", nil, []string{batonBin, "hello"}},
		{"naive", []string{role}, naive},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := append([]string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer", "BATON_CANARY=10%:3s"}, c.env...)
			b, addr := serve(t, env, c.args...)
			stop := load(t, addr, 32)
			b.Signal(unix.SIGHUP)
			b.Expect("canary step", "gen", 2, "percent", 10)
			st, err := control.AskStatus(control.TargetOf(b.PID()))
			if err != nil || st.Canary != 2 || st.CanaryPercent != 10 || st.Gen != 1 {
				t.Fatalf("status during the step: %+v %v", st, err)
			}
			if code, out := runBaton(t, "health", "--pid", strconv.Itoa(b.PID())); code != 0 || !strings.Contains(out, "; canary: generation 2 at step 1, 10% of new connections") {
				t.Fatalf("baton health during the step: exit %d %q", code, out)
			}
			const n = 1000
			by := answeredBy(t, addr, n)
			if b.Count("swap complete", "gen", 2) > 0 {
				t.Fatal("the step ended before the share was measured: the machine is too slow for a 3 s step")
			}
			// 10 % of 1,000 has a standard deviation of 9.5: 5 to 15 % is
			// more than 5 of them either side.
			t.Logf("during the 10%% step: %v", by)
			if by["failed"] != 0 || by["1"]+by["2"] != n {
				t.Fatalf("during the step: %v, want every request answered by generation 1 or 2", by)
			}
			if by["2"] < n*5/100 || by["2"] > n*15/100 {
				t.Errorf("generation 2 answered %d of %d new connections during the 10%% step, want 5 to 15 %%", by["2"], n)
			}
			b.Expect("swap complete", "gen", 2)
			if by := answeredBy(t, addr, 200); by["2"] != 200 {
				t.Errorf("after the canary: %v, want all 200 from generation 2", by)
			}
			r := stop()
			hard := r.Failures - r.Reused
			t.Logf("%d requests, %d failed %v (%d on reused connections), generations %v", r.Requests, r.Failures, r.ByKind, r.Reused, r.Generations)
			if hard != 0 {
				t.Errorf("%d hard failures, want 0", hard)
			}
			if c.name == "careful" && r.Failures != 0 {
				t.Errorf("careful worker: %d failures, want none at all", r.Failures)
			}
			b.Expect("worker exited", "gen", 1)
			b.Signal(unix.SIGTERM)
			b.Wait()
		})
	}
}

// helloFailingGen2, run by sh -c with baton's path as $0, is baton hello
// whose generation 2 fails 2 s after it is ready (HELLO_FAIL_AFTER).
const helloFailingGen2 = `[ "$BATON_GENERATION" = 2 ] && export HELLO_FAIL_AFTER=2s; exec "$0" hello`

// TestCanaryAbortAndBakeRevert: a new generation whose workers exit 2 s
// after they became ready (hello's HELLO_FAIL_AFTER: it says STOPPING=1,
// drains and exits 1) is aborted during a canary and reverted during a
// bake. Either way the load sees no failure, the old generation serves on
// (in a bake with the same workers, never signalled), baton reload reports
// why, and the next reload works.
func TestCanaryAbortAndBakeRevert(t *testing.T) {
	for _, c := range []struct {
		name, env, event, outcome string
	}{
		{"canary", "BATON_CANARY=10%:20s", "canary aborted", "canary of generation 2 aborted at step 1: worker"},
		{"bake", "BATON_BAKE=20s", "swap reverted", "generation 2 reverted to 1: worker"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, addr := serve(t, []string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer", c.env}, "sh", "-c", helloFailingGen2, batonBin)
			pid := strconv.Itoa(b.PID())
			old := map[int]bool{}
			for _, ev := range b.Events() {
				if ev.Msg() == "worker started" {
					old[ev.Int("pid")] = true
				}
			}
			stop := load(t, addr, 32)
			begun := time.Now()
			code, out := runBaton(t, "reload", "--pid", pid)
			took := time.Since(begun)
			if code != 1 || !strings.Contains(out, c.outcome) || !strings.Contains(out, "STOPPING=1") {
				t.Fatalf("reload: exit %d %q, want 1 and %q", code, out, c.outcome)
			}
			t.Logf("baton reload after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
			b.Expect(c.event, "gen", 2)
			st, err := control.AskStatus(control.TargetOf(b.PID()))
			if err != nil || st.Gen != 1 || st.Canary != 0 || st.Parked != 0 || st.Serving < 2 {
				t.Fatalf("status after: %+v %v", st, err)
			}
			if c.name == "bake" && st.ReloadsReverted != 1 || c.name == "canary" && st.ReloadsFailed != 1 {
				t.Fatalf("counters after: %+v", st.Stats)
			}
			if by := answeredBy(t, addr, 100); by["1"] != 100 {
				t.Fatalf("after the %s: %v, want all 100 from generation 1", c.event, by)
			}
			// The old generation's workers are the ones from before: in a
			// bake they were parked, alive, and never asked to stop.
			for _, ev := range b.Events() {
				if (ev.Msg() == "worker retiring" || ev.Msg() == "worker exited") && old[ev.Int("pid")] {
					t.Fatalf("an old worker was stopped: %v", ev)
				}
			}
			// The next reload works (generation 3 does not fail).
			if code, out := runBaton(t, "reload", "--pid", pid, "--no-wait"); code != 0 {
				t.Fatalf("next reload: exit %d %q", code, out)
			}
			if c.name == "canary" {
				b.Expect("canary step", "gen", 3)
			} else {
				b.Expect("bake begun", "gen", 3)
				if code, out := runBaton(t, "health", "--pid", pid); code != 0 || !strings.Contains(out, "ready: generation 3, 2 serving; bake: generation 1 parked (2 workers), ") {
					t.Fatalf("baton health during the bake: exit %d %q", code, out)
				}
			}
			waitGenerationServes(t, addr, "3")
			r := stop()
			t.Logf("%d requests, %d failed %v (%d on reused connections), generations %v", r.Requests, r.Failures, r.ByKind, r.Reused, r.Generations)
			if r.Failures != 0 {
				t.Errorf("%d failures, want 0", r.Failures)
			}
			if r.Generations["2"] == 0 {
				t.Error("generation 2 never answered: the test did not put it under load")
			}
			b.Signal(unix.SIGTERM)
			b.Wait()
		})
	}
}

// TestCanaryBakeUnannouncedExit: the new generation's workers exit 2 s
// after they became ready without a word to baton (no STOPPING=1): they
// close their listeners, answer what they accepted, and exit 1. What the
// kernel had queued on the new generation's sockets by then, and queued
// until baton saw the exits, no worker of that generation takes any more;
// baton relays it to the generation it steered back to, where closing the
// sockets would have reset it (3 to 16 resets a run before the relay).
//   - careful: hello, HELLO_FAIL_QUIET=1 (it drains as on SIGTERM): the
//     load (no retries) sees no failure at all;
//   - naive: listener close and http.Server.Shutdown at once. No request
//     is reset or refused; Shutdown drops a request it accepted and read
//     after it began (net/http's own, a few a run), which no init can
//     save: those are counted as its own and only logged.
func TestCanaryBakeUnannouncedExit(t *testing.T) {
	naive, role := selfWorker(t, "naive")
	for _, w := range []struct {
		name string
		env  []string
		args []string
	}{
		{"careful", []string{"HELLO_FAIL_QUIET=1"}, []string{"sh", "-c", helloFailingGen2, batonBin}},
		{"naive", []string{role}, append([]string{"sh", "-c", `[ "$BATON_GENERATION" = 2 ] && export TEST_FAIL_AFTER=2s; exec "$@"`, "naive"}, naive...)},
	} {
		for _, c := range []struct {
			name, env, event, outcome string
		}{
			{"canary", "BATON_CANARY=10%:20s", "canary aborted", "canary of generation 2 aborted at step 1: worker"},
			{"bake", "BATON_BAKE=20s", "swap reverted", "generation 2 reverted to 1: worker"},
		} {
			t.Run(w.name+"/"+c.name, func(t *testing.T) {
				env := append([]string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer", c.env}, w.env...)
				b, addr := serve(t, env, w.args...)
				stop := load(t, addr, 32)
				code, out := runBaton(t, "reload", "--pid", strconv.Itoa(b.PID()))
				if code != 1 || !strings.Contains(out, c.outcome) || !strings.Contains(out, "exited 1") {
					t.Fatalf("reload: exit %d %q, want 1 and %q ... exited 1", code, out, c.outcome)
				}
				b.Expect(c.event, "gen", 2)
				if by := answeredBy(t, addr, 100); by["1"] != 100 {
					t.Fatalf("after the %s: %v, want all 100 from generation 1", c.event, by)
				}
				r := stop()
				relayed := relayedSoFar(b)
				t.Logf("%d requests, %d failed %v (%d on reused connections), generations %v; %d connections relayed", r.Requests, r.Failures, r.ByKind, r.Reused, r.Generations, relayed)
				if r.Generations["2"] == 0 {
					t.Error("generation 2 never answered: the test did not put it under load")
				}
				t.Logf("on fresh connections: %v; errors %v", r.Fresh, r.Errors)
				if n := r.Fresh["reset"] + r.Fresh["refused"] + r.Fresh["timeout"]; n != 0 {
					t.Errorf("%d requests on fresh connections reset, refused or timed out, want 0", n)
				}
				if w.name == "careful" && r.Failures != 0 {
					t.Errorf("careful worker: %d failures, want none at all", r.Failures)
				}
				b.Signal(unix.SIGTERM)
				b.Wait()
			})
		}
	}
}
