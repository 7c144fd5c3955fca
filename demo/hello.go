package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// listenFdsStart is the first inherited listener (SD_LISTEN_FDS_START).
	listenFdsStart = 3
	// defaultDrain is the grace during which a retiring worker keeps
	// answering on its open connections with "Connection: close". PITFALLS.md
	// measured 0 failures with about 500 ms; it only has to outlast one
	// request round trip per keep-alive client, and it ends early once the
	// worker has no connection left.
	defaultDrain = 500 * time.Millisecond
	// shutdownTimeout bounds the wait, after the grace, for the requests
	// still being answered. baton sends SIGKILL after BATON_STOP_TIMEOUT
	// (8 s by default) anyway.
	shutdownTimeout = 5 * time.Second
	// defaultAddr is where a standalone hello listens without $PORT.
	defaultAddr = "127.0.0.1:8080"
)

// Hello runs the built-in demo worker (`baton hello`) and returns its exit
// status: 0 after a clean drain, 1 if it cannot serve, 2 for a usage error.
//
// Listeners: with LISTEN_FDS=n it serves on the inherited descriptors
// 3..3+n-1, and only if LISTEN_PID is its own pid (a mismatch is an error,
// never a reason to bind somewhere else, which is how gunicorn ends up
// silently serving 127.0.0.1:8000). Without LISTEN_FDS it listens itself on
// :$PORT, or on 127.0.0.1:8080. HELLO_UNCHANGED=1 plays an app that knows
// nothing of baton: it ignores LISTEN_FDS and NOTIFY_SOCKET, binds :$PORT
// itself and sends no READY=1 (for BATON_BIND=intercept, which gives it
// baton's socket and takes its listen() for readiness).
//
// Every response is 200 with X-Baton-Generation ($BATON_GENERATION, "0"
// outside baton), X-Baton-Pid and the body
// "hello from generation G worker W pid P\n", for any method and path.
//
// Readiness: READY=1 goes to $NOTIFY_SOCKET once the listeners are being
// served. HELLO_BOOT_DELAY (a duration) delays that, to play a slow boot.
//
// Drain, on SIGTERM, SIGINT or SIGQUIT (HELLO_DRAIN sets the grace, default
// 500ms; 0 gives what a plain http.Server.Shutdown does):
//
//  1. close the listeners: this worker stops accepting, and since the socket
//     is shared by every generation, connections still queued in the kernel
//     are accepted by the new generation instead;
//  2. keep answering requests on the connections already open, each response
//     with "Connection: close" (the connection closes after it), until none
//     is left or the grace is over; an idle connection is left open, since
//     its client may be sending a request on it at that very moment;
//  3. close the connections that stayed idle for the whole grace, wait for
//     the requests still being answered (5 s at most), then exit 0.
//
// A second signal cuts the grace short.
//
// HELLO_FAIL_AFTER (a duration) plays a release that breaks once it is up:
// that long after READY=1 the worker drains as above, unasked, and exits 1
// (what a canary or a bake is there to catch). It says STOPPING=1 first,
// unless HELLO_FAIL_QUIET=1.
//
// This is the recipe docs/protocol.md gives for a net/http server (demo's
// tests run it with net/http and check that it loses nothing). hello itself does
// not use net/http, which would make the baton binary 4 MB larger: it
// serves with a minimal HTTP/1.1 server of its own (helloServer), which
// knows each connection's state exactly, so the steps above are the same.
//
// Why not just call http.Server.Shutdown at once? Because it drops requests,
// in two ways, and neither can be fixed by the client without retrying:
//
//   - Shutdown closes every idle keep-alive connection immediately. An idle
//     connection is one the client has just got a response on and, under
//     load, is about to reuse: its next request may already be on the wire,
//     or written a microsecond after the close. The client then reads EOF
//     (our FIN arrived first) or ECONNRESET (the request reached a closed
//     socket, or the kernel reset a socket closed with unread data in its
//     receive queue) with no response byte at all. That is the keep-alive
//     close race, and HTTP/1.1 gives the server no way to close an idle
//     connection without it (RFC 9112 section 9.3.1 leaves recovery to
//     client retries, which are only safe for idempotent requests).
//   - Once Shutdown has begun, a connection that reads a complete request
//     drops it without a response: net/http's conn.serve checks
//     `if c.server.shuttingDown() { return }` right after readRequest (added
//     for golang/go#65802 so that Go clients can retry). That hits fresh
//     connections too: one accepted just before the listener closed, whose
//     request arrives a moment later, is read, then closed unanswered: EOF
//     with no bytes, on a connection that was never reused, so not even Go's
//     own client retries it.
//
// Both disappear when no request can arrive on a connection that gets closed:
// during the grace the server is not shutting down (only its listeners are
// closed), so every request read is answered, and "Connection: close" tells
// each client, inside a response it already has, not to reuse the connection;
// the client reconnects and lands on the new generation. By the time the idle
// connections are closed, only those that stayed idle for the whole grace
// remain, and under load there are none.
func Hello(args []string) int {
	// Subscribe before anything else: until then the Go runtime's default
	// for these signals is to exit with status 2, so a TERM that arrives
	// while we boot would not count as a clean stop.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT)
	defer signal.Stop(sigs)

	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), helloUsage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "hello: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}

	w, err := newHelloWorker(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hello: %v\n", err)
		return 2
	}
	return w.run(sigs)
}

