//go:build linux

package intercept

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Kernel structures (linux/seccomp.h); x/sys has the ioctl numbers only.
type seccompData struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

type notif struct {
	ID    uint64
	PID   uint32
	Flags uint32
	Data  seccompData
}

type notifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

type notifAddfd struct {
	ID         uint64
	Flags      uint32
	Srcfd      uint32
	Newfd      uint32
	NewfdFlags uint32
}

// maxSockaddr is sizeof(struct sockaddr_storage).
const maxSockaddr = 128

// Worker is one worker's listener and baton's sockets for it.
type Worker struct {
	notify int
	held   []held
	// adopted and listened are by index in held: what the worker's
	// processes bound (or listened on) and what they listened on.
	adopted, listened []bool
	ready             bool
	onListen          func()
	log               zerolog.Logger
	pid               int
}

// NewWorker prepares to serve the worker pid with baton's sockets fds,
// which it duplicates at once: the caller may close its own afterwards.
// onListen is called once, from Serve's goroutine, when the worker's
// processes have listened on every TCP socket of baton's they adopted.
// Give it the listener with Receive (or set it in tests), then Serve.
func NewWorker(pid int, fds []int, onListen func(), log zerolog.Logger) (*Worker, error) {
	w := &Worker{notify: -1, pid: pid, onListen: onListen, log: log}
	for _, fd := range fds {
		h, err := heldOf(fd)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("listener: %w", err)
		}
		if h.kind != KindUDP {
			// A copy of its own: the loop may close its descriptor (steer
			// mode releases a generation) while a notification is being
			// answered, and the number could then name another file.
			if h.fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
				w.close()
				return nil, fmt.Errorf("dup listener: %w", err)
			}
			h.dup = true
		}
		// A UDP socket is not copied: in steer mode it leaves the kernel's
		// reuseport group only at its last close, which must be baton's
		// own (handoff.Steering.Release). Its number is used as is: the
		// loop closes it only once the generation's process groups are
		// empty, and ADDFD fails for a caller no longer waiting. A
		// process that left its group (setsid) and binds after that could
		// get whatever the number names then: not a security boundary.
		w.held = append(w.held, h)
	}
	w.adopted = make([]bool, len(w.held))
	w.listened = make([]bool, len(w.held))
	return w, nil
}

func (w *Worker) close() {
	for _, h := range w.held {
		if h.dup {
			_ = unix.Close(h.fd)
		}
	}
	if w.notify >= 0 {
		_ = unix.Close(w.notify)
	}
}

// Run receives the worker's listener over sock (see Send), closes sock
// and serves; what it holds is closed when it returns.
func (w *Worker) Run(sock int) {
	fd, err := Receive(sock)
	_ = unix.Close(sock)
	if err != nil {
		// The shim exits without exec: the loop sees a failed worker.
		w.log.Warn().Err(err).Int("pid", w.pid).Msg("bind interception failed")
		w.close()
		return
	}
	w.notify = fd
	w.Serve()
}

// Serve answers the worker's notifications until no process with its
// filter is left, then closes everything it holds. It parks in the
// runtime's poller between notifications.
func (w *Worker) Serve() {
	if err := unix.SetNonblock(w.notify, true); err != nil {
		w.log.Warn().Err(err).Int("pid", w.pid).Msg("bind interception failed")
	}
	f := os.NewFile(uintptr(w.notify), "seccomp")
	w.notify = -1 // f owns it now
	defer func() {
		_ = f.Close()
		w.close()
	}()
	rc, err := f.SyscallConn()
	if err != nil {
		w.log.Warn().Err(err).Int("pid", w.pid).Msg("bind interception failed")
		return
	}
	_ = rc.Read(func(fd uintptr) bool { return w.drain(int(fd)) })
}

