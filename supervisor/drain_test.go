//go:build linux

package supervisor

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/baton-init/baton/handoff/idle"
	"golang.org/x/sys/unix"
)

// idleFake is BATON_DRAIN=idle's seams: the connections each look finds,
// the process groups it was asked about, and the clock.
type idleFake struct {
	mu    sync.Mutex
	conns []idle.Conn
	pgids [][]int
	now   time.Time
}

func (f *idleFake) set(c ...idle.Conn) { f.mu.Lock(); f.conns = c; f.mu.Unlock() }
func (f *idleFake) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func drainRig(t *testing.T) (*rig, *idleFake) {
	o := baseOpts()
	o.DrainIdle = 10 * time.Second
	f := &idleFake{now: time.Unix(1e9, 0)}
	r, _ := steerRigWith(t, o, func(r *rig) {
		r.s.Now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
		r.s.IdleConns = func(pgids []int) ([]idle.Conn, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.pgids = append(f.pgids, pgids)
			return slices.Clone(f.conns), nil
		}
	})
	return r, f
}

var (
	answering = idle.Conn{Inode: 7, Received: 100, LastRecv: time.Millisecond, LastSent: time.Second}
	answered  = idle.Conn{Inode: 7, Received: 100, Acked: 50, LastRecv: time.Second, LastSent: time.Millisecond}
)

// TestSteerIdleDrain: with BATON_DRAIN=idle, a generation whose queue is
// empty gets the stop signal only once its connection was seen idle; its
// workers' process groups are what is looked at.
func TestSteerIdleDrain(t *testing.T) {
	r, f := drainRig(t)
	f.set(answering)
	w1, _ := r.swapOnce()
	r.fireArmedFor(evHandover, steerTestSettle) // the queue is empty
	r.awaitArmed(evIdlePoll, idlePoll)          // a look found a connection answering
	if len(w1.got()) != 0 {
		t.Fatalf("signalled with a request in flight: %v", w1.got())
	}
	f.set(answered)
	r.fireArmedFor(evIdlePoll, idlePoll)
	r.expect("old generation idle")
	r.expect("worker retiring")
	r.barrier()
	if got := w1.got(); len(got) != 1 || got[0] != unix.SIGTERM {
		t.Fatalf("old worker got %v, want SIGTERM", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pgids) != 2 || !slices.Equal(f.pgids[0], []int{w1.pid}) {
		t.Fatalf("looked at groups %v, want [%d] twice", f.pgids, w1.pid)
	}
}

// TestSteerIdleDrainBound: a connection never seen idle holds the stop
// signal back for the bound, no longer.
func TestSteerIdleDrainBound(t *testing.T) {
	r, f := drainRig(t)
	f.set(answering)
	w1, _ := r.swapOnce()
	r.fireArmedFor(evHandover, steerTestSettle)
	r.awaitArmed(evIdlePoll, idlePoll)
	f.advance(9 * time.Second)
	r.fireArmedFor(evIdlePoll, idlePoll)
	r.awaitArmed(evIdlePoll, idlePoll) // within the bound: looked at again
	if len(w1.got()) != 0 {
		t.Fatalf("signalled before the bound: %v", w1.got())
	}
	f.advance(time.Second)
	r.fireArmedFor(evIdlePoll, idlePoll)
	r.expect("old generation not idle in time")
	r.expect("worker retiring")
}
