//go:build linux

package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// endingWorker is a check whose output the loop may end (main's
// checkProc): it records the grace it was given.
type endingWorker struct {
	*scriptedWorker
	graces chan time.Duration
}

func (w endingWorker) EndOutput(grace time.Duration) { w.graces <- grace }

// TestReloadCheckLeftovers: a check is decided by its exit status, its
// output ended within checkOutputGrace of its exit; what it left in its
// process group gets SIGTERM once the outcome is decided and SIGKILL after
// the stop timeout, unless a reap found the group empty meanwhile; a check
// whose group is empty at its exit leaves nothing to signal.
func TestReloadCheckLeftovers(t *testing.T) {
	stop := baseOpts().StopTimeout
	type run struct {
		w     endingWorker
		lines chan string
	}
	checks := make(chan run, 4)
	r := newRig(t, baseOpts(), func(r *rig) {
		r.s.Check = func(gen int) (Worker, <-chan string, error) {
			r.nextPID++
			c := run{endingWorker{&scriptedWorker{pid: r.nextPID}, make(chan time.Duration, 1)}, make(chan string, 1)}
			checks <- c
			return c.w, c.lines, nil
		}
	})
	w1 := r.worker()
	r.ready(w1)
	r.expect("generation ready")
	called := func(call string) bool { return slices.Contains(r.calls(), call) }

	// Exits with a child in its group: the output is ended at the exit.
	out := r.reloadAsync()
	c := <-checks
	r.exit(c.w.pid, 1)
	select {
	case g := <-c.w.graces:
		if g != checkOutputGrace {
			t.Fatalf("output ended within %v, want %v", g, checkOutputGrace)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the check's output was not ended at its exit")
	}
	c.lines <- "error rate 7%"
	if o := r.outcome(out); o.OK || !strings.Contains(o.Reason, "exited 1: error rate 7%") {
		t.Fatalf("outcome %+v", o)
	}
	r.expect("reload check left processes")
	r.barrier()
	term, kill := fmt.Sprintf("-%d SIGTERM", c.w.pid), fmt.Sprintf("-%d SIGKILL", c.w.pid)
	if !called(term) || called(kill) {
		t.Fatalf("calls %v, want %s and no SIGKILL yet", r.calls(), term)
	}
	r.fireArmedFor(evCheckKill, stop)
	r.expect("reload check leftovers killed")
	r.barrier()
	if !called(kill) {
		t.Fatalf("calls %v, want %s after the stop timeout", r.calls(), kill)
	}

	// Exits alone: nothing to signal.
	out = r.reloadAsync()
	c = <-checks
	r.groupGone(c.w.pid)
	r.exit(c.w.pid, 3)
	c.lines <- "bad config"
	if o := r.outcome(out); o.OK || !strings.Contains(o.Reason, "exited 3: bad config") {
		t.Fatalf("outcome %+v", o)
	}
	r.barrier()
	if called(fmt.Sprintf("-%d SIGTERM", c.w.pid)) {
		t.Fatalf("calls %v: a check alone in its group was signalled after its exit", r.calls())
	}

	// Leaves a child that exits after the SIGTERM: no SIGKILL then.
	out = r.reloadAsync()
	c = <-checks
	r.exit(c.w.pid, 2)
	c.lines <- "no"
	r.outcome(out)
	r.expect("reload check left processes")
	r.groupGone(c.w.pid)
	r.exit(c.w.pid+1000, 0) // its child, reaped as an orphan
	r.expect("orphan reaped")
	r.fireArmedFor(evCheckKill, stop)
	r.barrier()
	if called(fmt.Sprintf("-%d SIGKILL", c.w.pid)) {
		t.Fatalf("calls %v: an emptied group got SIGKILL", r.calls())
	}
}
