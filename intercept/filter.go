//go:build linux

// Package intercept lets an unchanged app serve from the sockets baton
// holds (BATON_BIND=intercept): baton takes over the app's own bind().
//
// # Protocol
//
// Between fork and exec, baton's shim (spawn.Shim) calls Install on the
// thread that execs: it sets PR_SET_NO_NEW_PRIVS and loads a seccomp
// filter (SECCOMP_FILTER_FLAG_NEW_LISTENER) that returns
// SECCOMP_RET_USER_NOTIF for bind(2) and listen(2) of the native
// architecture and SECCOMP_RET_ALLOW for every other system call. A
// system call of another architecture (a 32-bit i386 or x32 binary) is
// allowed, explicitly, and so never intercepted. The filter is inherited
// by every child and survives execve, so `sh -c 'exec node server.js'`
// and forked workers are covered.
//
// The shim sends the filter's listener descriptor to baton with
// SCM_RIGHTS over a SOCK_SEQPACKET socketpair it inherits (Send), one
// message of one byte, then execs. SCM_RIGHTS rather than pidfd_getfd:
// it needs no ptrace permission over the worker (which Docker's default
// profile denies as pidfd_getfd needs CAP_SYS_PTRACE), and the shim, not
// baton, decides when the descriptor exists.
//
// baton (Serve, one goroutine per worker, parked in the runtime's poller
// between notifications) answers each notification:
//
//   - bind(fd, addr, len): it reads len bytes at addr from the caller's
//     memory (process_vm_readv, or /proc/PID/mem where a seccomp profile
//     denies that: see readMem), the socket's protocol from the xattr
//     system.sockprotoname of /proc/PID/fd/FD (TCP, TCPv6, UDP, UDPv6,
//     UNIX-STREAM, UNIX), then checks with SECCOMP_IOCTL_NOTIF_ID_VALID
//     that the caller still waits (the pid was not reused meanwhile).
//     If the address matches a held listener (see Match), it reads the
//     app's descriptor flags from /proc/PID/fdinfo/FD, sets O_NONBLOCK
//     of baton's socket as the app's socket had it, installs baton's
//     socket at the app's descriptor number with SECCOMP_IOCTL_NOTIF_ADDFD
//     and SECCOMP_ADDFD_FLAG_SETFD (O_CLOEXEC kept as the app had it; the
//     app's own socket is closed by the replacement), and answers 0.
//     Otherwise it answers SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel
//     runs the bind as if baton were not there.
//   - listen(fd, backlog): if /proc/PID/fd/FD is one of baton's sockets
//     (same inode), it answers 0 without running it, so baton's socket
//     keeps its backlog (Python's listen(5) would set it to 5); it is then
//     "listened". Otherwise SECCOMP_USER_NOTIF_FLAG_CONTINUE.
//
// O_NONBLOCK is a flag of the open file description, which every holder
// of the socket shares: the app, its sibling workers, and baton (in steer
// mode a generation's own socket; in shared mode the one socket of all
// generations). baton sets it to what the adopting app's own socket had:
// a blocking app (Python's http.server, a plain accept loop) then blocks
// in accept() as it expects, and a non-blocking one (Node, Go) gets
// EAGAIN and waits in epoll as it expects. The workers of a generation
// run one program, so they agree. baton itself never blocks on it: the
// relay (steer mode) sets O_NONBLOCK again before it accepts, once no
// process of the generation is left.
//
// The filter is not a security boundary: the app can change the address
// in its memory after baton read it (that only changes what the kernel
// binds when baton lets the call continue), and 32-bit system calls pass
// unseen. baton only ever installs sockets it already holds, at a
// descriptor the app named in a bind of the same address.
package intercept

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// auditArch is the AUDIT_ARCH_* value of the native architecture in
// seccomp_data.arch; 0 where baton does not know it.
func auditArch() uint32 {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64
	}
	return 0
}

// seccomp_data offsets (linux/seccomp.h).
const (
	offNr   = 0
	offArch = 4
)

// program is the classic BPF filter: notify bind and listen of the native
// architecture, allow everything else.
func program(arch uint32) []unix.SockFilter {
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK = unix.BPF_RET | unix.BPF_K
	)
	return []unix.SockFilter{
		{Code: ldW, K: offArch},
		{Code: jeqK, K: arch, Jt: 0, Jf: 4}, // another architecture: allow
		{Code: ldW, K: offNr},
		{Code: jeqK, K: unix.SYS_BIND, Jt: 1, Jf: 0},
		{Code: jeqK, K: unix.SYS_LISTEN, Jt: 0, Jf: 1},
		{Code: retK, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
}

// Install sets PR_SET_NO_NEW_PRIVS and loads the filter on the calling
// thread (not the others: no TSYNC), returning the listener descriptor
// (close-on-exec). Call it with the thread locked, on the thread that
// will exec; from then on that thread's bind and listen wait for an
// answer from whoever holds the descriptor.
func Install() (int, error) {
	arch := auditArch()
	if arch == 0 {
		return -1, fmt.Errorf("no seccomp filter for architecture %s", runtime.GOARCH)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	prog := program(arch)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return -1, fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): %w", errno)
	}
	return int(fd), nil
}

// Send passes the listener descriptor fd over the socket sock (SCM_RIGHTS,
// one byte of data).
func Send(sock, fd int) error {
	if err := unix.Sendmsg(sock, []byte{0}, unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("send seccomp listener: %w", err)
	}
	return nil
}

// Receive reads the listener descriptor Send passed over sock; it blocks
// until the shim sends it or closes its end.
func Receive(sock int) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, err
		}
		if n == 0 && oobn == 0 {
			return -1, fmt.Errorf("the shim closed its end without a listener")
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return -1, fmt.Errorf("no listener in the shim's message")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			for _, fd := range fds {
				_ = unix.Close(fd)
			}
			return -1, fmt.Errorf("no listener in the shim's message")
		}
		return fds[0], nil
	}
}
