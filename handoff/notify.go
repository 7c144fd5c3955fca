//go:build linux

package handoff

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Note is one sd_notify datagram, attributed to the sending pid by the
// kernel (SO_PASSCRED), never by anything the sender wrote.
type Note struct {
	PID int
	// PGID is the sender's process group as looked up the moment the
	// datagram was read, 0 if the sender was already gone: a helper that
	// speaks for a worker may exit right after sending.
	PGID     int
	Ready    bool   // READY=1
	Stopping bool   // STOPPING=1
	Status   string // STATUS=...
	Watchdog bool   // WATCHDOG=1: alive (BATON_WATCHDOG)
	Trigger  bool   // WATCHDOG=trigger: hung, by its own word
	// Listened is not a datagram: BATON_BIND=intercept reports with it
	// that the worker PID has listened on every TCP listener of baton's
	// it adopted (BATON_READY=listen).
	Listened bool
}

// Notifier is baton's NOTIFY_SOCKET: a datagram socket workers send
// READY=1 to.
type Notifier struct {
	// Addr is the NOTIFY_SOCKET value: a path, or "@name" for an abstract
	// socket (the sd_notify convention).
	Addr string
	conn *net.UnixConn
	dir  string
}

// NewNotifier creates the socket in a fresh directory under the first of
// dirs that works. The directory is baton's: 0700, or with workers of
// another user (uid >= 0) 0711, so they can reach the socket but not
// replace or remove it (a compromised worker could otherwise make every
// later READY=1 go elsewhere); the socket file is then theirs, 0600, so
// they can send to it. Where no directory can be made (read-only root, FROM
// scratch without /run or /tmp) it falls back to an abstract socket, which
// needs no filesystem.
func NewNotifier(dirs []string, uid, gid int) (*Notifier, error) {
	for _, d := range dirs {
		dir, err := os.MkdirTemp(d, "baton.")
		if err != nil {
			continue
		}
		path := filepath.Join(dir, "notify")
		n, err := listenNotify(path)
		if err == nil && uid >= 0 {
			err = errors.Join(os.Chown(path, uid, gid), os.Chmod(path, 0o600), os.Chmod(dir, 0o711))
		}
		if err != nil {
			if n != nil {
				_ = n.conn.Close()
			}
			_ = os.RemoveAll(dir)
			continue
		}
		n.dir = dir
		return n, nil
	}
	var b [8]byte
	// getrandom, the source of crypto/rand, without its package start-up
	// cost; a short read or error leaves zeros, and a name that is taken
	// fails the bind below.
	_, _ = unix.Getrandom(b[:], 0)
	return listenNotify(fmt.Sprintf("@baton/%d/%s", os.Getpid(), hex.EncodeToString(b[:])))
}

func listenNotify(addr string) (*Notifier, error) {
	// A leading '@' names an abstract socket: the syscall package turns
	// it into sun_path's leading NUL, as it does for every unix address.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: %w", addr, err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("notify socket %s: %w", addr, err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("notify socket %s: SO_PASSCRED: %w", addr, serr)
	}
	return &Notifier{Addr: addr, conn: conn}, nil
}

// maxNote is the largest datagram read: systemd's NOTIFY_BUFFER_MAX
// (PIPE_BUF). A larger one is dropped whole: parsing what fits would read a
// message its sender never sent.
const maxNote = 4096

// Run reads datagrams until Close and sends each one with sender
// credentials to notes. It owns nothing else; attribution to workers is the
// event loop's job.
func (n *Notifier) Run(notes chan<- Note) {
	buf := make([]byte, maxNote)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		nb, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			continue // oversized or odd: the next one may be fine
		}
		pid := senderPID(oob[:noob])
		if pid <= 0 {
			continue // no credentials: cannot be attributed, so ignored
		}
		note := parseNote(pid, buf[:nb])
		if pgid, err := unix.Getpgid(pid); err == nil {
			note.PGID = pgid
		}
		notes <- note
	}
}

// Close closes the socket and removes its directory.
func (n *Notifier) Close() error {
	err := n.conn.Close()
	if n.dir != "" {
		_ = os.RemoveAll(n.dir)
	}
	return err
}

func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

func parseNote(pid int, b []byte) Note {
	n := Note{PID: pid}
	for _, line := range bytes.Split(b, []byte("\n")) {
		switch {
		case bytes.Equal(line, []byte("READY=1")):
			n.Ready = true
		case bytes.Equal(line, []byte("STOPPING=1")):
			n.Stopping = true
		case bytes.Equal(line, []byte("WATCHDOG=1")):
			n.Watchdog = true
		case bytes.Equal(line, []byte("WATCHDOG=trigger")):
			n.Trigger = true
		case bytes.HasPrefix(line, []byte("STATUS=")):
			n.Status = string(line[len("STATUS="):])
		}
	}
	return n
}
