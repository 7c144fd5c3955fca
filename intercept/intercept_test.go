//go:build linux

package intercept

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

func TestMatch(t *testing.T) {
	ap := netip.MustParseAddrPort
	hs := []held{
		{kind: KindTCP, addr: ap("127.0.0.1:8080")},
		{kind: KindUDP, addr: ap("0.0.0.0:8080")},
		{kind: KindTCP, addr: ap("[::]:9090")},
		{kind: KindUnixStream, path: []byte("/run/app.sock")},
		{kind: KindUnixStream, path: []byte("\x00abs")},
	}
	ip := func(s string) Address { return Address{IP: ap(s)} }
	path := func(s string) Address { return Address{Unix: true, Path: []byte(s)} }
	for _, c := range []struct {
		k    Kind
		a    Address
		want int
	}{
		{KindTCP, ip("127.0.0.1:8080"), 0},
		{KindTCP, ip("0.0.0.0:8080"), 0},
		{KindTCP, ip("[::]:8080"), 0},
		{KindTCP, ip("[::ffff:127.0.0.1]:8080"), 0},
		{KindTCP, ip("10.0.0.1:8080"), -1}, // neither the address nor a wildcard
		{KindUDP, ip("[::]:8080"), 1},
		{KindUDP, ip("127.0.0.1:8080"), -1}, // held 0.0.0.0 is not a wildcard for the app
		{KindTCP, ip("0.0.0.0:9090"), 2},
		{KindTCP, ip("[::1]:9090"), -1},
		{KindTCP, ip("0.0.0.0:0"), -1},
		{KindTCP, ip("0.0.0.0:8081"), -1},
		{KindUDP, ip("0.0.0.0:9090"), -1}, // kinds must agree
		{KindUnixStream, path("/run/app.sock"), 3},
		{KindUnixStream, path("\x00abs"), 4},
		{KindUnixStream, path("/run/other.sock"), -1},
		{KindUnixDgram, path("/run/app.sock"), -1},
		{KindTCP, path("/run/app.sock"), -1},
	} {
		if got := match(hs, c.k, c.a); got != c.want {
			t.Errorf("match(%v, %+v) = %d, want %d", c.k, c.a, got, c.want)
		}
	}
}

func TestDecodeSockaddr(t *testing.T) {
	rel := append([]byte{unix.AF_UNIX, 0}, "x/../app.sock\x00junk"...)
	a, ok := decodeSockaddr(rel, "/srv")
	if !ok || string(a.Path) != "/srv/app.sock" {
		t.Fatalf("relative unix path: %q %v", a.Path, ok)
	}
	in4 := []byte{unix.AF_INET, 0, 0x1f, 0x90, 0, 0, 0, 0}
	if a, ok := decodeSockaddr(in4, ""); !ok || a.IP != netip.MustParseAddrPort("0.0.0.0:8080") {
		t.Fatalf("inet: %v %v", a.IP, ok)
	}
	if _, ok := decodeSockaddr([]byte{unix.AF_INET, 0, 1}, ""); ok {
		t.Fatal("short sockaddr accepted")
	}
}

func TestProbe(t *testing.T) {
	if err := Probe(); err != nil {
		t.Fatalf("Probe on this kernel: %v", err)
	}
}

// filtered runs f on a thread of its own under the filter, serving its
// notifications with baton's sockets fds; the thread ends with f.
func filtered(t *testing.T, fds []int, onListen func(), f func()) {
	t.Helper()
	notify := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends here
		fd, err := Install()
		if err != nil {
			t.Error(err)
			notify <- -1
			return
		}
		notify <- fd
		f()
	}()
	fd := <-notify
	if fd < 0 {
		t.FailNow()
	}
	w, err := NewWorker(unix.Getpid(), fds, onListen, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	w.notify = fd
	go w.Serve()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the filtered thread did not finish")
	}
}

func ino(t *testing.T, fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestAdopt: a bind to the held address gets baton's socket at the app's
// descriptor (blocking mode and close-on-exec as the app had them), a
// listen on it answers 0 and leaves the backlog, and a bind to port 0 or
// another port runs as usual.
func TestAdopt(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	f, _ := ln.(*net.TCPListener).File() // blocking now; the app decides below
	defer f.Close()
	hfd := int(f.Fd())
	if err := unix.SetNonblock(hfd, true); err != nil {
		t.Fatal(err)
	}
	listened := make(chan struct{}, 2)
	var appFD, other, zero int
	var bindErr, listenErr, otherErr, zeroErr error
	filtered(t, []int{hfd}, func() { listened <- struct{}{} }, func() {
		appFD, _ = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0) // blocking, no cloexec
		bindErr = unix.Bind(appFD, &unix.SockaddrInet6{Port: port})
		listenErr = unix.Listen(appFD, 5)
		other, _ = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		otherErr = unix.Bind(other, &unix.SockaddrInet4{Port: 0, Addr: [4]byte{127, 0, 0, 1}})
		zero, _ = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		zeroErr = unix.Bind(zero, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	})
	defer unix.Close(appFD)
	defer unix.Close(other)
	defer unix.Close(zero)
	if bindErr != nil || listenErr != nil {
		t.Fatalf("bind: %v, listen: %v", bindErr, listenErr)
	}
	if ino(t, appFD) != ino(t, hfd) {
		t.Fatal("the app's descriptor is not baton's socket after bind")
	}
	fl, _ := unix.FcntlInt(uintptr(hfd), unix.F_GETFL, 0)
	if fl&unix.O_NONBLOCK != 0 {
		t.Error("baton's socket stayed non-blocking for a blocking app")
	}
	if fdfl, _ := unix.FcntlInt(uintptr(appFD), unix.F_GETFD, 0); fdfl&unix.FD_CLOEXEC != 0 {
		t.Error("close-on-exec set though the app's socket had none")
	}
	select {
	case <-listened:
	default:
		t.Error("listen on the adopted socket was not reported")
	}
	// The backlog is baton's (Go's somaxconn), not 5: more than 5
	// connections wait in the queue.
	var conns []net.Conn
	for range 8 {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v (backlog reset by listen(5)?)", len(conns), err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Close()
	}
	if otherErr != nil || ino(t, other) == ino(t, hfd) {
		t.Errorf("bind to port 0: %v, or got baton's socket", otherErr)
	}
	sa, _ := unix.Getsockname(other)
	if sa.(*unix.SockaddrInet4).Port == 0 {
		t.Error("bind to port 0 did not run")
	}
	if zeroErr != nil || ino(t, zero) == ino(t, hfd) {
		t.Errorf("UDP bind to a TCP listener's port: %v, or got baton's socket", zeroErr)
	}
}
