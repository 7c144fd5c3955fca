//go:build linux

package handoff

import (
	"bufio"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// steering opens one listener on a free loopback port in steer mode.
func steering(t *testing.T, network string) (*Steering, string) {
	t.Helper()
	ls, err := Open([]ListenSpec{{Network: network, Addr: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSteering(ls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, st := range s.listeners {
			for _, m := range st.members {
				unix.Close(m.fd)
			}
		}
	})
	return s, ls[0].Bound
}

// landsIn makes one connection (TCP) or sends one datagram (UDP) and
// returns the generation whose socket got it, after emptying that socket.
func landsIn(t *testing.T, s *Steering, network, addr string) int {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if network == "udp" {
		c.Write([]byte("x"))
	}
	// Wait for the kernel to queue it: a listening or UDP socket polls
	// readable once a connection or a datagram waits in it.
	ms := s.listeners[0].members
	fds := make([]unix.PollFd, len(ms))
	for i, m := range ms {
		fds[i] = unix.PollFd{Fd: int32(m.fd), Events: unix.POLLIN}
	}
	deadline := time.Now().Add(5 * time.Second)
	for left := time.Until(deadline); left > 0; left = time.Until(deadline) {
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			break
		}
		for i, m := range ms {
			if fds[i].Revents&unix.POLLIN == 0 {
				continue
			}
			if network == "udp" {
				unix.Recvfrom(m.fd, make([]byte, 16), 0)
			} else if nfd, _, err := unix.Accept(m.fd); err == nil {
				unix.Close(nfd)
			}
			return m.gen
		}
	}
	t.Fatal("nothing arrived in any generation's socket")
	return 0
}

// TestSteering: a new generation's socket gets nothing until it is
// steered to, then everything; releasing a generation (the last member of
// the kernel's array moves into its slot) keeps the steering on the
// current one, with one, two or three generations in the group.
func TestSteering(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			s, addr := steering(t, network)
			if g := landsIn(t, s, network, addr); g != 1 {
				t.Fatalf("generation 1 alone: landed in %d", g)
			}
			if _, err := s.Open(2); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				if g := landsIn(t, s, network, addr); g != 1 {
					t.Fatalf("generation 2 opened, not steered to: landed in %d", g)
				}
			}
			if err := s.Steer(2); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Open(3); err != nil { // [1 2 3]: 2 current, not last
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				if g := landsIn(t, s, network, addr); g != 2 {
					t.Fatalf("steered to 2 with 3 opened: landed in %d", g)
				}
			}
			s.Release(1) // 3 moves into slot 0: [3 2]
			for i := 0; i < 20; i++ {
				if g := landsIn(t, s, network, addr); g != 2 {
					t.Fatalf("1 released: landed in %d", g)
				}
			}
			s.Release(3) // a rolled-back generation: [2]
			if n := len(s.listeners[0].members); n != 1 {
				t.Fatalf("%d members left, want 1", n)
			}
			if _, err := s.Open(4); err != nil {
				t.Fatal(err)
			}
			if err := s.Steer(4); err != nil { // [2 4]: 4 current and last
				t.Fatal(err)
			}
			s.Release(2) // 4 moves into slot 0; the old program's index 1 is past the end
			for i := 0; i < 20; i++ {
				if g := landsIn(t, s, network, addr); g != 4 {
					t.Fatalf("2 released after steering to 4: landed in %d", g)
				}
			}
			s.Release(4) // the current generation is never released
			if g := landsIn(t, s, network, addr); g != 4 {
				t.Fatalf("after a refused release of the current: landed in %d", g)
			}
		})
	}
}

// TestSplit: a canary step's split gives the new generation its share of
// new TCP connections, chosen at random per connection, and keeps every
// UDP datagram on the old one; steering to one generation ends it.
func TestSplit(t *testing.T) {
	s, addr := steering(t, "tcp")
	if _, err := s.Open(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Split(1, 2, 10); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	got := 0
	for range n {
		if landsIn(t, s, "tcp", addr) == 2 {
			got++
		}
	}
	// 10 % of 1,000 has a standard deviation of 9.5 connections: 5 to 15 %
	// is more than 5 of them either side.
	if got < n*5/100 || got > n*15/100 {
		t.Fatalf("split 10%%: %d of %d connections in the new generation", got, n)
	}
	t.Logf("split 10%%: %d of %d connections in the new generation", got, n)
	if err := s.Steer(2); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if g := landsIn(t, s, "tcp", addr); g != 2 {
			t.Fatalf("steered to 2 after the split: landed in %d", g)
		}
	}

	u, uaddr := steering(t, "udp")
	if _, err := u.Open(2); err != nil {
		t.Fatal(err)
	}
	if err := u.Split(1, 2, 50); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if g := landsIn(t, u, "udp", uaddr); g != 1 {
			t.Fatalf("UDP during a split: landed in %d, want the old generation", g)
		}
	}
}

// TestRelay: connections queued on a generation's socket that nobody of
// it accepts any more are relayed, byte for byte and both ways, to the
// generation steered to now, instead of being reset at Release.
func TestRelay(t *testing.T) {
	s, addr := steering(t, "tcp")
	// Five clients queued on generation 1's socket, each with a request
	// written, nobody accepting.
	const n = 5
	var clients []net.Conn
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{byte('a' + i), '\n'}); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if _, err := s.Open(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Steer(2); err != nil {
		t.Fatal(err)
	}
	// Generation 2 answers each line with it in upper case, then closes.
	ln, err := net.FileListener(os.NewFile(uintptr(s.listeners[0].fdOf(2)), "gen2"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, strings.ToUpper(line))
			}()
		}
	}()
	if got := s.Relay(1, 5*time.Second, nil); got != n {
		t.Fatalf("Relay took %d connections, want %d", got, n)
	}
	s.Release(1)
	for i, c := range clients {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if want := string([]byte{byte('A' + i), '\n'}); err != nil || string(got) != want {
			t.Errorf("client %d: %q %v, want %q then the close passed on", i, got, err, want)
		}
	}
	if got := s.Relay(1, time.Second, nil); got != 0 {
		t.Errorf("Relay after Release took %d", got)
	}
	if got := Shared([]int{}).Relay(1, time.Second, nil); got != 0 {
		t.Errorf("shared mode relayed %d", got)
	}
}
