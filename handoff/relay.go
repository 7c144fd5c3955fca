//go:build linux

package handoff

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
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
// listener's address, where the kernel gives it to the generation steered
// to now. The worker then sees baton's loopback address as the peer.

// maxRelays bounds the connections relayed at once, over every listener
// (the kernel's own bound on an accept queue is net.core.somaxconn, 4096
// by default). Past it, a queued connection is closed, as the kernel would
// have reset it.
const maxRelays = 1024

// relayDial bounds the connect to the listener's address: on loopback it
// takes microseconds, unless the backlog of the generation steered to is
// full.
const relayDial = 2 * time.Second

// relaying counts the relays in progress.
var relaying atomic.Int32

// Relay accepts what is still queued on gen's TCP sockets and relays each
// connection to its listener's address; it returns how many it took. The
// loop calls it just before Release, once no process of gen is left and
// another generation is steered to. A relay ends when either side closes,
// or after idle without a byte either way.
func (s *Steering) Relay(gen int, idle time.Duration) int {
	n := 0
	for _, st := range s.listeners {
		fd := st.fdOf(gen)
		if fd < 0 || gen == st.current || !strings.HasPrefix(st.spec.Network, "tcp") {
			continue
		}
		// Nobody else holds it any more: accept without ever blocking.
		if err := unix.SetNonblock(fd, true); err != nil {
			continue
		}
		network, addr := st.spec.Network, dialAddr(st.spec.Addr)
		for {
			cfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			if err != nil {
				break // EAGAIN: the queue is empty
			}
			if relaying.Load() >= maxRelays {
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
			go relay(tc, network, addr, idle)
		}
	}
	return n
}

// dialAddr is where to reach a listener bound to addr: its own address,
// or loopback for a wildcard one.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// relay copies both ways between a rescued connection and a new one to
// the listener, passing each half-close on.
func relay(client *net.TCPConn, network, addr string, idle time.Duration) {
	defer relaying.Add(-1)
	defer client.Close()
	c, err := net.DialTimeout(network, addr, relayDial)
	if err != nil {
		return // the client sees the connection closed, as with no relay
	}
	defer c.Close()
	up, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	var last atomic.Int64 // when a byte last went either way
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		pipe(up, client, idle, &last)
		close(done)
	}()
	pipe(client, up, idle, &last)
	<-done
}

// pipe copies src to dst until src ends, or until no byte went either
// way for idle (a silent client waiting for a slow answer is not idle),
// then passes the end on as a half-close.
func pipe(dst, src *net.TCPConn, idle time.Duration, last *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
			last.Store(time.Now().UnixNano())
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other way was busy meanwhile
			}
			break
		}
	}
	_ = dst.CloseWrite()
	_ = src.CloseRead()
}
