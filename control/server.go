//go:build linux

package control

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/supervisor"
	"golang.org/x/sys/unix"
)

// Loop is what the control socket and the HTTP endpoint ask of baton's
// event loop (supervisor.Supervisor): a status snapshot, and a reload with
// its outcome. Neither may block past ctx.
type Loop interface {
	Query(ctx context.Context) (supervisor.Status, error)
	Reload(ctx context.Context, why string) (supervisor.Outcome, error)
}

// Listener is this baton's control socket, bound and listening.
type Listener struct {
	Addr string
	// Taken is the name baton wanted when another process held it (and
	// Addr is that name with a random suffix), else empty; Holder then
	// says what is known of that process.
	Taken, Holder string
	fd            int
	ln            net.Listener
}

// Listen binds this baton's control socket. It uses raw system calls, so
// that binding it before the first worker starts costs no set-up of the Go
// runtime's network poller; Serve does that later. When another process
// holds the name, Listen binds the name with a random suffix, which nobody
// can take in advance, and says so in Taken and Holder: a name someone
// else holds never keeps baton from starting. An error means no control
// socket at all.
func Listen() (*Listener, error) {
	addr := name(pidNS("self"), os.Getpid())
	fd, err := bindListen(addr)
	if err == nil {
		return &Listener{Addr: addr, fd: fd}, nil
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("control socket %s: %w", addr, err)
	}
	l := &Listener{Taken: addr, Holder: holder(addr)}
	for i := 0; i < nameTries; i++ {
		l.Addr = addr + "/" + suffix()
		if l.fd, err = bindListen(l.Addr); err == nil {
			return l, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("control socket %s is held by %s, and %s: %w", addr, l.Holder, l.Addr, err)
}

// bindListen returns a listening socket bound to the abstract name addr.
func bindListen(addr string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: addr})
	if err == nil {
		err = unix.Listen(fd, controlBacklog)
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// suffix is 16 random hex digits (getrandom(2); the time if it fails).
func suffix() string {
	var b [8]byte
	if n, err := unix.Getrandom(b[:], 0); err != nil || n != len(b) {
		return strconv.FormatInt(time.Now().UnixNano(), 16)
	}
	return hex.EncodeToString(b[:])
}

// holder says what the kernel tells of the process that listens on addr:
// its pid, or that it is outside baton's PID namespace (SO_PEERCRED's
// pid 0), or why nothing could be learnt. It never waits: the holder may
// never accept.
func holder(addr string) string {
	fd, err := connectUnix(addr, time.Time{})
	if err != nil {
		return "another process (" + errText(err) + ")"
	}
	defer unix.Close(fd)
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	switch {
	case err != nil:
		return "another process (" + errText(err) + ")"
	case cred.Pid == 0:
		return "a process outside baton's PID namespace (uid " + strconv.Itoa(int(cred.Uid)) + ")"
	}
	return "pid " + strconv.Itoa(int(cred.Pid)) + " (uid " + strconv.Itoa(int(cred.Uid)) + ")"
}

// peerCred returns the credentials of the process at the other end of a
// unix socket: for the client, those of the process that called listen.
// The kernel translates the pid into the caller's PID namespace (0 when the
// process is not visible there).
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// Serve answers requests until Close. Each request is a Query to the
// loop; the socket's rules bound what clients can make baton hold: at most
// maxControlConns connections (the oldest idle one gives way to a new
// one) and maxReloadWaiters reloads waiting for their outcome, a request
// line of maxRequest bytes within controlReadTimeout.
func (l *Listener) Serve(s Loop) error {
	f := os.NewFile(uintptr(l.fd), l.Addr)
	ln, err := net.FileListener(f) // a duplicate, in the network poller
	_ = f.Close()                  // ours: the duplicate keeps the socket
	if err != nil {
		return fmt.Errorf("control socket %s: %w", l.Addr, err)
	}
	l.ln = ln
	lim := newLimiter(maxControlConns)
	lim.maxWaiting = maxReloadWaiters
	go acceptLoop(ln, lim, func(h *held) { answer(s, h) }, time.Sleep)
	return nil
}

// Close stops serving and releases the name.
func (l *Listener) Close() error {
	if l.ln != nil {
		return l.ln.Close()
	}
	return unix.Close(l.fd)
}

// readRequestLine reads one request line of at most maxRequest bytes.
func readRequestLine(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxRequest), maxRequest).ReadString('\n')
	if err != nil {
		return "", err // EOF: too long, or the client went away
	}
	return strings.TrimSpace(line), nil
}

func answer(s Loop, h *held) {
	_ = h.SetReadDeadline(time.Now().Add(controlReadTimeout)) // without it a slow client only holds a place longer
	req, err := readRequestLine(h)
	if err != nil || (req != "status" && req != "reload") || !h.working() {
		return
	}
	if req == "reload" {
		answerReload(s, h)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	st, err := s.Query(ctx)
	if err != nil {
		return // the client treats no answer as not ready
	}
	_ = h.SetWriteDeadline(time.Now().Add(controlTimeout))
	_ = json.NewEncoder(h).Encode(st) // a client that went away gets nothing
}

// maxReloadWait bounds how long the control socket waits for a reload's
// outcome (the client's own --timeout is usually shorter).
const maxReloadWait = time.Hour

// answerReload runs a reload and answers its outcome. A reload changes
// what serves, so only root and baton's own user may ask (SO_PEERCRED);
// status is anyone's in the network namespace. While it waits, the
// connection is set aside (held.wait), out of status's way, and a client
// that goes away (its end closed) ends the wait and frees its place; the
// reload itself goes on.
func answerReload(s Loop, h *held) {
	var o supervisor.Outcome
	cred, err := peerCred(h.Conn)
	switch {
	case err != nil:
		o.Reason = "peer credentials: " + err.Error()
	case cred.Uid != 0 && int(cred.Uid) != os.Geteuid():
		o.Reason = "permission denied: uid " + strconv.Itoa(int(cred.Uid)) + " may not reload baton (root or baton's own user may)"
	case !h.wait():
		o.Reason = strconv.Itoa(maxReloadWaiters) + " reload requests already wait for their outcome: not reloading"
		if st, err := queryNow(s); err == nil {
			o.Gen = st.Gen
		}
	default:
		ctx, cancel := context.WithTimeout(context.Background(), maxReloadWait)
		defer cancel()
		go func() {
			// The client sends nothing after its request: any end of
			// this read (end of file, a reset, or bytes it should not
			// send) means it is done with us. Its release ends the read.
			_ = h.SetReadDeadline(time.Time{})
			_, _ = h.Read(make([]byte, 1))
			cancel()
		}()
		if o, err = s.Reload(ctx, "baton reload"); err != nil {
			return // the client went away, or the loop has ended
		}
	}
	_ = h.SetWriteDeadline(time.Now().Add(controlTimeout))
	_ = json.NewEncoder(h).Encode(o)
}

// queryNow asks the loop for its status within controlTimeout.
func queryNow(s Loop) (supervisor.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	return s.Query(ctx)
}
