//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/spawn"
)

// Listener is one socket baton holds for its whole life and hands to every
// worker generation. baton never accepts on it and never changes its file
// status flags: every generation shares this one open file description.
type Listener struct {
	Name    string // LISTEN_FDNAMES entry; "unknown" when unnamed, as systemd does
	Network string // tcp, tcp4, tcp6, udp, udp4, udp6, unix
	Addr    string // as configured
	Bound   string // as bound (port 0 resolved)
	FD      int    // raw descriptor, close-on-exec, non-blocking
}

// ListenSpec is a parsed BATON_LISTEN entry.
type ListenSpec struct {
	Name, Network, Addr string
}

// Listeners is BATON_LISTEN: comma-separated `[name=]scheme://addr`; a bare
// `host:port` means tcp and a bare `/path` means unix.
type Listeners []ListenSpec

var networks = map[string]bool{
	"tcp": true, "tcp4": true, "tcp6": true,
	"udp": true, "udp4": true, "udp6": true, "unix": true,
}

// Decode implements envconfig.Decoder.
func (ls *Listeners) Decode(value string) error {
	var out Listeners
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return errors.New("want comma-separated [name=]scheme://addr entries, got an empty one")
		}
		var spec ListenSpec
		if i := strings.Index(item, "="); i >= 0 {
			spec.Name, item = item[:i], item[i+1:]
			if spec.Name == "" || strings.ContainsAny(spec.Name, ":/ ") {
				return fmt.Errorf("listener name must be non-empty, without ':' '/' or spaces, in %q", spawn.Clip(spec.Name+"="+item))
			}
		}
		switch {
		case strings.Contains(item, "://"):
			i := strings.Index(item, "://")
			spec.Network, spec.Addr = item[:i], item[i+3:]
			if !networks[spec.Network] {
				return fmt.Errorf("unknown scheme %q: want tcp, tcp4, tcp6, udp, udp4, udp6 or unix", spawn.Clip(spec.Network))
			}
		case strings.HasPrefix(item, "/") || strings.HasPrefix(item, "@"):
			spec.Network, spec.Addr = "unix", item
		default:
			spec.Network, spec.Addr = "tcp", item
		}
		if spec.Network == "unix" {
			if spec.Addr == "" {
				return errors.New("unix listener needs a path")
			}
		} else if _, _, err := net.SplitHostPort(spec.Addr); err != nil {
			return fmt.Errorf("want host:port for %s, got %q", spec.Network, spawn.Clip(spec.Addr))
		}
		out = append(out, spec)
	}
	*ls = out
	return nil
}

// Open binds every listener, in order. On error it closes what it opened,
// so a bad BATON_LISTEN never leaves a half-started baton.
func Open(specs []ListenSpec) ([]*Listener, error) {
	var out []*Listener
	for _, spec := range specs {
		l, err := open(spec)
		if err != nil {
			CloseAll(out)
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// CloseAll closes the listeners' descriptors.
func CloseAll(ls []*Listener) {
	for _, l := range ls {
		_ = unix.Close(l.FD) // nothing useful to do on a failed close at exit
	}
}

// control sets SO_REUSEPORT (and SO_REUSEADDR for TCP) before bind, so a
// worker that insists on binding the same port itself still can.
func control(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if strings.HasPrefix(network, "tcp") {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
		}
		if !strings.HasPrefix(network, "unix") {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	// Both errors matter: Control's own and the setsockopt's.
	if err != nil {
		return err
	}
	return serr
}

func open(spec ListenSpec) (*Listener, error) {
	// An IPv4 literal means IPv4, as it does for nginx: Go's "tcp" would
	// turn 0.0.0.0 into a dual-stack [::] socket. ":8080" stays dual-stack.
	if host, _, err := net.SplitHostPort(spec.Addr); err == nil && (spec.Network == "tcp" || spec.Network == "udp") {
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
			spec.Network += "4"
		}
	}
	lc := net.ListenConfig{Control: control}
	ctx := context.Background()
	var (
		closer interface{ Close() error }
		raw    syscall.RawConn
		bound  string
		err    error
	)
	switch spec.Network {
	case "udp", "udp4", "udp6":
		var pc net.PacketConn
		pc, err = lc.ListenPacket(ctx, spec.Network, spec.Addr)
		if err == nil {
			closer, bound = pc, pc.LocalAddr().String()
			raw, err = pc.(*net.UDPConn).SyscallConn()
		}
	case "unix":
		if err = removeStale(spec.Addr); err != nil {
			return nil, fmt.Errorf("listen unix %s: %w", spec.Addr, err)
		}
		var l net.Listener
		l, err = lc.Listen(ctx, "unix", spec.Addr)
		if err == nil {
			// The socket file must outlive Go's listener object: the
			// descriptor we keep is a dup of it.
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			closer, bound = l, spec.Addr
			raw, err = l.(*net.UnixListener).SyscallConn()
		}
	default:
		var l net.Listener
		l, err = lc.Listen(ctx, spec.Network, spec.Addr)
		if err == nil {
			closer, bound = l, l.Addr().String()
			raw, err = l.(*net.TCPListener).SyscallConn()
		}
	}
	if err != nil {
		if closer != nil {
			_ = closer.Close()
		}
		return nil, fmt.Errorf("listen %s %s: %w", spec.Network, spec.Addr, unwrapOp(err))
	}
	// Duplicate the descriptor without going through os.File.Fd(), which
	// would switch the shared open file description to blocking mode.
	// F_DUPFD_CLOEXEC leaves the file status flags (O_NONBLOCK, set by Go)
	// as they are.
	fd := -1
	var derr error
	cerr := raw.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	_ = closer.Close() // closes Go's descriptor only; ours keeps the socket
	if cerr != nil {
		derr = cerr
	}
	if derr != nil {
		return nil, fmt.Errorf("listen %s %s: dup: %w", spec.Network, spec.Addr, derr)
	}
	name := spec.Name
	if name == "" {
		name = "unknown"
	}
	return &Listener{Name: name, Network: spec.Network, Addr: spec.Addr, Bound: bound, FD: fd}, nil
}

// removeStale deletes a unix socket file left by a previous run. A socket
// someone still accepts on, or a file that is not a socket, is an error.
func removeStale(path string) error {
	if strings.HasPrefix(path, "@") {
		return nil // abstract: nothing on disk
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
}

// unwrapOp turns "listen tcp 1.2.3.4:80: bind: address already in use"
// into "bind: address already in use": the caller names the address once.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return sys
		}
		return op.Err
	}
	return err
}