const helloUsage = `usage: baton hello

The built-in demo worker: an HTTP server that drains correctly.
Listens on LISTEN_FDS (with LISTEN_PID = its pid), else on :$PORT or ` + defaultAddr + `.
Sends READY=1 to $NOTIFY_SOCKET. Drains on SIGTERM, SIGINT, SIGQUIT.

  HELLO_BOOT_DELAY   wait this long before serving and READY=1 (default 0)
  HELLO_DRAIN        grace for open connections after the stop signal (default 500ms)
  HELLO_FAIL_AFTER   this long after READY=1, drain unasked and exit 1 (a broken release)
  HELLO_FAIL_QUIET   1: fail without sending STOPPING=1 first (an app that does not say it is stopping)
  HELLO_UNCHANGED    1: an app that knows nothing of baton: bind :$PORT itself, ignore LISTEN_FDS and NOTIFY_SOCKET
`

// helloWorker is one run of Hello: its identity, knobs and state.
type helloWorker struct {
	gen, worker string
	pid         int
	bootDelay   time.Duration
	drain       time.Duration
	failAfter   time.Duration // HELLO_FAIL_AFTER, 0: never
	failQuiet   bool          // HELLO_FAIL_QUIET: fail without STOPPING=1
	notify      string        // NOTIFY_SOCKET
	unchanged   bool          // HELLO_UNCHANGED: no LISTEN_FDS, no NOTIFY_SOCKET
	getenv      func(string) string
}

func newHelloWorker(getenv func(string) string) (*helloWorker, error) {
	w := &helloWorker{
		gen:    envOr(getenv, "BATON_GENERATION", "0"),
		worker: envOr(getenv, "BATON_WORKER", "0"),
		pid:    os.Getpid(),
		drain:  defaultDrain,
		notify: getenv("NOTIFY_SOCKET"),
		getenv: getenv,
	}
	var err error
	if w.bootDelay, err = envDuration(getenv, "HELLO_BOOT_DELAY", 0); err != nil {
		return nil, err
	}
	if w.drain, err = envDuration(getenv, "HELLO_DRAIN", defaultDrain); err != nil {
		return nil, err
	}
	if w.failAfter, err = envDuration(getenv, "HELLO_FAIL_AFTER", 0); err != nil {
		return nil, err
	}
	switch v := getenv("HELLO_FAIL_QUIET"); v {
	case "", "0":
	case "1":
		w.failQuiet = true
	default:
		return nil, fmt.Errorf("HELLO_FAIL_QUIET: want 0 or 1, got %q", v)
	}
	switch v := getenv("HELLO_UNCHANGED"); v {
	case "", "0":
	case "1":
		w.unchanged, w.notify = true, ""
	default:
		return nil, fmt.Errorf("HELLO_UNCHANGED: want 0 or 1, got %q", v)
	}
	return w, nil
}