// drain answers every pending notification; true once the filter has no
// process left (or the descriptor fails), false to wait for more.
func (w *Worker) drain(fd int) bool {
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return true
		case n == 0:
			return false
		case pfd[0].Revents&unix.POLLIN == 0:
			return true // POLLHUP: every process with the filter is gone
		}
		var req notif
		if err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req)); err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
				continue // the caller was interrupted, or is gone
			}
			return true
		}
		w.answer(fd, &req)
	}
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// answer decides one notification; every path answers it exactly once
// (or finds the caller gone).
func (w *Worker) answer(fd int, req *notif) {
	resp := notifResp{ID: req.ID, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	switch req.Data.Nr {
	case unix.SYS_BIND:
		if w.bind(fd, req) {
			resp.Flags = 0
		}
	case unix.SYS_LISTEN:
		if w.listen(fd, req) {
			resp.Flags = 0
		}
	}
	_ = ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp)) // ENOENT: the caller is gone
	if resp.Flags == 0 && req.Data.Nr == unix.SYS_LISTEN && !w.ready && w.allListened() {
		w.ready = true
		if w.onListen != nil {
			w.onListen()
		}
	}
}

// readMem fills buf from the caller's memory at addr. process_vm_readv
// first; where it is refused with EPERM or ENOSYS, /proc/PID/mem. The
// kernel checks the same ptrace permission for both, but a seccomp profile
// sees only the system call: Docker 20.10's default profile denies
// process_vm_readv without CAP_SYS_PTRACE, even between processes of one
// user, and cannot tell a pread of /proc/PID/mem from any other. step
// names what failed, for the log.
func readMem(pid int, proc string, addr uintptr, buf []byte) (step string, err error) {
	local := []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}
	remote := []unix.RemoteIovec{{Base: addr, Len: len(buf)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err == nil && n == len(buf) {
		return "", nil
	}
	if err != unix.EPERM && err != unix.ENOSYS {
		if err == nil {
			err = fmt.Errorf("read %d of %d bytes", n, len(buf))
		}
		return "vmreadv", err
	}
	f, err := os.Open(proc + "/mem")
	if err != nil {
		return "procmem", err
	}
	defer f.Close()
	if n, err := f.ReadAt(buf, int64(addr)); err != nil || n != len(buf) {
		return "procmem", err
	}
	return "", nil
}

// valid reports whether the notification's caller still waits for it: a
// pid read from before this point names the caller.
func valid(fd int, id uint64) bool {
	return ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// bind installs baton's socket for a bind to a held address; false: let
// the kernel run the bind.
func (w *Worker) bind(fd int, req *notif) bool {
	pid := int(req.PID)
	appFD := int(int32(req.Data.Args[0]))
	size := int(int32(req.Data.Args[2]))
	if appFD < 0 || size < 2 || size > maxSockaddr {
		return false
	}
	proc, err := procDir(pid)
	if err != nil {
		w.log.Debug().Err(err).Int("pid", pid).Str("step", "procdir").Msg("bind not adopted")
		return false
	}
	buf := make([]byte, size)
	if step, err := readMem(pid, proc, uintptr(req.Data.Args[1]), buf); err != nil {
		w.log.Debug().Err(err).Int("pid", pid).Str("step", step).Msg("bind not adopted")
		return false
	}
	name := make([]byte, 32)
	n, err := unix.Getxattr(proc+"/fd/"+strconv.Itoa(appFD), "system.sockprotoname", name)
	if err != nil {
		w.log.Debug().Err(err).Int("pid", pid).Str("step", "xattr").Msg("bind not adopted")
		return false
	}
	kind := kindOfProto(strings.TrimRight(string(name[:n]), "\x00"))
	cwd, _ := os.Readlink(proc + "/cwd") // only for a relative unix path
	flags, ferr := fdFlags(proc, appFD)
	if !valid(fd, req.ID) {
		return false // what was read may belong to another process
	}
	addr, ok := decodeSockaddr(buf, cwd)
	if !ok || ferr != nil {
		w.log.Debug().Err(ferr).Int("pid", pid).Str("step", "decode").Msg("bind not adopted")
		return false
	}
	i := match(w.held, kind, addr)
	if i < 0 {
		return false
	}
	h := w.held[i]
	if kind == KindTCP || kind == KindUDP || kind == KindUnixStream {
		// The open file description is shared with baton and every
		// worker: it takes the app's blocking mode (package doc).
		if err := unix.SetNonblock(h.fd, flags&unix.O_NONBLOCK != 0); err != nil {
			w.log.Warn().Err(err).Int("pid", pid).Msg("bind interception failed")
			return false
		}
	}
	add := notifAddfd{ID: req.ID, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, Srcfd: uint32(h.fd), Newfd: uint32(appFD)}
	if flags&unix.O_CLOEXEC != 0 {
		add.NewfdFlags = unix.O_CLOEXEC
	}
	if err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&add)); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.log.Warn().Err(err).Int("pid", pid).Msg("bind interception failed")
		}
		return false
	}
	w.adopted[i] = true
	w.log.Debug().Int("pid", pid).Int("fd", appFD).Str("addr", addrString(addr)).Msg("bind adopted")
	return true
}

