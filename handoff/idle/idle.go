//go:build linux

// Package idle tells, from outside and without privilege, whether the TCP
// connections of some processes are idle: the way `ss -ti` does, through
// the kernel's sock_diag netlink interface (NETLINK_SOCK_DIAG, called
// NETLINK_INET_DIAG in older headers), and /proc.
//
// # The query
//
// One request per address family (AF_INET, then AF_INET6) on a
// NETLINK_SOCK_DIAG socket: a netlink header of type SOCK_DIAG_BY_FAMILY
// with NLM_F_REQUEST|NLM_F_DUMP, followed by struct inet_diag_req_v2
// (linux/inet_diag.h): sdiag_family, sdiag_protocol IPPROTO_TCP,
// idiag_ext 1<<(INET_DIAG_INFO-1), idiag_states the bit mask of the TCP
// states wanted (ESTABLISHED and CLOSE_WAIT here), and an all-zero
// inet_diag_sockid (no filter). The kernel answers with one struct
// inet_diag_msg per socket, each followed by route attributes; the
// attribute INET_DIAG_INFO carries struct tcp_info, as long as the
// running kernel's (shorter on older kernels: what is missing reads 0).
// The dump ends with NLMSG_DONE. Any user may dump every socket of its
// network namespace: no capability is needed.
//
// From inet_diag_msg: idiag_inode (the socket's inode, as in
// /proc/PID/fd/N -> socket:[INODE]), idiag_rqueue (for an established
// socket: bytes received and not yet read by the app, rcv_nxt -
// copied_seq) and idiag_wqueue (bytes written by the app and not yet
// acknowledged by the peer, write_seq - snd_una). From tcp_info:
// tcpi_last_data_sent, tcpi_last_data_recv and tcpi_last_ack_recv
// (milliseconds since, at the kernel's jiffy granularity: 4 ms at
// HZ=250), tcpi_bytes_received and tcpi_bytes_acked.
//
// # Which processes
//
// A socket belongs to the processes that hold a descriptor of it:
// /proc/PID/fd/* links named socket:[INODE]. Reading them needs the
// right to ptrace-read the process (baton is root, or the workers' own
// user); with /proc mounted hidepid=1 or 2 other users' processes are not
// listed at all, and their sockets are then not found.
//
// Package idle owns no state of baton's loop; Tracker is a value the loop
// keeps.
package idle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is one TCP connection as sock_diag reports it.
type Conn struct {
	Inode     uint64
	LocalPort uint16
	// Unread is what the peer sent and the app has not read; Unsent is
	// what the app wrote and the peer has not acknowledged.
	Unread, Unsent uint32
	// LastSent, LastRecv and LastAckRecv are how long ago the last data
	// was sent, the last data received and the last ACK received, at the
	// kernel's jiffy granularity.
	LastSent, LastRecv, LastAckRecv time.Duration
	// Received is every byte received; Acked every byte sent and
	// acknowledged.
	Received, Acked uint64
}

// Idle tells whether c is idle now: nothing unread, nothing unsent, it has
// received something, and its last byte was a response sent after its
// last request: the last data sent is more recent than the last data
// received. The two are in jiffies; when they fall in the same one, the
// order is known only if an ACK came after both (the peer acknowledging
// the response), so a request and a response in the same jiffy count as
// idle only then.
func (c Conn) Idle() bool {
	if c.Unread > 0 || c.Unsent > 0 || c.Received == 0 {
		return false
	}
	return c.LastSent < c.LastRecv || (c.LastSent == c.LastRecv && c.LastAckRecv < c.LastRecv)
}

// Tracker follows a set of connections across polls and tells which have
// been seen idle at least once since the first poll.
type Tracker struct {
	conns map[uint64]*tracked
}

type tracked struct {
	last Conn
	seen bool
}

