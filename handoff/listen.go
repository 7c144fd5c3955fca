//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/internal/clip"
	"github.com/baton-init/baton/spawn"
)

// Listener is one socket baton holds for its whole life and hands to every
// worker generation. baton never accepts on it and never changes its file
// status flags: every generation shares this one open file description.
// (BATON_BIND=intercept sets O_NONBLOCK to the adopting app's mode: see
// package intercept.)
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
	// Mode and Owner apply to a unix socket's file: Mode defaults to
	// defaultSocketMode; Owner (nil: baton's) is uid and gid.
	Mode  os.FileMode
	Owner *spawn.Credential
}

// defaultSocketMode is a unix socket file's mode unless ?mode= says
// otherwise: anyone who can reach the directory may connect, as with
// systemd's SocketMode= default. Connecting needs write permission, so
// bind's umask-derived 0755 would shut out every user but baton's.
const defaultSocketMode = 0o666

// Listeners is BATON_LISTEN: comma-separated `[name=]scheme://addr`; a bare
// `host:port` means tcp and a bare `/path` means unix. A unix socket file
// takes options after '?': `mode=0660` and `owner=USER[:GROUP]` (names or
// ids, as BATON_USER), joined with '&'.
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
		// A name comes first: an '=' before any character of an address
		// (options after '?' have '=' too).
		if i := strings.IndexAny(item, "=:/?@["); i >= 0 && item[i] == '=' {
			spec.Name, item = item[:i], item[i+1:]
			if spec.Name == "" || strings.ContainsAny(spec.Name, ":/ ") {
				return fmt.Errorf("listener name must be non-empty, without ':' '/' or spaces, in %q", clip.Value(spec.Name+"="+item))
			}
		}
		switch {
		case strings.Contains(item, "://"):
			i := strings.Index(item, "://")
			spec.Network, spec.Addr = item[:i], item[i+3:]
			if !networks[spec.Network] {
				return fmt.Errorf("unknown scheme %q: want tcp, tcp4, tcp6, udp, udp4, udp6 or unix", clip.Value(spec.Network))
			}
		case strings.HasPrefix(item, "/") || strings.HasPrefix(item, "@"):
			spec.Network, spec.Addr = "unix", item
		default:
			spec.Network, spec.Addr = "tcp", item
		}
		addr, opts, hasOpts := strings.Cut(spec.Addr, "?")
		spec.Addr = addr
		if spec.Network == "unix" {
			if spec.Addr == "" {
				return errors.New("unix listener needs a path")
			}
			spec.Mode = defaultSocketMode
			if hasOpts {
				if strings.HasPrefix(spec.Addr, "@") {
					return fmt.Errorf("an abstract unix socket has no file to set mode or owner on: %q", clip.Value(item))
				}
				if err := spec.decodeOptions(opts); err != nil {
					return err
				}
			}
		} else if hasOpts {
			return fmt.Errorf("only a unix socket file takes options (mode, owner), not %q", clip.Value(item))
		} else if _, port, err := net.SplitHostPort(spec.Addr); err != nil {
			return fmt.Errorf("want host:port for %s, got %q", spec.Network, clip.Value(spec.Addr))
		} else if port == "" {
			// ":" would bind a random port on every interface.
			return fmt.Errorf("want host:port for %s, got %q with no port (0 picks a free one, if that is what you want)", spec.Network, clip.Value(spec.Addr))
		}
		out = append(out, spec)
	}
	*ls = out
	return nil
}

// decodeOptions reads a unix socket's `mode=0660&owner=USER[:GROUP]`.
func (spec *ListenSpec) decodeOptions(opts string) error {
	for _, kv := range strings.Split(opts, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "mode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o777 {
				return fmt.Errorf("unix socket mode: want octal permissions like 0660, got %q", clip.Value(v))
			}
			spec.Mode = os.FileMode(m)
		case "owner":
			c, err := spawn.ResolveUser(v, "/etc/passwd", "/etc/group")
			if err != nil {
				return fmt.Errorf("unix socket owner: %w", err)
			}
			spec.Owner = c
		default:
			return fmt.Errorf("unknown unix socket option %q: want mode or owner", clip.Value(k))
		}
	}
	return nil
}