// listen answers 0 for a listen on one of baton's sockets, leaving its
// backlog alone.
func (w *Worker) listen(fd int, req *notif) bool {
	appFD := int(int32(req.Data.Args[0]))
	if appFD < 0 {
		return false
	}
	proc, err := procDir(int(req.PID))
	if err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(proc+"/fd/"+strconv.Itoa(appFD), &st); err != nil {
		return false
	}
	if !valid(fd, req.ID) {
		return false
	}
	for i, h := range w.held {
		if h.ino == st.Ino && (h.kind == KindTCP || h.kind == KindUnixStream) {
			w.adopted[i] = true // also a descriptor from LISTEN_FDS
			w.listened[i] = true
			return true
		}
	}
	return false
}

// allListened: every TCP socket adopted was listened on, and there is one.
func (w *Worker) allListened() bool {
	any := false
	for i, h := range w.held {
		if h.kind != KindTCP || !w.adopted[i] {
			continue
		}
		if !w.listened[i] {
			return false
		}
		any = true
	}
	return any
}

// procOwn: /proc shows baton's own PID namespace (a container's /proc);
// not so under `unshare -p` without --mount-proc, or the test harness.
var procOwn = sync.OnceValue(func() bool {
	self, err := os.Readlink("/proc/self")
	return err == nil && self == strconv.Itoa(os.Getpid())
})

// procDir is /proc's directory for the process baton knows as pid. Where
// /proc belongs to another PID namespace, a pidfd's fdinfo names the pid
// as /proc sees it. The caller checks the notification is still valid
// after reading there, so a reused pid is not believed.
func procDir(pid int) (string, error) {
	if procOwn() {
		return "/proc/" + strconv.Itoa(pid), nil
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		// Not a thread group leader (EINVAL; ENOENT on recent kernels):
		// the bind came from another thread (Go, Node's libuv); Linux
		// 6.9+ opens a thread's pidfd.
		pfd, err = unix.PidfdOpen(pid, unix.PIDFD_THREAD)
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(pfd)
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pfd))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return "/proc/" + strconv.Itoa(n), nil
			}
		}
	}
	return "", errors.New("the process is not in /proc's PID namespace")
}

// fdFlags reads the flags line of /proc/PID/fdinfo/FD (octal; O_CLOEXEC
// included when the descriptor has FD_CLOEXEC).
func fdFlags(proc string, fd int) (int, error) {
	b, err := os.ReadFile(proc + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return int(n), err
		}
	}
	return 0, errors.New("no flags in fdinfo")
}

func addrString(a Address) string {
	if a.Unix {
		return strings.ReplaceAll(string(a.Path), "\x00", "@")
	}
	return a.IP.String()
}
