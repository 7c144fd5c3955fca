package demo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// serve runs handler on a fresh 127.0.0.1 listener for the test's duration.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// serveHello runs hello's own server (helloServer) on a fresh 127.0.0.1
// listener for the test's duration.
func serveHello(t testing.TB, gen string) (string, *helloServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHelloServer(gen, "0", 42, t.Logf)
	srv.changed = make(chan struct{}, 1)
	done := make(chan struct{})
	go func() { defer close(done); srv.serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done; srv.close() })
	return ln.Addr().String(), srv
}

// BenchmarkLoad measures how many requests per second Load drives against
// the hello server in the same process (client and server share the CPUs),
// and, for comparison, against the same response from net/http.
func BenchmarkLoad(b *testing.B) {
	for _, server := range []string{"hello", "net/http"} {
		for _, ka := range []float64{1, 0.5, 0} {
			b.Run(fmt.Sprintf("server=%s/keepalive=%v", server, ka), func(b *testing.B) {
				benchLoad(b, server, ka)
			})
		}
	}
}

func benchLoad(b *testing.B, server string, ka float64) {
	addr := serve(b, newNetHTTPHello("1", "0", 1))
	if server == "hello" {
		addr, _ = serveHello(b, "1")
	}
	var total int64
	var elapsed time.Duration
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		r := Load(ctx, LoadConfig{Addr: addr, Clients: 16, KeepAlive: ka, Timeout: 5 * time.Second})
		cancel()
		if r.Failures != 0 {
			b.Fatalf("%d failures: %v", r.Failures, r.Errors)
		}
		total += r.Requests
		elapsed += r.Elapsed
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "req/s")
}

// rawServer accepts connections and hands each to handle, counting the
// requests it reads.
func rawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var reqs atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c), &reqs)
			}()
		}
	}()
	return ln.Addr().String(), &reqs
}

// readReq reads one request (and its body) and counts it.
func readReq(br *bufio.Reader, reqs *atomic.Int64) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, req.Body)
	reqs.Add(1)
	return true
}

const okResponse = "HTTP/1.1 200 OK\r\nX-Baton-Generation: 9\r\nContent-Length: 3\r\n\r\nok\n"

// one sends a single request from a fresh client and returns its kind
// ("" for success) and the client, for more requests on its connection.
func one(t *testing.T, c *loadClient) string {
	t.Helper()
	before := c.kinds
	c.do()
	for i := range c.kinds {
		if c.kinds[i] != before[i] {
			return Kinds[i]
		}
	}
	return ""
}

func TestClassify(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := closed.Addr().String()
	closed.Close()

	resetAddr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
		readReq(br, reqs)
		c.(*net.TCPConn).SetLinger(0) // close with RST
	})
	eofAddr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
		readReq(br, reqs) // then close with FIN, no response
	})
	truncAddr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
		readReq(br, reqs)
		io.WriteString(c, okResponse[:len(okResponse)-2]) // body cut short
	})
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	hangAddr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
		readReq(br, reqs)
		<-hang
	})
	statusAddr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	okAddr, _ := serveHello(t, "5")
	netHTTPAddr := serve(t, newNetHTTPHello("5", "0", 42))

	for _, tc := range []struct {
		name, addr, want string
	}{
		{"refused", refusedAddr, KindRefused},
		{"reset", resetAddr, KindReset},
		{"eof", eofAddr, KindEOF},
		{"truncated body", truncAddr, KindEOF},
		{"timeout", hangAddr, KindTimeout},
		{"status", statusAddr, KindStatus},
		{"ok", okAddr, ""},
		{"ok from net/http", netHTTPAddr, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newLoadClient(tc.addr, false, 200*time.Millisecond, true, time.Now())
			if got := one(t, c); got != tc.want {
				t.Errorf("kind %q, want %q (errors %q)", got, tc.want, c.errs)
			}
			if len(c.samples) != 1 || c.samples[0].OK != (tc.want == "") {
				t.Errorf("samples %+v", c.samples)
			}
			if tc.want == "" && c.gens["5"] != 1 {
				t.Errorf("generations %v, want 5:1", c.gens)
			}
		})
	}
}

