//go:build linux

package intercept

import (
	"bytes"
	"net/netip"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Kind is a socket's type as matching needs it.
type Kind int

// The kinds of socket baton can hold.
const (
	KindOther Kind = iota
	KindTCP
	KindUDP
	KindUnixStream
	KindUnixDgram
)

// kindOfProto maps system.sockprotoname to a Kind.
func kindOfProto(name string) Kind {
	switch name {
	case "TCP", "TCPv6":
		return KindTCP
	case "UDP", "UDPv6":
		return KindUDP
	case "UNIX-STREAM":
		return KindUnixStream
	case "UNIX":
		return KindUnixDgram
	}
	return KindOther
}

// held is one of baton's sockets as bind matching sees it.
type held struct {
	fd   int
	dup  bool // fd is the Worker's own copy, closed with it
	kind Kind
	ino  uint64
	addr netip.AddrPort // TCP, UDP
	path []byte         // unix: the path, or "\x00name" for an abstract name
}

// Address is a bind address, decoded from the app's struct sockaddr.
type Address struct {
	IP   netip.AddrPort
	Path []byte // unix; a leading NUL is an abstract name
	Unix bool
}

// Match returns the index in hs of the held socket a bind of kind k to a
// is for, or -1. The rules, in BATON_LISTEN order, first match wins:
//   - the kinds agree (a TCP socket only gets a TCP listener, UDP a UDP
//     one, a unix stream socket a unix stream listener);
//   - TCP and UDP: the port is the same and not 0, and the app's address
//     is the held one (an IPv4-mapped IPv6 address counts as the IPv4
//     one) or a wildcard of either family, 0.0.0.0 or [::];
//   - unix: the same path after cleaning (a relative path is taken from
//     the app's working directory), or the same abstract name.
//
// Anything else, port 0 included, is not baton's: the bind runs as usual.
func match(hs []held, k Kind, a Address) int {
	for i, h := range hs {
		if h.kind != k {
			continue
		}
		switch k {
		case KindTCP, KindUDP:
			if a.Unix || a.IP.Port() == 0 || a.IP.Port() != h.addr.Port() {
				continue
			}
			ip := a.IP.Addr().Unmap()
			if ip.IsUnspecified() || ip == h.addr.Addr().Unmap() {
				return i
			}
		case KindUnixStream, KindUnixDgram:
			if a.Unix && len(a.Path) > 0 && bytes.Equal(a.Path, h.path) {
				return i
			}
		}
	}
	return -1
}

// decodeSockaddr decodes a raw struct sockaddr; cwd resolves a relative
// unix path.
func decodeSockaddr(b []byte, cwd string) (Address, bool) {
	if len(b) < 2 {
		return Address{}, false
	}
	family := uint16(b[0]) | uint16(b[1])<<8 // little endian on amd64 and arm64
	switch family {
	case unix.AF_INET:
		if len(b) < 8 {
			return Address{}, false
		}
		port := uint16(b[2])<<8 | uint16(b[3])
		return Address{IP: netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)}, true
	case unix.AF_INET6:
		if len(b) < 24 {
			return Address{}, false
		}
		port := uint16(b[2])<<8 | uint16(b[3])
		return Address{IP: netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port)}, true
	case unix.AF_UNIX:
		p := b[2:]
		if len(p) == 0 {
			return Address{Unix: true}, true // autobind: never baton's
		}
		if p[0] != 0 {
			if i := bytes.IndexByte(p, 0); i >= 0 {
				p = p[:i]
			}
			s := string(p)
			if !filepath.IsAbs(s) {
				if cwd == "" {
					return Address{Unix: true}, true
				}
				s = filepath.Join(cwd, s)
			}
			p = []byte(filepath.Clean(s))
		}
		return Address{Unix: true, Path: p}, true
	}
	return Address{}, false
}

// heldOf describes baton's socket fd: its kind, inode and bound address.
func heldOf(fd int) (held, error) {
	h := held{fd: fd}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return h, err
	}
	h.ino = st.Ino
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return h, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return h, err
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		h.addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		h.kind = map[int]Kind{unix.SOCK_STREAM: KindTCP, unix.SOCK_DGRAM: KindUDP}[typ]
	case *unix.SockaddrInet6:
		h.addr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		h.kind = map[int]Kind{unix.SOCK_STREAM: KindTCP, unix.SOCK_DGRAM: KindUDP}[typ]
	case *unix.SockaddrUnix:
		name := sa.Name
		if len(name) > 0 && name[0] == '@' {
			h.path = append([]byte{0}, name[1:]...)
		} else {
			h.path = []byte(filepath.Clean(name))
		}
		h.kind = map[int]Kind{unix.SOCK_STREAM: KindUnixStream, unix.SOCK_DGRAM: KindUnixDgram}[typ]
	}
	return h, nil
}
