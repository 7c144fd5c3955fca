//go:build linux

package idle

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns both ends of a TCP connection over addr's family: the
// server's (accepted) and the client's, and the listener's port.
func pair(t *testing.T, network, addr string) (srv, cli *net.TCPConn, port uint16) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("%s %s: %v", network, addr, err)
	}
	defer ln.Close()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn), uint16(ln.Addr().(*net.TCPAddr).Port)
}

// server finds the accepted end of a pair the way the loop does: the
// connections of this process group on the listener's port.
func server(t *testing.T, port uint16) Conn {
	t.Helper()
	conns, err := Of([]int{unix.Getpgrp()}, map[uint16]bool{port: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 1 {
		t.Fatalf("want the one connection on port %d, got %+v", port, conns)
	}
	return conns[0]
}

// until looks at the server's end until ok holds, and fails after a
// deadline. The kernel tells of a connection's state only when asked
// (sock_diag has no notification), so it asks on every tick.
func until(t *testing.T, port uint16, ok func(Conn) bool) Conn {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		c := server(t, port)
		if ok(c) {
			return c
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the connection did not reach the state looked for within 5 s: %+v", c)
		}
	}
}

// laterJiffy waits until the kernel reports a jiffy gone by since the
// server's end last received data, so that what it sends next is stamped
// after the request (the app's behaviour: it takes a while to answer).
func laterJiffy(t *testing.T, port uint16) {
	t.Helper()
	until(t, port, func(c Conn) bool { return c.LastRecv > 0 })
}

func roundTrip(t *testing.T, srv, cli *net.TCPConn, port uint16) {
	t.Helper()
	if _, err := cli.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 18)
	if _, err := io.ReadFull(srv, buf); err != nil {
		t.Fatal(err)
	}
	laterJiffy(t, port)
	if _, err := srv.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cli, make([]byte, 19)); err != nil {
		t.Fatal(err)
	}
}

func TestIdle(t *testing.T) {
	for _, fam := range [][2]string{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(fam[0], func(t *testing.T) {
			t.Run("nothing received", func(t *testing.T) {
				_, _, port := pair(t, fam[0], fam[1])
				if c := server(t, port); c.Idle() || c.Received != 0 {
					t.Fatalf("a connection that received nothing yet is not idle: %+v", c)
				}
			})
			t.Run("unread", func(t *testing.T) {
				_, cli, port := pair(t, fam[0], fam[1])
				cli.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				c := until(t, port, func(c Conn) bool { return c.Unread > 0 })
				if c.Unread != 18 || c.Idle() {
					t.Fatalf("18 bytes unread: not idle, got %+v", c)
				}
			})
			t.Run("answering", func(t *testing.T) {
				srv, cli, port := pair(t, fam[0], fam[1])
				roundTrip(t, srv, cli, port)
				cli.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				io.ReadFull(srv, make([]byte, 18))
				// Read, not answered yet: its last byte is a request.
				c := until(t, port, func(c Conn) bool { return c.Received == 36 })
				if c.Unread != 0 || c.Idle() {
					t.Fatalf("a request read and not answered: not idle, got %+v", c)
				}
			})
			t.Run("answered", func(t *testing.T) {
				srv, cli, port := pair(t, fam[0], fam[1])
				roundTrip(t, srv, cli, port)
				c := until(t, port, func(c Conn) bool { return c.Unsent == 0 })
				if !c.Idle() || c.Received != 18 || c.Acked != 19 {
					t.Fatalf("request read, response sent and acknowledged: idle, got %+v", c)
				}
			})
			t.Run("unsent", func(t *testing.T) {
				srv, cli, port := pair(t, fam[0], fam[1])
				cli.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				io.ReadFull(srv, make([]byte, 18))
				laterJiffy(t, port) // the app's behaviour, as in roundTrip
				// More than the client's buffers take: the client reads none.
				big := bytes.Repeat([]byte("x"), 64<<20)
				srv.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				if n, err := srv.Write(big); n == 0 {
					t.Fatalf("nothing written: %v", err)
				}
				c := server(t, port)
				if c.Unsent == 0 || c.Idle() {
					t.Fatalf("a response not all sent: not idle, got %+v", c)
				}
			})
		})
	}
}