// Open binds every listener, in order. On error it closes what it opened,
// so a bad BATON_LISTEN never leaves a half-started baton.
func Open(specs []ListenSpec) ([]*Listener, error) {
	var out []*Listener
	for _, spec := range specs {
		l, err := open(spec, true)
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

// open binds spec's socket. With probe, an address someone else holds is
// refused (notTaken); steer mode opens later generations' sockets on its
// own address without it.
func open(spec ListenSpec, probe bool) (*Listener, error) {
	// An IPv4 literal means IPv4, as it does for nginx: Go's "tcp" would
	// turn 0.0.0.0 into a dual-stack [::] socket. ":8080" stays dual-stack.
	if host, _, err := net.SplitHostPort(spec.Addr); err == nil && (spec.Network == "tcp" || spec.Network == "udp") {
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
			spec.Network += "4"
		}
	}
	ctx := context.Background()
	if probe {
		if err := notTaken(ctx, spec); err != nil {
			return nil, fmt.Errorf("listen %s %s: %w", spec.Network, clip.Value(spec.Addr), err)
		}
	}
	lc := net.ListenConfig{Control: control}
	// Plain TCP, as systemd's socket activation hands out: Go (1.24+)
	// makes listeners Multipath TCP where the kernel has it, which workers
	// of any language would then inherit unasked, and the kernel refuses a
	// reuseport program on an MPTCP socket (steer mode).
	lc.SetMultipathTCP(false)
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
			return nil, fmt.Errorf("listen unix %s: %w", clip.Value(spec.Addr), err)
		}
		var l net.Listener
		l, err = lc.Listen(ctx, "unix", spec.Addr)
		if err == nil {
			// The socket file must outlive Go's listener object: the
			// descriptor we keep is a dup of it.
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			closer, bound = l, spec.Addr
			raw, err = l.(*net.UnixListener).SyscallConn()
			if err == nil {
				err = setFile(spec)
			}
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
		return nil, fmt.Errorf("listen %s %s: %w", spec.Network, clip.Value(spec.Addr), unwrapOp(err))
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
		return nil, fmt.Errorf("listen %s %s: dup: %w", spec.Network, clip.Value(spec.Addr), derr)
	}
	name := spec.Name
	if name == "" {
		name = "unknown"
	}
	return &Listener{Name: name, Network: spec.Network, Addr: spec.Addr, Bound: bound, FD: fd}, nil
}

// ErrAddrTaken means another socket is bound to a listener's address.
var ErrAddrTaken = errors.New("address already in use by another socket; baton will not share it (SO_REUSEPORT would split connections between them)")

// notTaken checks that nobody has spec's TCP or UDP address. baton binds
// with SO_REUSEPORT, and Linux lets a second SO_REUSEPORT socket of the
// same user (a second baton, a stray server) bind the address silently and
// then splits the traffic between them. A socket bound without it cannot
// share the address with anyone, so a trial bind tells: only TIME_WAIT
// leftovers are allowed (SO_REUSEADDR, TCP only: for UDP it would share).
// Port 0 needs no check: the kernel picks a free port.
func notTaken(ctx context.Context, spec ListenSpec) error {
	if spec.Network == "unix" {
		return nil // removeStale checks unix sockets
	}
	if _, port, _ := net.SplitHostPort(spec.Addr); port == "0" {
		return nil
	}
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if strings.HasPrefix(network, "tcp") {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	var trial interface{ Close() error }
	var err error
	if strings.HasPrefix(spec.Network, "udp") {
		trial, err = lc.ListenPacket(ctx, spec.Network, spec.Addr)
	} else {
		trial, err = lc.Listen(ctx, spec.Network, spec.Addr)
	}
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return ErrAddrTaken
		}
		return unwrapOp(err)
	}
	return trial.Close()
}

// setFile gives a unix socket's file its mode and owner (nothing to do
// for an abstract socket). Until then bind's umask-derived mode applies,
// which only ever lets fewer clients in.
func setFile(spec ListenSpec) error {
	if strings.HasPrefix(spec.Addr, "@") {
		return nil
	}
	if spec.Owner != nil {
		if err := os.Lchown(spec.Addr, int(spec.Owner.UID), int(spec.Owner.GID)); err != nil {
			return err
		}
	}
	return os.Chmod(spec.Addr, spec.Mode)
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
		return errors.New("the path exists and is not a socket")
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		_ = c.Close()
		return errors.New("in use: another process accepts on it")
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
