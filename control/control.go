//go:build linux

package control

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The control socket is an abstract unix socket named
// @baton/ctl/<PID namespace inode>/<baton's pid in that namespace>.
// Abstract sockets need no filesystem (FROM scratch, read-only root) and
// belong to the network namespace. The pid in the name keeps every baton
// apart, also two in one PID and network namespace (Kubernetes'
// shareProcessNamespace, baton under baton); a client checks with
// SO_PEERCRED that the process answering is the one the name says.
//
// Abstract names have no access control and namespace inodes are handed
// out lowest free first, so anyone in the network namespace can bind the
// name a baton not yet started will want. Such a baton binds
// <name>/<random suffix> instead; clients find it in /proc/net/unix, and
// the SO_PEERCRED check tells it from the squatter.
const namePrefix = "@baton/ctl/"

const (
	// controlTimeout bounds one request end to end, as the client sees it.
	controlTimeout = 2 * time.Second
	// controlReadTimeout bounds the wait for a request line.
	controlReadTimeout = time.Second
	// maxRequest bounds a request line, newline included.
	maxRequest = 256
	// maxControlConns bounds the connections the control socket holds
	// for status requests (and reload requests until they are read).
	maxControlConns = 64
	// maxReloadWaiters bounds the reload requests waiting for their
	// outcome, apart from maxControlConns: waiters never starve status.
	maxReloadWaiters = 64
	// controlBacklog is listen(2)'s backlog: more clients wait in their
	// connect (or fail), not in baton.
	controlBacklog = 64
	// maxCandidates bounds the control sockets a client tries for one
	// baton (its name and the names with a suffix /proc/net/unix lists).
	maxCandidates = 64
	// nameTries is how many random suffixes baton tries when its name is
	// taken.
	nameTries = 4
)

// pidNS returns the inode of the PID namespace of /proc/<proc> ("self" or
// a pid), "-" when /proc cannot tell (no /proc at all).
func pidNS(proc string) string {
	ns, err := nsOf(proc)
	if err != nil {
		return "-"
	}
	return ns
}

// nsOf returns the inode of the PID namespace of /proc/<proc>. Reading
// another user's needs the right to ptrace it (EACCES otherwise).
func nsOf(proc string) (string, error) {
	ns, err := os.Readlink("/proc/" + proc + "/ns/pid")
	if err != nil {
		return "", err
	}
	return strings.Trim(strings.TrimPrefix(ns, "pid:"), "[]"), nil // "pid:[4026531836]"
}

func name(ns string, pid int) string { return namePrefix + ns + "/" + strconv.Itoa(pid) }

// connectUnix connects a new unix stream socket to the abstract name addr.
// Before deadline, a full backlog is waited out in the kernel's queue
// (SO_SNDTIMEO bounds the wait, unix(7)); a zero deadline fails it at
// once (EAGAIN). The socket returned is blocking.
func connectUnix(addr string, deadline time.Time) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for {
		wait := time.Until(deadline)
		if wait > 0 {
			tv := unix.NsecToTimeval(wait.Nanoseconds())
			err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		} else {
			err = unix.SetNonblock(fd, true)
		}
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: addr})
		}
		if !errors.Is(err, unix.EINTR) || wait <= 0 {
			break
		}
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err == nil {
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{})
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// errText is err without the address net's errors repeat (an abstract
// name begins with a NUL byte there).
func errText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sc *os.SyscallError
	if errors.As(err, &sc) && sc.Err != nil {
		err = sc.Err
	}
	return err.Error()
}