// Observe records one poll and returns how many of its connections have
// not been seen idle yet. A connection counts as seen idle when Idle is
// true at a poll, or when, since the poll before, bytes it sent were
// acknowledged and the exchange went a full turn: the peer sent more
// after that (the next request: a client that does not pipeline sends
// it only once it has the whole response), or there is nothing unread
// and nothing unsent now, or there was nothing unread and nothing
// unsent then (the request read, its response not begun). Either way a
// response went out after the last request and was acknowledged, and
// the connection was idle for a moment; a request that came after it is
// the keep-alive close race, not a cut. A connection under steady
// keep-alive load is never idle at a poll (a request waits unread, or
// a response unacknowledged), and is seen idle this way. A connection
// that is gone since the last poll is forgotten.
func (t *Tracker) Observe(conns []Conn) int {
	if t.conns == nil {
		t.conns = map[uint64]*tracked{}
	}
	next := make(map[uint64]*tracked, len(conns))
	left := 0
	for _, c := range conns {
		tr := t.conns[c.Inode]
		if tr == nil {
			tr = &tracked{}
		} else if p := tr.last; p.Received > 0 && c.Acked > p.Acked &&
			(c.Received > p.Received || c.Unread == 0 && c.Unsent == 0 || p.Unread == 0 && p.Unsent == 0) {
			tr.seen = true
		}
		if c.Idle() {
			tr.seen = true
		}
		tr.last = c
		next[c.Inode] = tr
		if !tr.seen {
			left++
		}
	}
	t.conns = next
	return left
}

// Group returns the processes of the caller's PID namespace whose
// process group is one of pgids, each as /proc names it. The groups are
// ids as the caller sees them, which /proc may not: a /proc mounted for
// an outer namespace (a test's, or a runtime's that did not mount one for
// the container) names processes by their outer ids. So the group is the
// last id of the NSpgid line of /proc/PID/status (the innermost
// namespace's), and the process counts only if /proc/PID/ns/pid is the
// caller's own namespace. A process that exits meanwhile, or whose
// namespace cannot be read, is skipped.
func Group(pgids []int) ([]int, error) {
	want := map[int]bool{}
	for _, p := range pgids {
		want[p] = true
	}
	self, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name()
		if pg, ok := innermostPgid(dir); !ok || !want[pg] {
			continue
		}
		if ns, err := os.Readlink(dir + "/ns/pid"); err == nil && ns == self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// innermostPgid reads the last id of the NSpgid line of dir/status.
func innermostPgid(dir string) (int, bool) {
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0, false
	}
	_, rest, ok := strings.Cut(string(b), "\nNSpgid:")
	if !ok {
		return 0, false
	}
	line, _, _ := strings.Cut(rest, "\n")
	f := strings.Fields(line)
	if len(f) == 0 {
		return 0, false
	}
	pg, err := strconv.Atoi(f[len(f)-1])
	return pg, err == nil
}

