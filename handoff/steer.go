//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/baton-init/baton/internal/clip"
	"golang.org/x/sys/unix"
)

// Sockets gives each generation its listening descriptors, fds 3, 4, ...
// in BATON_LISTEN order, and decides which generation the kernel gives new
// connections to. The loop calls it; it owns the descriptors.
type Sockets interface {
	// Open returns gen's descriptors, opening what gen needs of its own.
	// Nothing is steered to new sockets until Steer.
	Open(gen int) ([]int, error)
	// Steer sends every new connection (TCP) or datagram (UDP) to gen.
	Steer(gen int) error
	// Split sends percent of new TCP connections to gen to, the rest (and
	// every UDP datagram) to gen from (a canary step).
	Split(from, to, percent int) error
	// Pending counts what waits in gen's own sockets, not yet taken by
	// its workers: accepted connections (TCP) or datagrams (UDP).
	Pending(gen int) int
	// Relay takes the connections still queued in gen's own sockets, once
	// no process of gen is left to accept them, and passes each on to the
	// generation steered to now (relay.go); it returns how many. report
	// gets each relay's RelayEvents, from the relay's own goroutine.
	Relay(gen int, idle time.Duration, report func(RelayEvent)) int
	// Release takes gen's own sockets out of the kernel's group and closes
	// them. Call it once no process of gen can hold them any more, even
	// for a generation never steered to (rolled back): a UDP socket leaves
	// the group only at its last close, and a TCP listener taken out by
	// shutdown comes back, at the end, at its holder's next listen(), and
	// either way the group would no longer be what Steering mirrors.
	// Connections still queued would be reset: Pending must be 0 by then,
	// or Relay have taken the rest.
	Release(gen int)
	// CloseAll closes every generation's own sockets, the current one's
	// too: at exit, once no process is left to accept what they queue.
	// What is still queued is reset now rather than at baton's exit (a
	// relay into it ends).
	CloseAll()
}

// Shared is BATON_HANDOFF=shared: one socket per listener, the same open
// file description for every generation (the kernel's accept queue is
// shared, so nothing is lost between generations whose workers drain
// carefully).
type Shared []int

// Open returns the one set of descriptors.
func (s Shared) Open(int) ([]int, error) { return s, nil }

// Steer does nothing: every generation's workers accept from one queue.
func (Shared) Steer(int) error { return nil }

// Split is steer mode's alone.
func (Shared) Split(int, int, int) error {
	return errors.New("a canary needs BATON_HANDOFF=steer")
}

// Pending is 0: no generation has a queue of its own.
func (Shared) Pending(int) int { return 0 }

// Relay has nothing to take: the one queue is every generation's.
func (Shared) Relay(int, time.Duration, func(RelayEvent)) int { return 0 }

// CloseAll does nothing: the sockets live as long as baton, and no relay
// waits on them.
func (Shared) CloseAll() {}

// Release does nothing: the sockets live as long as baton.
func (Shared) Release(int) {}

// Steering is BATON_HANDOFF=steer. Every generation gets a socket of its
// own for each TCP and UDP listener, bound with SO_REUSEPORT to the same
// address (by the same user, so the kernel puts them in one reuseport
// group), and baton attaches to the group an unprivileged classic BPF
// program of one instruction, `ret #k`, which picks the group member of
// index k for every new connection (TCP) or datagram (UDP). A new
// generation's sockets get nothing until it is steered to; the old one's
// queue then empties while its workers still accept, and only then are
// they asked to stop, so a worker that drains badly (closes its listener
// and its idle connections at once) has nothing left to lose.
//
// The kernel keeps the group as an array: a socket joins at the end (at
// listen for TCP, at bind for UDP), and when member i leaves, the last
// member moves into slot i. Steering mirrors the array and attaches the
// program again after every change. An index past the end makes the
// kernel fall back to its hash over every member, which could pick a
// member that is not steered to. The loop steers to a new generation only
// when no other is leaving (one that handed over, or one rolled back), so
// at most one member precedes the current one then; a member joins at the
// end, and a release moves the last member into a gap before the current
// one only in place of one that was there, so none is ever added before
// it. The current one is thus never last with two others when one is
// released, and that cannot happen (see release). The mirror holds only
// while the loop releases a generation's sockets once no process of it
// holds them (see Release).
//
// Unix listeners have no reuseport group: they stay shared.
type Steering struct {
	listeners []*steered
}

// steered is one listener in steer mode.
type steered struct {
	spec    ListenSpec // Addr as bound (port 0 resolved)
	shared  int        // unix: the one descriptor; -1 for TCP and UDP
	members []member   // the kernel's array, mirrored
	current int        // the generation steered to
	// splitTo and splitPercent: during a canary step, that share of new
	// TCP connections goes to splitTo instead (0: none).
	splitTo, splitPercent int
}

type member struct {
	fd  int
	gen int
}

// NewSteering starts steer mode over listeners opened by Open: they are
// generation 1's sockets, and generation 1 is steered to.
func NewSteering(ls []*Listener) (*Steering, error) {
	s := &Steering{}
	for _, l := range ls {
		st := &steered{spec: ListenSpec{Name: l.Name, Network: l.Network, Addr: l.Bound}, shared: -1, current: 1}
		if l.Network == "unix" {
			st.shared = l.FD
		} else {
			st.members = []member{{fd: l.FD, gen: 1}}
		}
		s.listeners = append(s.listeners, st)
	}
	if err := s.Steer(1); err != nil {
		return nil, err
	}
	return s, nil
}