// closeSecond answers the first request on each connection (keep-alive) and
// reads the second, then closes without answering: what a server that
// closes an idle keep-alive connection does to a request already on its
// way.
func closeSecond(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
	if !readReq(br, reqs) {
		return
	}
	io.WriteString(c, okResponse)
	readReq(br, reqs)
}

// Load must not let net/http re-send a request lost on a reused
// connection: the failure is counted, and the server saw each request once.
func TestLoadNeverRetries(t *testing.T) {
	addr, reqs := rawServer(t, closeSecond)
	c := newLoadClient(addr, true, 5*time.Second, false, time.Now())
	if got := one(t, c); got != "" {
		t.Fatalf("first request: %q (%v)", got, c.errs)
	}
	if got := one(t, c); got != KindEOF {
		t.Errorf("second request on the reused connection: %q, want eof (%v)", got, c.errs)
	}
	if c.reusedFailures != 1 {
		t.Errorf("reused failures %d, want 1", c.reusedFailures)
	}
	if n := reqs.Load(); n != 2 {
		t.Errorf("server read %d requests, want 2: the client retried", n)
	}
}

// The reason Load sends non-rewindable POSTs: with a plain GET, net/http
// re-sends the lost request on a new connection and reports success, so the
// loss would be invisible. (If this ever fails, net/http stopped retrying
// and the POST is merely harmless.)
func TestNetHTTPRetriesGET(t *testing.T) {
	addr, reqs := rawServer(t, closeSecond)
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	for i := range 2 {
		resp, err := cl.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("GET %d: %v", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := reqs.Load(); n != 3 {
		t.Errorf("server read %d requests, want 3 (the second GET sent twice)", n)
	}
}

func TestLoadRun(t *testing.T) {
	addr, _ := serveHello(t, "2")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := Load(ctx, LoadConfig{Addr: addr, Clients: 4, KeepAlive: 0.5, Record: true})
	if r.Requests == 0 || r.Failures != 0 || r.Generations["2"] != r.Requests {
		t.Fatalf("requests %d failures %d generations %v errors %v", r.Requests, r.Failures, r.Generations, r.Errors)
	}
	if int64(len(r.Samples)) != r.Requests {
		t.Errorf("%d samples for %d requests", len(r.Samples), r.Requests)
	}
	if len(r.ByKind) != len(Kinds) {
		t.Errorf("ByKind %v: want every kind", r.ByKind)
	}
	for i := 1; i < len(r.Samples); i++ {
		if r.Samples[i].At < r.Samples[i-1].At {
			t.Fatal("samples not sorted by At")
		}
	}
}

func TestPercentile(t *testing.T) {
	r := &Result{}
	for i := 1; i <= 100; i++ {
		r.Samples = append(r.Samples, Sample{At: time.Duration(i) * time.Second, Latency: time.Duration(i) * time.Millisecond})
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		p        float64
		from, to time.Duration
		want     time.Duration
	}{
		{50, 0, 0, 50 * ms},
		{99, 0, 0, 99 * ms},
		{99.9, 0, 0, 100 * ms},
		{100, 0, 0, 100 * ms},
		{0, 0, 0, 1 * ms},
		{50, 11 * time.Second, 21 * time.Second, 15 * ms}, // samples 11..20
		{100, 11 * time.Second, 21 * time.Second, 20 * ms},
		{50, 200 * time.Second, 0, 0}, // none in range
	} {
		if got := r.Percentile(tc.p, tc.from, tc.to); got != tc.want {
			t.Errorf("Percentile(%v, %v, %v) = %v, want %v", tc.p, tc.from, tc.to, got, tc.want)
		}
	}
}

// The client against the responses a server may legally send, and against
// a server that closes its end between requests.
func TestLoadClientProtocol(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nX-Baton-Generation: 9\r\nContent-Length: 3\r\n\r\nok\n"
	for _, tc := range []struct {
		name     string
		response string // to each request
		after    func(c net.Conn)
		closes   bool  // the server closes after each response
		conns    int64 // connections the three requests should take
	}{
		{name: "content-length", response: ok, conns: 1},
		{name: "chunked", response: "HTTP/1.1 200 OK\r\nx-baton-generation: 9\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"2;x=y\r\nok\r\n1\r\n\n\r\n0\r\nT: v\r\n\r\n", conns: 1},
		{name: "100 continue first", response: "HTTP/1.1 100 Continue\r\n\r\n" + ok, conns: 1},
		{name: "close-delimited", response: "HTTP/1.1 200 OK\r\nX-Baton-Generation: 9\r\n\r\nok\n", closes: true, conns: 3},
		{name: "Connection: close", response: "HTTP/1.1 200 OK\r\nX-Baton-Generation: 9\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n", closes: true, conns: 3},
		{name: "HTTP/1.0", response: "HTTP/1.0 200 OK\r\nX-Baton-Generation: 9\r\nContent-Length: 3\r\n\r\nok\n", closes: true, conns: 3},
		{name: "HTTP/1.0 keep-alive", response: "HTTP/1.0 200 OK\r\nX-Baton-Generation: 9\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nok\n", conns: 1},
		// The server closes an idle connection (FIN) well before the next
		// request: the client sees it and does not send on it.
		{name: "server closes idle", response: ok, after: func(c net.Conn) { c.Close() }, conns: 3},
		// Bytes nobody asked for: the connection is not reused.
		{name: "unsolicited bytes", response: ok + "HTTP/1.1 200 OK\r\n", conns: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accepted atomic.Int64
			addr, reqs := rawServer(t, func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
				accepted.Add(1)
				for readReq(br, reqs) {
					io.WriteString(c, tc.response)
					if tc.after != nil {
						tc.after(c)
						return
					}
					if tc.closes {
						return // the response said so, or is delimited by the close
					}
				}
			})
			c := newLoadClient(addr, true, 5*time.Second, false, time.Now())
			for i := range 3 {
				if got := one(t, c); got != "" {
					t.Fatalf("request %d: %q (%v)", i+1, got, c.errs)
				}
				if tc.after != nil {
					waitFIN(t, c.conn) // the server's close must reach the client first
				}
			}
			c.drop()
			if c.gens["9"] != 3 {
				t.Errorf("generations %v, want 9:3", c.gens)
			}
			if n := reqs.Load(); n != 3 {
				t.Errorf("server read %d requests, want 3", n)
			}
			if n := accepted.Load(); n != tc.conns {
				t.Errorf("%d connections, want %d", n, tc.conns)
			}
		})
	}
}

// A fresh-connection client says "Connection: close" and dials per request;
// a status other than 200 is a failure that keeps the connection.
func TestLoadClientFreshAndStatus(t *testing.T) {
	var accepted atomic.Int64
	var closeHdr atomic.Int64
	addr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader, reqs *atomic.Int64) {
		accepted.Add(1)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if req.Close {
				closeHdr.Add(1)
			}
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
			if req.Close {
				return
			}
		}
	})
	fresh := newLoadClient(addr, false, 5*time.Second, false, time.Now())
	keep := newLoadClient(addr, true, 5*time.Second, false, time.Now())
	for range 3 {
		if got := one(t, fresh); got != KindStatus {
			t.Fatalf("fresh: %q, want status", got)
		}
		if got := one(t, keep); got != KindStatus {
			t.Fatalf("keep-alive: %q, want status", got)
		}
	}
	keep.drop()
	if fresh.errs[kindIndex(KindStatus)] != "503 Service Unavailable" {
		t.Errorf("status error %q", fresh.errs[kindIndex(KindStatus)])
	}
	if n := accepted.Load(); n != 4 {
		t.Errorf("%d connections, want 4 (3 fresh, 1 kept)", n)
	}
	if n := closeHdr.Load(); n != 3 {
		t.Errorf("%d requests with Connection: close, want 3", n)
	}
	if keep.reusedFailures != 2 {
		t.Errorf("reused failures %d, want 2", keep.reusedFailures)
	}
}

// waitFIN blocks until conn has something to read (here: the peer's FIN),
// without consuming it, or fails the test after testDeadline.
func waitFIN(t *testing.T, conn net.Conn) {
	t.Helper()
	if conn == nil {
		t.Fatal("the client dropped the connection before the server closed it")
	}
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(testDeadline))
	defer conn.SetReadDeadline(time.Time{})
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return rerr != syscall.EAGAIN // readable (data, EOF or error): done; else wait
	})
	if err != nil {
		t.Fatalf("waiting for the server's FIN: %v", err)
	}
}
