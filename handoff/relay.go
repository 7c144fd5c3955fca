//go:build linux

package handoff

import (
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Relaying, in steer mode, what a generation's workers left behind.
//
// A connection the kernel has queued on a generation's socket can be
// accepted only from that socket. When every worker of the generation is
// gone before its queue is empty (a new worker that crashed or shut down
// unasked during a canary or a bake, or an old one that stopped accepting
// early), closing the socket would reset those connections, and the kernel
// moves them to another socket of the group only where
// net.ipv4.tcp_migrate_req=1. Nobody has read them yet, so nothing is lost
// if baton accepts them itself and relays each, byte for byte, to the
// address the client connected to (the accepted connection's own local
// address, which is certain to reach the group whatever the listener was
// bound to), where the kernel gives it to the generation steered to now.
// The worker then sees baton's address as the peer.
//
// A relay holds no user-space buffer: each direction splices from one
// socket into a pipe of its own and from the pipe into the other socket
// (splice(2)), waiting for readiness in Go's netpoller. What it costs is
// two goroutines, their small stacks, and kernel pipe pages only while
// bytes are in flight.

// MaxRelays bounds the connections relayed at once, over every listener
// (the kernel's own bound on an accept queue is net.core.somaxconn, 4096
// by default). Past it, a queued connection is closed, as the kernel would
// have reset it.
const MaxRelays = 1024

// RelayDial bounds the connect to the listener's address: on loopback it
// takes microseconds, unless the backlog of the generation steered to is
// full.
const RelayDial = 2 * time.Second

// spliceChunk is the most one splice moves: a pipe's default capacity.
const spliceChunk = 64 << 10

// relaying counts the relays in progress.
var relaying atomic.Int32

// RelayEvent is what a relay tells the loop, from its own goroutine:
// first how its dial went (Err set if it failed), then, if it connected,
// that the answer has ended (Answered: the worker's side closed and that
// was passed on to the client), and last that the relay is over (Ended).
type RelayEvent struct {
	Gen             int
	Answered, Ended bool
	Err             error // the dial's error
}

// Relay accepts what is still queued on gen's TCP sockets and relays each
// connection to the address its client connected to; it returns how many
// it took. report, called from each relay's goroutine, gets that relay's
// RelayEvents (nil: none). A relay ends when both sides have closed, or
// once no byte went either way for idle (see relayConn.alive).
func (s *Steering) Relay(gen int, idle time.Duration, report func(RelayEvent)) int {
	if report == nil {
		report = func(RelayEvent) {}
	}
	n := 0
	for _, st := range s.listeners {
		fd := st.fdOf(gen)
		if fd < 0 || gen == st.current || !strings.HasPrefix(st.spec.Network, "tcp") {
			continue
		}
		// Accept without ever blocking. Every listener is created
		// non-blocking; this changes nothing a worker relies on.
		if err := unix.SetNonblock(fd, true); err != nil {
			continue
		}
		for {
			cfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			if err != nil {
				break // EAGAIN: the queue is empty
			}
			to := localAddr(cfd)
			if relaying.Load() >= MaxRelays || to == nil {
				_ = unix.Close(cfd)
				continue
			}
			f := os.NewFile(uintptr(cfd), "relayed")
			c, err := net.FileConn(f) // a dup, non-blocking, in the poller
			_ = f.Close()
			tc, ok := c.(*net.TCPConn)
			if err != nil || !ok {
				if c != nil {
					_ = c.Close()
				}
				continue
			}
			relaying.Add(1)
			n++
			go relay(tc, to, idle, gen, report)
		}
	}
	return n
}

// localAddr is the address the client of accepted connection fd connected
// to: a dual-stack listener's IPv4 client gets its IPv4 address back, so
// the dial does not depend on the family the listener was bound with (a
// wildcard [::] listener on a loopback without ::1, for one).
func localAddr(fd int) *net.TCPAddr {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		if ip4 := a.IP.To4(); ip4 != nil {
			a.IP = ip4 // ::ffff:a.b.c.d: dial a.b.c.d itself
		} else if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}

// relay dials to, then copies both ways between the rescued connection
// and the new one, passing each half-close on.
func relay(client *net.TCPConn, to *net.TCPAddr, idle time.Duration, gen int, report func(RelayEvent)) {
	defer relaying.Add(-1)
	defer report(RelayEvent{Gen: gen, Ended: true})
	defer client.Close()
	d := net.Dialer{Timeout: RelayDial}
	c, err := d.Dial("tcp", to.String())
	if err != nil {
		report(RelayEvent{Gen: gen, Err: err})
		return // the client sees the connection closed, as with no relay
	}
	defer c.Close()
	up := c.(*net.TCPConn)
	report(RelayEvent{Gen: gen})
	r := &relayConn{idle: idle, socks: [2]*net.TCPConn{client, up}}
	r.alive() // the counters as they start
	done := make(chan struct{})
	go func() {
		r.pipe(up, client)
		close(done)
	}()
	r.pipe(client, up)
	report(RelayEvent{Gen: gen, Answered: true})
	<-done
}

// relayConn is one relay's shared progress: when a byte last went either
// way.
type relayConn struct {
	idle  time.Duration
	socks [2]*net.TCPConn
	mu    sync.Mutex
	last  time.Time
	seen  uint64 // the sum of both sockets' byte counters at last
}

// deadline is when the relay is next looked at for progress.
func (r *relayConn) deadline() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last.Add(r.idle)
}

