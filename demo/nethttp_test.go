package demo

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The net/http side of the demo lives in the tests: `baton hello` is a
// minimal server of its own (helloServer) so that baton stays small, but the
// documented drain recipe (docs/protocol.md) is for net/http, and the naive
// control is http.Server.Shutdown. Both run here as workers on the same
// shared socket as hello, under the same load.

// netHTTPHello is the hello response as a net/http handler: the same
// headers and body as helloServer.
type netHTTPHello struct {
	gen, pid, length []string
	body             []byte
	draining         atomic.Bool
}

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	connClose = []string{"close"}
)

func newNetHTTPHello(gen, worker string, pid int) *netHTTPHello {
	body := fmt.Sprintf("hello from generation %s worker %s pid %d\n", gen, worker, pid)
	return &netHTTPHello{
		gen:    []string{gen},
		pid:    []string{strconv.Itoa(pid)},
		length: []string{strconv.Itoa(len(body))},
		body:   []byte(body),
	}
}

func (h *netHTTPHello) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr["X-Baton-Generation"] = h.gen
	hdr["X-Baton-Pid"] = h.pid
	hdr["Content-Type"] = textPlain
	hdr["Content-Length"] = h.length
	if h.draining.Load() {
		hdr["Connection"] = connClose
	}
	_, _ = w.Write(h.body)
}

// recipeWorker is docs/protocol.md's "How to drain a Go HTTP server without
// losing requests", line for line, on the hello handler: the documented
// recipe, kept honest by TestRecipeDrainLosesNothing.
func recipeWorker() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT) // first thing in main

	w, err := newHelloWorker(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recipe:", err)
		return 2
	}
	lns, _, err := helloListeners(os.Getenv, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recipe:", err)
		return 1
	}
	ln := lns[0]
	app := newNetHTTPHello(w.gen, w.worker, w.pid)

	var draining atomic.Bool
	var open sync.WaitGroup // connections not closed yet
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close") // this client: reconnect for your next request
			}
			app.ServeHTTP(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Done()
			}
		},
	}
	served := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(served) }()
	if err := sdNotify(w.notify, "READY=1"); err != nil {
		fmt.Fprintln(os.Stderr, "recipe:", err)
	}

	<-sigs
	draining.Store(true)
	ln.Close() // 1. stop accepting; the new generation takes the queue
	<-served   //    Serve has counted every connection it accepted
	gone := make(chan struct{})
	go func() { open.Wait(); close(gone) }()
	select { // 2. keep answering, with Connection: close, until the clients are gone (at most 500 ms)
	case <-gone:
	case <-time.After(500 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil { // 3. only now: nothing is left to race
		fmt.Fprintln(os.Stderr, "recipe:", err)
		return 1
	}
	return 0
}

// The net/http recipe of docs/protocol.md loses nothing either, in the same
// swap run as TestDrainUnderLoadLosesNothing (and TestNaiveShutdownControl,
// which shows that this run does catch losses).
func TestRecipeDrainLosesNothing(t *testing.T) {
	checkLossless(t, swapRun{role: "recipe", workers: 2, swaps: 10, pace: 100 * time.Millisecond})
}