func (w *helloWorker) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hello: generation %s worker %s pid %d %s\n",
		w.gen, w.worker, w.pid, fmt.Sprintf(format, args...))
}

func (w *helloWorker) run(sigs <-chan os.Signal) int {
	if w.bootDelay > 0 {
		w.logf("booting for %v", w.bootDelay)
		t := time.NewTimer(w.bootDelay)
		select {
		case <-t.C:
		case sig := <-sigs:
			t.Stop()
			w.logf("stopped by %s while booting", sigName(sig))
			return 0
		}
	}

	lns, how, err := helloListeners(w.getenv, w.unchanged)
	if err != nil {
		w.logf("cannot serve: %v", err)
		return 1
	}

	srv := newHelloServer(w.gen, w.worker, w.pid, w.logf)
	serveErrs := make(chan error, len(lns))
	var serving sync.WaitGroup
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
		serving.Go(func() { serveErrs <- srv.serve(ln) })
	}

	// The listeners are being served (anything that connects from now on is
	// queued by the kernel and accepted), so this worker is ready.
	if err := sdNotify(w.notify, "READY=1"); err != nil {
		w.logf("%v", err)
	}
	w.logf("serving on %s (%s)", strings.Join(addrs, ", "), how)

	var fail <-chan time.Time
	if w.failAfter > 0 {
		t := time.NewTimer(w.failAfter)
		defer t.Stop()
		fail = t.C
	}
	var sig os.Signal
	failing := false
	select {
	case sig = <-sigs:
	case <-fail:
		failing = true
	case err := <-serveErrs:
		// serve returns only when its listener fails: nothing to drain.
		w.logf("serve: %v", err)
		for _, ln := range lns {
			_ = ln.Close() // exiting anyway; the error would add nothing
		}
		srv.close()
		return 1
	}

	// 1. From now on every response carries "Connection: close" (before the
	//    listeners close, so no connection accepted later escapes it).
	srv.startDrain()
	if !(failing && w.failQuiet) {
		_ = sdNotify(w.notify, "STOPPING=1") // informational; baton may be gone
	}

	// 2. Stop accepting. Closing our descriptor does not touch the shared
	//    socket (baton and the other generation hold it), so its accept queue
	//    survives and the new generation takes what is queued. (UnixListener
	//    from FileListener does not unlink the path on Close, either.)
	for _, ln := range lns {
		_ = ln.Close() // serve reports the close itself; nothing to add
	}
	// Wait for the serve loops: a connection accepted just before the close
	// is tracked by serve before it returns, so the count below is complete.
	serving.Wait()
	// Logged once no connection is accepted any more.
	if failing {
		w.logf("failing (HELLO_FAIL_AFTER=%v): draining, grace %v", w.failAfter, w.drain)
	} else {
		w.logf("draining on %s, grace %v", sigName(sig), w.drain)
	}

	// 3. Grace: answer on open connections until none is left or time is up.
	//    An idle connection is left open: its client may be sending a
	//    request on it right now, which will be answered (and the
	//    connection closed after it).
	grace := time.NewTimer(w.drain)
	defer grace.Stop()
wait:
	for srv.open() > 0 {
		select {
		case <-srv.zero:
		case <-grace.C:
			break wait
		case sig := <-sigs:
			w.logf("second %s: cutting the grace short", sigName(sig))
			break wait
		}
	}

	// 4. Only now close the connections that stayed idle for the whole
	//    grace, and wait for the few still answering.
	left := srv.open()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.shutdown(ctx); err != nil {
		w.logf("shutdown: %v", err)
		srv.close() // best effort; we exit 1 either way
		return 1
	}
	w.logf("exiting: %d requests served, %d connections left after the grace", srv.served.Load(), left)
	if failing {
		return 1
	}
	return 0
}

