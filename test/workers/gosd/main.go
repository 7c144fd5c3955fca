// Command gosd is a test worker for baton written the way a third-party Go
// service would be: it takes its listener with go-systemd's activation
// package, reports readiness with go-systemd's daemon package, and drains
// correctly on SIGTERM.
//
// Protocol (the same for every worker under test/workers):
//
//	GET any path -> 200
//	  X-Baton-Generation: $BATON_GENERATION
//	  X-Baton-Worker:     $BATON_WORKER
//	  X-Baton-Pid:        pid of the process that answered
//	  X-Worker-Kind:      gosd
//	  X-Local-Addr:       local address of the accepted connection (host:port)
//	  body: "hello from generation G worker W pid P kind gosd local A\n"
//	?sleep=MS delays the answer by MS milliseconds (an in-flight request).
//
// Drain on SIGTERM: close the listener (stop accepting; the shared socket
// and its accept queue stay open in baton), answer every request that still
// arrives on an open connection with "Connection: close" for WORKER_GRACE_MS
// (default 500), then http.Server.Shutdown (closes idle connections, waits
// for the active ones, at most 5 s) and exit 0.
//
// With no listener from activation (LISTEN_PID not equal to our pid, no
// LISTEN_FDS) it exits 3 with a message instead of binding anything.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

const kind = "gosd"

func main() {
	// Subscribe before anything else so an early TERM is a drain, not a crash.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	grace := 500 * time.Millisecond
	if v := os.Getenv("WORKER_GRACE_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			fatal(2, "WORKER_GRACE_MS=%q: want a non-negative integer", v)
		}
		grace = time.Duration(ms) * time.Millisecond
	}

	// Captured before activation unsets them, for the error message.
	listenPID, listenFDs := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	listeners, err := activation.Listeners()
	if err != nil {
		fatal(3, "activation.Listeners: %v", err)
	}
	if len(listeners) == 0 || listeners[0] == nil {
		fatal(3, "no listener from socket activation (LISTEN_PID=%q, our pid %d, LISTEN_FDS=%q): "+
			"fd 3 is not ours or not a socket; refusing to bind anything else",
			listenPID, os.Getpid(), listenFDs)
	}
	ln := listeners[0]
	// Any further listeners (LISTEN_FDS>1) are not used by this worker.
	for _, l := range listeners[1:] {
		if l != nil {
			l.Close()
		}
	}

	gen, worker := os.Getenv("BATON_GENERATION"), os.Getenv("BATON_WORKER")
	pid := strconv.Itoa(os.Getpid())
	var draining atomic.Bool

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ms, err := strconv.Atoi(r.URL.Query().Get("sleep")); err == nil && ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		local := ""
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local = a.String()
		}
		h := w.Header()
		h.Set("X-Baton-Generation", gen)
		h.Set("X-Baton-Worker", worker)
		h.Set("X-Baton-Pid", pid)
		h.Set("X-Worker-Kind", kind)
		h.Set("X-Local-Addr", local)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		if draining.Load() {
			// Read after the response is sent: the server closes the
			// connection, so the client reconnects to the next generation.
			h.Set("Connection", "close")
		}
		fmt.Fprintf(w, "hello from generation %s worker %s pid %s kind %s local %s\n", gen, worker, pid, kind, local)
	})

	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	// Serve is running (the listener was already listening in baton, so
	// connections queue until Accept); now we are ready.
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintf(os.Stderr, "gosd: sd_notify READY=1: %v\n", err)
	} else if !ok {
		fmt.Fprintln(os.Stderr, "gosd: NOTIFY_SOCKET not set, READY=1 not sent")
	}

	select {
	case err := <-serveErr:
		fatal(1, "serve: %v", err)
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "gosd: pid %s gen %s: %v, draining for %v\n", pid, gen, s, grace)
	}

	// 1. Stop accepting. Only this process's descriptor is closed; the
	// socket and its queue live on in baton for the next generation.
	draining.Store(true)
	ln.Close()
	<-serveErr // Serve returns once Accept fails on the closed listener.

	// 2. Keep answering on open connections, with Connection: close.
	// (Not srv.SetKeepAlivesEnabled(false): it closes idle connections at
	// once, which races with clients reusing them.)
	t := time.NewTimer(grace)
	select {
	case <-t.C:
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "gosd: second %v, ending the grace period\n", s)
	}

	// 3. Close what is idle, wait for what is active.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "gosd: shutdown: %v\n", err)
		srv.Close()
	}
	fmt.Fprintf(os.Stderr, "gosd: pid %s gen %s: drained, exiting 0\n", pid, gen)
}

func fatal(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gosd: "+format+"\n", args...)
	os.Exit(code)
}
