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

	"github.com/baton-init/baton/internal/netns"
)

// roleEnv makes the test binary play a part when the tests re-execute it
// (the containerd/tableflip pattern): "hello" runs Hello, "naive" the naive
// control worker, "recipe" the net/http recipe of docs/protocol.md
// (nethttp_test.go), "fakebaton" a stand-in for baton (run_test.go).
const roleEnv = "DEMO_TEST_ROLE"

// shimPID as LISTEN_PID asks the re-executed binary to set LISTEN_PID to its
// own pid before running the worker, which is what baton's shim does
// (exec.Cmd cannot know the child's pid before it starts).
const shimPID = "shim"

func TestMain(m *testing.M) {
	role := os.Getenv(roleEnv)
	if role == "" {
		// Off the host's loopback (as root): these tests open thousands
		// of connections a second (see package netns).
		os.Exit(netns.Main(m, ""))
	}
	os.Unsetenv(roleEnv)
	if os.Getenv("LISTEN_PID") == shimPID {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "hello" { // as `baton hello` would be called
		args = args[1:]
	}
	switch role {
	case "hello":
		os.Exit(Hello(args))
	case "naive":
		os.Exit(naiveWorker())
	case "recipe":
		os.Exit(recipeWorker())
	case "fakebaton":
		os.Exit(fakeBaton(args))
	}
	fmt.Fprintf(os.Stderr, "unknown %s=%q\n", roleEnv, role)
	os.Exit(3)
}

// naiveWorker is the control: the same response (as a net/http handler) and
// listeners as Hello, but on SIGTERM it calls http.Server.Shutdown at once, the way most Go servers
// are written. It shows what the drain in Hello is for. On exit it reports
// how its connections ended (see connAudit).
func naiveWorker() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM)
	w, err := newHelloWorker(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "naive:", err)
		return 2
	}
	lns, _, err := helloListeners(os.Getenv, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "naive:", err)
		return 1
	}
	audit := newConnAudit()
	h := newNetHTTPHello(w.gen, w.worker, w.pid)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			audit.served(r)
			h.ServeHTTP(rw, r)
		}),
		ConnContext: audit.connContext,
		ConnState:   audit.connState,
	}
	for _, ln := range lns {
		go srv.Serve(ln)
	}
	if err := sdNotify(w.notify, "READY=1"); err != nil {
		fmt.Fprintln(os.Stderr, "naive:", err)
	}
	<-sigs
	audit.shutdown.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "naive:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "naive: dropped=%d idle-closed=%d\n", audit.dropped.Load(), audit.idleClosed.Load())
	return 0
}

// connAudit follows each connection of the naive worker through ConnState
// and counts, after Shutdown began, the two ways Shutdown ends one badly:
// dropped, a request was read (StateActive) but the handler never ran
// (conn.serve's shuttingDown check after readRequest); idleClosed, a
// keep-alive connection closed while idle, the client's next request
// possibly on its way.
type connAudit struct {
	mu                  sync.Mutex
	conns               map[net.Conn]*connTrack
	shutdown            atomic.Bool
	dropped, idleClosed atomic.Int64
}

type connTrack struct {
	last          http.ConnState
	reads, served int
}

type auditKey struct{}

func newConnAudit() *connAudit { return &connAudit{conns: make(map[net.Conn]*connTrack)} }

func (a *connAudit) connContext(ctx context.Context, c net.Conn) context.Context {
	a.mu.Lock()
	defer a.mu.Unlock()
	tr := &connTrack{}
	a.conns[c] = tr
	return context.WithValue(ctx, auditKey{}, tr)
}

func (a *connAudit) served(r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.Context().Value(auditKey{}).(*connTrack).served++
}

func (a *connAudit) connState(c net.Conn, st http.ConnState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tr := a.conns[c]
	if tr == nil {
		return
	}
	switch st {
	case http.StateActive:
		tr.reads++
	case http.StateClosed, http.StateHijacked:
		if a.shutdown.Load() {
			if tr.reads > tr.served {
				a.dropped.Add(1)
			} else if tr.last == http.StateIdle {
				a.idleClosed.Add(1)
			}
		}
		delete(a.conns, c)
	}
	tr.last = st
}

// testDeadline bounds every wait for an event in these tests; it is a
// failure bound, never a reason to pass.
const testDeadline = 20 * time.Second