// alive tells whether a byte went either way within idle. It asks the
// kernel (TCP_INFO's bytes received and bytes acknowledged, on both
// sockets) rather than counting what the relay itself moved: a slow reader
// empties the socket's send buffer a little at a time, but the socket
// wakes a writer only once a third of it is free, which at a few KiB/s
// can take longer than idle. The counters move with every segment.
func (r *relayConn) alive() bool {
	var sum uint64
	for _, c := range r.socks {
		rc, err := c.SyscallConn()
		if err != nil {
			continue
		}
		_ = rc.Control(func(fd uintptr) {
			if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				sum += ti.Bytes_received + ti.Bytes_acked
			}
		})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if sum != r.seen {
		r.seen, r.last = sum, time.Now()
	}
	return time.Since(r.last) < r.idle
}

// pipe moves src to dst through a pipe until src ends, the relay is idle
// or either socket fails, then passes the end on as a half-close.
func (r *relayConn) pipe(dst, src *net.TCPConn) {
	defer func() {
		_ = dst.CloseWrite()
		_ = src.CloseRead()
	}()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	in, err := src.SyscallConn()
	if err != nil {
		return
	}
	out, err := dst.SyscallConn()
	if err != nil {
		return
	}
	for {
		// src -> pipe. The pipe is empty here, so EAGAIN is src's.
		var n int64
		if !r.splice(src, in, true, func(fd int) (err error) {
			n, err = unix.Splice(fd, nil, p[1], nil, spliceChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return err
		}) || n == 0 {
			return // failed, idle, or src's end
		}
		// pipe -> dst, all of it. The pipe has n bytes, so EAGAIN is dst's.
		for n > 0 {
			var m int64
			if !r.splice(dst, out, false, func(fd int) (err error) {
				m, err = unix.Splice(p[0], nil, fd, nil, int(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				return err
			}) {
				return
			}
			n -= m
		}
	}
}

// splice runs op on c's descriptor once it is ready (read: readable, else
// writable), waiting in the netpoller until the relay's next deadline and
// past it while alive. It returns false once op failed or the relay is
// idle.
func (r *relayConn) splice(c *net.TCPConn, rc syscall.RawConn, read bool, op func(fd int) error) bool {
	for {
		var opErr error
		f := func(fd uintptr) bool {
			opErr = op(int(fd))
			for opErr == unix.EINTR {
				opErr = op(int(fd))
			}
			return opErr != unix.EAGAIN
		}
		var err error
		if read {
			_ = c.SetReadDeadline(r.deadline())
			err = rc.Read(f)
		} else {
			_ = c.SetWriteDeadline(r.deadline())
			err = rc.Write(f)
		}
		if err == nil {
			return opErr == nil
		}
		if !os.IsTimeout(err) || !r.alive() {
			return false
		}
	}
}
