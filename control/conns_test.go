//go:build linux

package control

import (
	"net"
	"slices"
	"syscall"
	"testing"
	"time"
)

// closed reports whether c's peer end sees it closed.
func closed(t *testing.T, peer net.Conn) bool {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(time.Second))
	_, err := peer.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestLimiterEvictsOldestIdle: at the cap a new connection is admitted by
// closing the oldest idle one; busy ones are never evicted; with every
// place busy the new one is refused.
func TestLimiterEvictsOldestIdle(t *testing.T) {
	l := newLimiter(3)
	var hs []*held
	var peers []net.Conn
	for i := 0; i < 3; i++ {
		a, b := net.Pipe()
		h, ok := l.admit(a)
		if !ok {
			t.Fatalf("connection %d refused under the cap", i)
		}
		hs, peers = append(hs, h), append(peers, b)
	}
	if !hs[0].working() { // 0 is busy now: 1 is the oldest idle
		t.Fatal("a held connection could not be marked busy")
	}
	a, b := net.Pipe()
	h4, ok := l.admit(a)
	if !ok {
		t.Fatal("a new connection was refused while idle ones could give way")
	}
	if !closed(t, peers[1]) {
		t.Fatal("the oldest idle connection was not closed")
	}
	if hs[1].working() {
		t.Fatal("an evicted connection could still be marked busy")
	}
	if l.count() != 3 {
		t.Fatalf("%d held, want 3", l.count())
	}
	hs[2].working()
	h4.working()
	c, d := net.Pipe()
	if _, ok := l.admit(c); ok {
		t.Fatal("admitted with every place busy")
	}
	if !closed(t, d) {
		t.Fatal("a refused connection was left open")
	}
	hs[0].release()
	if _, ok := l.admit(c); !ok || l.count() != 3 {
		t.Fatalf("after a release: admitted %v, %d held", ok, l.count())
	}
	_ = b
}

// errListener fails every Accept with err, n times, then reports closed.
type errListener struct {
	net.Listener
	err error
	n   int
}

func (e *errListener) Accept() (net.Conn, error) {
	if e.n == 0 {
		return nil, net.ErrClosed
	}
	e.n--
	return nil, e.err
}

// TestAcceptBacksOff: a failing accept (EMFILE) is retried after a pause
// that doubles from 5 ms up to 1 s, instead of spinning.
func TestAcceptBacksOff(t *testing.T) {
	var slept []time.Duration
	ln := &errListener{err: &net.OpError{Op: "accept", Err: syscall.EMFILE}, n: 10}
	acceptLoop(ln, newLimiter(1), func(*held) {}, func(d time.Duration) { slept = append(slept, d) })
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(slept, want) {
		t.Fatalf("slept %v, want %v", slept, want)
	}
}

// TestLimiterWaitersApart: a connection set aside to wait (a reload's
// outcome) frees its place under the cap for quick requests, counts
// against a cap of its own, and gives that back when released.
func TestLimiterWaitersApart(t *testing.T) {
	l := newLimiter(1)
	l.maxWaiting = 1
	a, _ := net.Pipe()
	h, _ := l.admit(a)
	if !h.working() || !h.wait() {
		t.Fatal("a busy connection could not be set aside")
	}
	b, bPeer := net.Pipe()
	h2, ok := l.admit(b)
	if !ok {
		t.Fatal("a waiter kept a new connection out")
	}
	go h2.Write([]byte("x"))
	if _, err := bPeer.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the new connection was closed: %v", err)
	}
	if !h2.working() || h2.wait() {
		t.Fatal("a second waiter was set aside past maxWaiting")
	}
	h.release()
	h2.release()
	if l.count() != 0 {
		t.Fatalf("%d held after every release, want 0", l.count())
	}
}
