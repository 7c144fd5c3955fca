package demo

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// swapRun is one reload-under-load run: generations of role workers on one
// shared socket, each started, waited for (READY=1) and only then followed
// by SIGTERM to its predecessor, as baton does, while Load runs.
type swapRun struct {
	role    string
	workers int           // per generation
	swaps   int           // generations after the first
	pace    time.Duration // load time between swaps
	env     []string
}

type swapOutcome struct {
	res   *Result
	codes []int    // exit codes of every worker, in start order
	logs  []string // stderr of every worker, in start order
}

func (s swapRun) run(t *testing.T) swapOutcome {
	t.Helper()
	fd, ln, addr := sharedSocket(t)
	var all []*proc
	startGen := func(gen int) []*proc {
		var ps []*proc
		for w := range s.workers {
			env := append([]string{"BATON_GENERATION=" + strconv.Itoa(gen), "BATON_WORKER=" + strconv.Itoa(w)}, s.env...)
			ps = append(ps, startRole(t, s.role, fmt.Sprintf("%s gen %d worker %d", s.role, gen, w), ln, false, env...))
		}
		for _, p := range ps {
			p.waitReady(t)
		}
		all = append(all, ps...)
		return ps
	}

	cur := startGen(1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	results := make(chan *Result, 1)
	go func() {
		results <- Load(ctx, LoadConfig{Addr: addr, Clients: 16, KeepAlive: 0.5, Timeout: 10 * time.Second})
	}()

	// The pauses below pace the load (how long each generation serves);
	// they are not waits for an event: every event (READY=1, exit) is
	// waited for explicitly.
	<-time.After(s.pace)
	for gen := 2; gen <= s.swaps+1; gen++ {
		next := startGen(gen)
		for _, p := range cur {
			p.signal(t, syscall.SIGTERM)
		}
		cur = next
		<-time.After(s.pace)
	}
	stop()
	res := <-results
	for _, p := range cur {
		p.signal(t, syscall.SIGTERM)
	}
	var o swapOutcome
	for _, p := range all {
		o.codes = append(o.codes, p.wait(t))
		o.logs = append(o.logs, p.stderr.String())
	}
	assertNonblock(t, fd)
	o.res = res
	return o
}

func (o swapOutcome) String() string {
	r := o.res
	gens := make([]string, 0, len(r.Generations))
	for g := range r.Generations {
		gens = append(gens, g)
	}
	slices.SortFunc(gens, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	s := fmt.Sprintf("%d requests in %v, %d failed %v (%d on reused keep-alive connections, %d on fresh ones); generations:",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.Failures, r.ByKind, r.Reused, r.Failures-r.Reused)
	for _, g := range gens {
		s += fmt.Sprintf(" %s=%d", g, r.Generations[g])
	}
	for _, k := range Kinds {
		if msg := r.Errors[k]; msg != "" {
			s += fmt.Sprintf("\n  %s: e.g. %s", k, msg)
		}
	}
	return s
}

// The claim baton rests on: with one shared socket and Hello's drain, a
// generation swap under load (16 clients, half keep-alive, no retries) loses
// no request, and every generation answers.
func TestDrainUnderLoadLosesNothing(t *testing.T) {
	checkLossless(t, swapRun{role: "hello", workers: 2, swaps: 10, pace: 100 * time.Millisecond})
}

// checkLossless runs s and checks that no request failed, every
// generation answered, the load really ran and every worker exited 0.
func checkLossless(t *testing.T, s swapRun) {
	t.Helper()
	o := s.run(t)
	t.Log(o)
	if o.res.Failures != 0 {
		t.Errorf("%d requests failed: %v", o.res.Failures, o.res.ByKind)
	}
	for gen := 1; gen <= s.swaps+1; gen++ {
		if o.res.Generations[strconv.Itoa(gen)] == 0 {
			t.Errorf("generation %d never answered", gen)
		}
	}
	if o.res.Requests < 100 {
		t.Errorf("only %d requests: the load did not run", o.res.Requests)
	}
	for i, c := range o.codes {
		if c != 0 {
			t.Errorf("worker %d exited %d, want 0", i, c)
		}
	}
}

// The control: the same scenario with workers that call
// http.Server.Shutdown at once on SIGTERM. It proves that the test above can
// fail, and measures by how much. The losses come from races (a request
// arriving in the microseconds around Shutdown), so the count varies; over
// 10 swaps of 2 workers it was 29-63 lost requests in 9 runs and 55-73 in 5
// runs under -race, never near 0, so asserting "at least one" is not flaky.
// About 3/4 of them fail on a reused keep-alive connection (the idle-close
// race) and 1/4 on a fresh one (a request read after Shutdown began, then
// dropped unanswered); the workers' own audit (see connAudit) confirms both,
// server side. Its counts are lower bounds: Shutdown may return, and the
// worker exit, before the last connections' ConnState hooks have run.
func TestNaiveShutdownControl(t *testing.T) {
	s := swapRun{role: "naive", workers: 2, swaps: 10, pace: 100 * time.Millisecond}
	o := s.run(t)
	// The server's side of the story, from the naive workers' own audit.
	var dropped, idleClosed int
	for _, l := range o.logs {
		var d, i int
		at := strings.Index(l, "naive: dropped=")
		if at < 0 {
			continue
		}
		if _, err := fmt.Sscanf(l[at:], "naive: dropped=%d idle-closed=%d", &d, &i); err == nil {
			dropped += d
			idleClosed += i
		}
	}
	t.Logf("naive Shutdown, %d swaps: %v\n  server side: %d requests read and never answered, %d idle keep-alive connections closed",
		s.swaps, o, dropped, idleClosed)
	if o.res.Failures == 0 {
		t.Error("the naive worker lost nothing: the control did not show the race")
	}
}
