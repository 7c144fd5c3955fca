//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probe checks, in baton's own process and before anything is opened,
// that the kernel and the runtime let baton do what Serve does: a thread
// of its own (which exits afterwards, filter and all) installs the
// filter and binds a UDP socket to 127.0.0.1:9; baton receives the
// notification and installs another socket at that descriptor
// (SECCOMP_IOCTL_NOTIF_ADDFD, Linux 5.9+), and the thread checks it got
// that socket. It fails where seccomp(2) is denied (a container profile),
// where user notification is missing (before Linux 5.0, gVisor) or
// ADDFD is (before 5.9). The error says which step failed.
func Probe() error {
	type installed struct {
		notify, sock int
		err          error
	}
	inst := make(chan installed, 1)
	bound := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, so no
		// other goroutine ever runs under the filter.
		runtime.LockOSThread()
		fd, err := Install()
		if err != nil {
			inst <- installed{err: err}
			return
		}
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			_ = unix.Close(fd)
			inst <- installed{err: err}
			return
		}
		inst <- installed{notify: fd, sock: s}
		err = unix.Bind(s, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}})
		bound <- err
	}()
	in := <-inst
	if in.err != nil {
		return in.err
	}
	defer func() { _ = unix.Close(in.notify) }()
	repl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(repl) }()
	pfd := []unix.PollFd{{Fd: int32(in.notify), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 2000); err != nil || n == 0 {
		// The bind goes on waiting on a thread nobody will use; baton
		// exits at once anyway.
		return errors.New("no seccomp notification within 2s (user notification unsupported: gVisor?)")
	}
	var req notif
	if err := ioctl(in.notify, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req)); err != nil {
		return fmt.Errorf("SECCOMP_IOCTL_NOTIF_RECV: %w", err)
	}
	add := notifAddfd{ID: req.ID, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, Srcfd: uint32(repl), Newfd: uint32(req.Data.Args[0]), NewfdFlags: unix.O_CLOEXEC}
	aerr := ioctl(in.notify, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&add))
	resp := notifResp{ID: req.ID}
	if aerr != nil {
		resp.Error = -int32(unix.EADDRNOTAVAIL)
	}
	if err := ioctl(in.notify, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp)); err != nil {
		return fmt.Errorf("SECCOMP_IOCTL_NOTIF_SEND: %w", err)
	}
	if aerr != nil {
		return fmt.Errorf("SECCOMP_IOCTL_NOTIF_ADDFD (Linux 5.9+): %w", aerr)
	}
	select {
	case err = <-bound:
	case <-time.After(2 * time.Second):
		return errors.New("the answered bind did not return within 2s")
	}
	defer func() { _ = unix.Close(in.sock) }()
	var a, b unix.Stat_t
	if err != nil {
		return fmt.Errorf("answered bind failed: %w", err)
	}
	if unix.Fstat(in.sock, &a) != nil || unix.Fstat(repl, &b) != nil || a.Ino != b.Ino {
		return errors.New("SECCOMP_ADDFD_FLAG_SETFD did not replace the descriptor")
	}
	return nil
}