// TestTracker: a keep-alive client that sends its next request at once
// (the connection never idle at a poll) is seen idle once a response
// goes out after a poll that found its request read; one still
// answering is not.
func TestTracker(t *testing.T) {
	srv, cli, port := pair(t, "tcp4", "127.0.0.1:0")
	roundTrip(t, srv, cli, port)
	cli.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	io.ReadFull(srv, make([]byte, 18))
	var tr Tracker
	if left := tr.Observe([]Conn{until(t, port, func(c Conn) bool { return c.Received == 36 && c.Unsent == 0 })}); left != 1 {
		t.Fatalf("answering: want 1 left, got %d", left)
	}
	if left := tr.Observe([]Conn{server(t, port)}); left != 1 {
		t.Fatalf("still answering: want 1 left, got %d", left)
	}
	// The response, then at once the next request, read by the app.
	srv.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	io.ReadFull(cli, make([]byte, 19))
	cli.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	io.ReadFull(srv, make([]byte, 18))
	c := until(t, port, func(c Conn) bool { return c.Received == 54 && c.Acked == 38 })
	if left := tr.Observe([]Conn{c}); left != 0 {
		t.Fatalf("a response went out between two polls: want 0 left, got %d (%+v)", left, c)
	}
	if left := tr.Observe(nil); left != 0 {
		t.Fatalf("gone: want 0 left, got %d", left)
	}
}

// TestObserve: which pairs of polls show that a connection was idle in
// between.
func TestObserve(t *testing.T) {
	ms := time.Millisecond
	// waiting: a request unread; answering: read, no response yet;
	// sending: a response not yet acknowledged.
	waiting := Conn{Inode: 1, Received: 100, Acked: 50, Unread: 100, LastRecv: 0, LastSent: 4 * ms}
	answering := Conn{Inode: 1, Received: 100, Acked: 50, LastRecv: 0, LastSent: 4 * ms}
	sending := Conn{Inode: 1, Received: 100, Acked: 50, Unsent: 50, LastRecv: 4 * ms, LastSent: 0}
	turn := func(c Conn) Conn { c.Received += 100; c.Acked += 50; return c } // a response acknowledged, the next request in
	acked := func(c Conn) Conn { c.Acked += 50; c.Unsent = 0; return c }
	for _, tc := range []struct {
		name     string
		polls    []Conn
		wantLeft int
	}{
		{"busy keep-alive: a request waiting at both polls, a turn between", []Conn{waiting, turn(waiting)}, 0},
		{"busy keep-alive: a response in flight at both polls, a turn between", []Conn{sending, turn(sending)}, 0},
		{"answering at both polls", []Conn{answering, answering}, 1},
		{"waiting at both polls, nothing sent", []Conn{waiting, waiting}, 1},
		{"answered between polls, quiet since", []Conn{answering, {Inode: 1, Received: 100, Acked: 100, LastRecv: 8 * ms, LastSent: 8 * ms, LastAckRecv: 8 * ms}}, 0},
		{"part of a big response acknowledged, more to send", []Conn{sending, func() Conn { c := sending; c.Acked += 10; return c }()}, 1},
		{"response acknowledged, nothing new", []Conn{sending, acked(sending)}, 0},
		{"received nothing: not idle", []Conn{{Inode: 1}, {Inode: 1, Acked: 10}}, 1},
	} {
		var tr Tracker
		left := 0
		for _, c := range tc.polls {
			left = tr.Observe([]Conn{c})
		}
		if left != tc.wantLeft {
			t.Errorf("%s: %d left, want %d", tc.name, left, tc.wantLeft)
		}
	}
}