// helloListeners returns the listeners hello serves and how it got them.
// unchanged: never the inherited ones.
func helloListeners(getenv func(string) string, unchanged bool) ([]net.Listener, string, error) {
	if !unchanged {
		lns, err := inheritedListeners(getenv)
		if err != nil {
			return nil, "", err
		}
		if lns != nil {
			return lns, "LISTEN_FDS", nil
		}
	}
	addr := defaultAddr
	if port := getenv("PORT"); port != "" {
		addr = ":" + port
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	return []net.Listener{ln}, "own socket", nil
}

// inheritedListeners turns the descriptors announced by LISTEN_FDS into
// listeners, as sd_listen_fds(unset_environment=1) does. It returns nil, nil
// when LISTEN_FDS is unset. LISTEN_PID must be this process's pid: anything
// else means the variables were meant for another process, and the
// descriptors are not ours to use.
//
// About O_NONBLOCK, which must never change on the shared socket (every
// generation shares its one open file description): baton creates the socket
// non-blocking. os.NewFile sees that flag and records that it did not set it
// itself, so the Fd() that net.FileListener calls inside does not switch the
// description to blocking (Fd() only does that for files Go made non-blocking
// itself, or for net.Conn.File / TCPListener.File results). net.FileListener
// then dups the descriptor (close-on-exec) and sets O_NONBLOCK on the dup,
// which on an already non-blocking description changes nothing. Nothing here
// calls Fd() or touches the flags otherwise; demo's tests check that the
// flags are the same afterwards.
func inheritedListeners(getenv func(string) string) ([]net.Listener, error) {
	nfds := getenv("LISTEN_FDS")
	if nfds == "" {
		return nil, nil
	}
	if pid := getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
		return nil, fmt.Errorf("LISTEN_PID=%q is not this process (%d): the LISTEN_FDS descriptors are not ours", pid, os.Getpid())
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: want a positive count", nfds)
	}
	names := strings.Split(getenv("LISTEN_FDNAMES"), ":")
	if len(names) != n {
		names = nil
	}
	var lns []net.Listener
	var skipped []string
	for i := range n {
		fd := listenFdsStart + i
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if names != nil {
			name = names[i]
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		// The listener holds its own dup; drop fd 3+i so it cannot leak
		// into anything we might start.
		_ = f.Close() // closing our copy of an inherited fd cannot fail usefully
		if err != nil {
			// A datagram socket (BATON_LISTEN=udp://...) is not for HTTP.
			skipped = append(skipped, fmt.Sprintf("fd %d (%s): %v", fd, name, err))
			continue
		}
		lns = append(lns, ln)
	}
	// As sd_listen_fds(1): these variables describe this process only.
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		_ = os.Unsetenv(k) // cannot fail for a valid name
	}
	if len(lns) == 0 {
		return nil, fmt.Errorf("no stream listener among LISTEN_FDS=%d: %s", n, strings.Join(skipped, "; "))
	}
	for _, s := range skipped {
		fmt.Fprintf(os.Stderr, "hello: skipping %s\n", s)
	}
	return lns, nil
}

// sigName returns "SIGTERM" rather than os.Signal's "terminated".
func sigName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if name := unix.SignalName(s); name != "" {
			return name
		}
	}
	return sig.String()
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// envDuration reads a duration in Go syntax or bare integer seconds, as
// baton's own variables accept.
func envDuration(getenv func(string) string, key string, def time.Duration) (time.Duration, error) {
	v := getenv(key)
	if v == "" {
		return def, nil
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration such as 500ms or 2s", key, v)
	}
	return d, nil
}