// Open opens gen's own socket for every TCP and UDP listener.
func (s *Steering) Open(gen int) ([]int, error) {
	fds := make([]int, 0, len(s.listeners))
	for _, st := range s.listeners {
		if st.shared >= 0 {
			fds = append(fds, st.shared)
			continue
		}
		if fd := st.fdOf(gen); fd >= 0 {
			fds = append(fds, fd) // generation 1's, from the start
			continue
		}
		l, err := open(st.spec, false)
		if err != nil {
			s.Release(gen) // what this generation got so far, never steered to
			return nil, err
		}
		st.members = append(st.members, member{fd: l.FD, gen: gen})
		fds = append(fds, l.FD)
	}
	return fds, nil
}

func (st *steered) fdOf(gen int) int {
	for _, m := range st.members {
		if m.gen == gen {
			return m.fd
		}
	}
	return -1
}

func (st *steered) index(gen int) int {
	for i, m := range st.members {
		if m.gen == gen {
			return i
		}
	}
	return -1
}

// Steer attaches, for every TCP and UDP listener, the program that picks
// gen's socket.
func (s *Steering) Steer(gen int) error {
	for _, st := range s.listeners {
		if st.shared >= 0 {
			continue
		}
		if st.index(gen) < 0 {
			return fmt.Errorf("steer %s %s: generation %d has no socket", st.spec.Network, clip.Value(st.spec.Addr), gen)
		}
		st.current, st.splitTo = gen, 0
		if err := st.attach(); err != nil {
			return err
		}
	}
	return nil
}

// Split attaches, for every TCP listener, a program that gives percent of
// new connections to to's socket and the rest to from's; UDP listeners
// stay with from (a canary splits connections, and UDP has none: a share
// of datagrams would split its flows).
func (s *Steering) Split(from, to, percent int) error {
	for _, st := range s.listeners {
		if st.shared >= 0 {
			continue
		}
		if st.index(from) < 0 || st.index(to) < 0 {
			return fmt.Errorf("steer %s %s: generations %d and %d need sockets", st.spec.Network, clip.Value(st.spec.Addr), from, to)
		}
		st.current, st.splitTo = from, 0
		if strings.HasPrefix(st.spec.Network, "tcp") {
			st.splitTo, st.splitPercent = to, percent
		}
		if err := st.attach(); err != nil {
			return err
		}
	}
	return nil
}

// skfAdRandom is the classic BPF ancillary load of a random number
// (SKF_AD_OFF + SKF_AD_RANDOM), as an unsigned offset.
const skfAdRandom = uint32(0xfffff000 + 56)

// attach (re)attaches `ret #index of current`. The program belongs to the
// group, so any member will do; the current one is certain to be in it.
func (st *steered) attach() error {
	k := st.index(st.current)
	if k < 0 {
		return nil // CloseAll: no group left
	}
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(k)}}
	if j := st.index(st.splitTo); st.splitTo != 0 && j >= 0 {
		// A random number per connection: only a connection's first
		// packet (its SYN) goes through the program; the rest of it finds
		// its socket by its own address.
		prog = []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdRandom},
			{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: 100},
			{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: uint32(st.splitPercent), Jt: 1, Jf: 0},
			{Code: unix.BPF_RET | unix.BPF_K, K: uint32(j)},
			{Code: unix.BPF_RET | unix.BPF_K, K: uint32(k)},
		}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(st.members[k].fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return fmt.Errorf("steer %s %s: SO_ATTACH_REUSEPORT_CBPF: %w", st.spec.Network, clip.Value(st.spec.Addr), err)
	}
	return nil
}

// Pending counts gen's queued connections (a TCP listener's TCP_INFO
// reports its accept queue as tcpi_unacked) and whether a datagram waits
// in its UDP sockets (FIONREAD is the next datagram's size).
func (s *Steering) Pending(gen int) int {
	n := 0
	for _, st := range s.listeners {
		fd := st.fdOf(gen)
		if fd < 0 {
			continue // a unix listener, or none of gen's
		}
		if strings.HasPrefix(st.spec.Network, "tcp") {
			if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				n += int(ti.Unacked)
			}
		} else if v, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && v > 0 {
			n++
		}
	}
	return n
}

// Release takes gen's own sockets out of every group.
func (s *Steering) Release(gen int) {
	for _, st := range s.listeners {
		st.release(gen)
	}
}

// CloseAll takes every member out of every group and closes it. Unix
// listeners stay: nothing is relayed to them.
func (s *Steering) CloseAll() {
	for _, st := range s.listeners {
		for _, m := range st.members {
			if strings.HasPrefix(st.spec.Network, "tcp") {
				_ = unix.Shutdown(m.fd, unix.SHUT_RD)
			}
			_ = unix.Close(m.fd)
		}
		st.members = nil
	}
}

// release removes gen's member. A TCP listener leaves the group at
// shutdown(SHUT_RD) even while another process (a helper of a worker)
// still holds it, so the mirror follows at once; a UDP socket leaves at
// its last close, which is baton's once the generation's processes are
// gone. The last member moves into the freed slot; the program is
// attached again for the current generation's new index. Between the two
// the old program still runs: it names the current generation's index,
// which the move changes only when the current generation was last, and
// then (at most two members before, so one after) the kernel's fallback
// can only pick it.
func (st *steered) release(gen int) {
	i := st.index(gen)
	if i < 0 || gen == st.current {
		return
	}
	fd := st.members[i].fd
	if strings.HasPrefix(st.spec.Network, "tcp") {
		_ = unix.Shutdown(fd, unix.SHUT_RD) // ENOTCONN only if it never listened
	}
	_ = unix.Close(fd) // a socket: nothing to flush
	last := len(st.members) - 1
	st.members[i] = st.members[last]
	st.members = st.members[:last]
	// On failure the old program stays, and the next Steer or release
	// attaches again; there is no one to report it to but the kernel's
	// fallback, which with at most one other member picks the current.
	_ = st.attach()
}
