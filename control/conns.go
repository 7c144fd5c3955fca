//go:build linux

package control

import (
	"container/list"
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Accept back-off: after a failed accept (EMFILE, ENFILE, ENOBUFS, ...)
// wait acceptBackoffMin, doubling up to acceptBackoffMax, as net/http's
// server does; a success starts over. Without it the loop spins at full
// CPU while the error lasts, since the pending connection stays queued.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// limiter caps the connections an endpoint holds at once. At the cap, a
// new connection is admitted by closing the oldest one that is still
// reading its request (or lingering after its answer): a probe that sends
// its request at once is answered whatever a flood of idle or slow clients
// does, and baton's descriptors and memory stay bounded.
type limiter struct {
	max        int
	maxWaiting int

	mu      sync.Mutex
	idle    *list.List // *held that may be evicted, oldest first
	busy    int        // held and not evictable (asking the loop, writing)
	waiting int        // set aside to wait long (wait), outside max
}

// held is one admitted connection.
type held struct {
	net.Conn
	l       *limiter
	elem    *list.Element // in l.idle; nil while busy or once released
	gone    bool          // released or evicted
	waiting bool          // set aside by wait
}

func newLimiter(max int) *limiter {
	return &limiter{max: max, idle: list.New()}
}

// wait sets busy h aside for a long wait (a reload's outcome): it stops
// counting against max, so that waiters never starve quick requests, and
// counts against maxWaiting instead; false when that is full.
func (h *held) wait() bool {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.gone || h.elem != nil || h.waiting || h.l.waiting >= h.l.maxWaiting {
		return false
	}
	h.l.busy--
	h.l.waiting++
	h.waiting = true
	return true
}

// admit takes c in, evicting the oldest idle connection if the endpoint
// is full. When every held connection is busy (which lasts at most one
// query to the loop each), c is refused: closed at once.
func (l *limiter) admit(c net.Conn) (*held, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.idle.Len()+l.busy >= l.max {
		front := l.idle.Front()
		if front == nil {
			_ = c.Close() // the client sees a reset and may retry
			return nil, false
		}
		old := front.Value.(*held)
		l.idle.Remove(front)
		old.elem, old.gone = nil, true
		_ = old.Conn.Close() // its reader fails and lets go
	}
	h := &held{Conn: c, l: l}
	h.elem = l.idle.PushBack(h)
	return h, true
}

// working marks h as not evictable (it has a request and is answering);
// false if it was evicted meanwhile.
func (h *held) working() bool {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.gone {
		return false
	}
	if h.elem != nil {
		h.l.idle.Remove(h.elem)
		h.elem = nil
		h.l.busy++
	}
	return true
}

// idleAgain makes h evictable again (lingering after the answer).
func (h *held) idleAgain() {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.gone || h.elem != nil {
		return
	}
	h.l.busy--
	h.elem = h.l.idle.PushBack(h)
}

// release closes h and frees its place.
func (h *held) release() {
	h.l.mu.Lock()
	if !h.gone {
		h.gone = true
		switch {
		case h.elem != nil:
			h.l.idle.Remove(h.elem)
			h.elem = nil
		case h.waiting:
			h.l.waiting--
		default:
			h.l.busy--
		}
	}
	h.l.mu.Unlock()
	_ = h.Conn.Close() // closing twice after an eviction only errs
}

// count is how many connections are held, waiters included.
func (l *limiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.idle.Len() + l.busy + l.waiting
}

// acceptLoop accepts on ln until it is closed, hands each admitted
// connection to serve in a goroutine of its own, and backs off after a
// failed accept. sleep is time.Sleep outside tests.
func acceptLoop(ln net.Listener, lim *limiter, serve func(*held), sleep func(time.Duration)) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = max(acceptBackoffMin, min(2*delay, acceptBackoffMax))
			sleep(delay)
			continue
		}
		delay = 0
		if hungUp(c) {
			// A client that closed before it asked (a connect flood):
			// nothing to answer, and no place or goroutine spent on it.
			_ = c.Close()
			continue
		}
		if h, ok := lim.admit(c); ok {
			go func() {
				defer h.release()
				serve(h)
			}()
			// Let it read before the next accept. Otherwise, under a flood
			// of connections that close at once, the accept loop (alone on
			// baton's one P, GOMAXPROCS=1) admits a burst larger than the
			// cap before any reader runs, and the burst evicts a probe
			// whose request was already waiting to be read.
			runtime.Gosched()
		}
	}
}

// hungUp reports whether c's peer has closed it without sending anything:
// a read would return end of file at once. It peeks, so it consumes
// nothing.
func hungUp(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	n, rerr := -1, error(nil)
	if err := raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // one look, never a wait
	}); err != nil {
		return false
	}
	return n == 0 && rerr == nil
}