// Inodes returns the socket inodes of every descriptor of pids. A process
// that exits meanwhile, or whose descriptors cannot be read, adds none.
func Inodes(pids []int) map[uint64]bool {
	inodes := map[uint64]bool{}
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			l, err := os.Readlink(dir + "/" + e.Name())
			if err != nil || !strings.HasPrefix(l, "socket:[") || !strings.HasSuffix(l, "]") {
				continue
			}
			if n, err := strconv.ParseUint(l[len("socket:["):len(l)-1], 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	return inodes
}

// Of returns the established (and CLOSE_WAIT) TCP connections of the
// processes in pgids' process groups whose local port is one of ports:
// the connections they accepted on listeners of those ports.
func Of(pgids []int, ports map[uint16]bool) ([]Conn, error) {
	pids, err := Group(pgids)
	if err != nil {
		return nil, err
	}
	inodes := Inodes(pids)
	if len(inodes) == 0 || len(ports) == 0 {
		return nil, nil
	}
	all, err := List()
	if err != nil {
		return nil, err
	}
	var out []Conn
	for _, c := range all {
		if inodes[c.Inode] && ports[c.LocalPort] {
			out = append(out, c)
		}
	}
	return out, nil
}

// The kernel's constants and layouts, from linux/inet_diag.h,
// linux/sock_diag.h and linux/tcp.h.
const (
	inetDiagInfo  = 2                                 // INET_DIAG_INFO
	wantStates    = 1<<1 | 1<<8                       // idiag_states: TCP_ESTABLISHED, TCP_CLOSE_WAIT
	sizeofReqV2   = 56                                // struct inet_diag_req_v2
	sizeofDiagMsg = 72                                // struct inet_diag_msg
	offsetSport   = 4                                 // id.idiag_sport in inet_diag_msg (big-endian)
	offsetRqueue  = 56                                // idiag_rqueue
	offsetWqueue  = 60                                // idiag_wqueue
	offsetInode   = 68                                // idiag_inode
	sizeofRtAttr  = 4                                 // struct rtattr
	dumpIntr      = 0x10                              // NLM_F_DUMP_INTR: the dump was not consistent
	reqLen        = unix.SizeofNlMsghdr + sizeofReqV2 // the whole request
	dumpTries     = 3                                 // a dump interrupted is asked again this often
)

// errDumpIntr is a dump the kernel marks inconsistent (sockets came or
// went while it was read); List asks again.
var errDumpIntr = errors.New("sock_diag: dump interrupted")

// List returns every established or CLOSE_WAIT TCP connection, IPv4 and
// IPv6, of the network namespace.
func List() ([]Conn, error) {
	var out []Conn
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var conns []Conn
		var err error
		for range dumpTries {
			if conns, err = dump(fam); !errors.Is(err, errDumpIntr) {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, conns...)
	}
	return out, nil
}

// dump asks for family's TCP sockets and parses the answer.
func dump(family uint8) ([]Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	req := make([]byte, reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], reqLen)
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence
	r := req[unix.SizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = 1 << (inetDiagInfo - 1) // idiag_ext: ask for tcp_info
	ne.PutUint32(r[4:], wantStates)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag send: %w", err)
	}
	var out []Conn
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("sock_diag recv: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if m.Header.Flags&dumpIntr != 0 {
					return nil, errDumpIntr
				}
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := -int32(ne.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(e))
					}
				}
				return out, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				c, err := parse(m.Data)
				if err != nil {
					return nil, err
				}
				out = append(out, c)
			}
		}
	}
}

// parse reads one inet_diag_msg and its INET_DIAG_INFO attribute.
func parse(b []byte) (Conn, error) {
	if len(b) < sizeofDiagMsg {
		return Conn{}, errors.New("sock_diag: short inet_diag_msg")
	}
	ne := binary.NativeEndian
	c := Conn{
		Inode:     uint64(ne.Uint32(b[offsetInode:])),
		LocalPort: binary.BigEndian.Uint16(b[offsetSport:]),
		Unread:    ne.Uint32(b[offsetRqueue:]),
		Unsent:    ne.Uint32(b[offsetWqueue:]),
	}
	for a := b[sizeofDiagMsg:]; len(a) >= sizeofRtAttr; {
		l := int(ne.Uint16(a[0:]))
		if l < sizeofRtAttr || l > len(a) {
			break
		}
		if ne.Uint16(a[2:]) == inetDiagInfo {
			var ti unix.TCPInfo
			// As long as the kernel's tcp_info; a shorter one leaves the
			// rest 0.
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti)), a[sizeofRtAttr:l])
			ms := func(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }
			c.LastSent, c.LastRecv, c.LastAckRecv = ms(ti.Last_data_sent), ms(ti.Last_data_recv), ms(ti.Last_ack_recv)
			c.Received, c.Acked = ti.Bytes_received, ti.Bytes_acked
		}
		a = a[(l+3)&^3:]
	}
	return c, nil
}
