package demo

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helloServer, driven by net/http's client: the same headers and body as
// the net/http handler hello used to be, for every method, with keep-alive,
// request bodies of either framing, and Expect: 100-continue.
func TestHelloServerWithNetHTTPClient(t *testing.T) {
	addr, srv := serveHello(t, "4")
	refAddr := serve(t, newNetHTTPHello("4", "0", 42))
	tr := &http.Transport{MaxIdleConnsPerHost: 1, ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}

	do := func(addr, method string, body io.Reader, hdr ...string) (*http.Response, string, bool) {
		t.Helper()
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			method, "http://"+addr+"/some/path?q=1", body)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b), reused
	}

	ref, refBody, _ := do(refAddr, "GET", nil)
	checkHello(t, ref, refBody, "4", "0", 42)
	var keys []string
	for k := range ref.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	for i, tc := range []struct {
		method string
		body   io.Reader
		hdr    []string
	}{
		{method: "GET"},
		{method: "POST", body: strings.NewReader("ping")},
		{method: "POST", body: io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body"))}, // unknown length: chunked
		{method: "PUT", body: strings.NewReader(strings.Repeat("x", 100<<10)), hdr: []string{"Expect", "100-continue"}},
		{method: "DELETE"},
		{method: "HEAD"},
	} {
		resp, body, reused := do(addr, tc.method, tc.body, tc.hdr...)
		if tc.method == "HEAD" {
			if body != "" || resp.ContentLength != int64(len(refBody)) {
				t.Errorf("HEAD: body %q, Content-Length %d", body, resp.ContentLength)
			}
			body = refBody
		}
		checkHello(t, resp, body, "4", "0", 42)
		if i > 0 && !reused {
			t.Errorf("%s: the connection was not reused", tc.method)
		}
		var got []string
		for k := range resp.Header {
			got = append(got, k)
		}
		slices.Sort(got)
		if !slices.Equal(got, keys) {
			t.Errorf("%s: headers %v, want those of net/http: %v", tc.method, got, keys)
		}
		if resp.Header.Get("Content-Type") != ref.Header.Get("Content-Type") {
			t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), ref.Header.Get("Content-Type"))
		}
		if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
			t.Errorf("Date: %v", err)
		}
	}
	if n := srv.served.Load(); n != 6 {
		t.Errorf("served %d, want 6", n)
	}
}

// rawConn is a client connection for byte-level tests.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testDeadline))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// response reads one response with net/http's parser.
func (r *rawConn) response(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// expectEOF checks that the server closed the connection, with nothing more
// to read.
func (r *rawConn) expectEOF() {
	r.t.Helper()
	if b, err := r.br.ReadByte(); err != io.EOF {
		r.t.Errorf("read %q, %v; want EOF", b, err)
	}
}

func TestHelloServerProtocol(t *testing.T) {
	addr, _ := serveHello(t, "1")
	const want = "hello from generation 1 worker 0 pid 42\n"

	t.Run("pipelined", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
			"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
			"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n" +
			"HEAD /d HTTP/1.1\r\nHost: x\r\n\r\n" +
			"GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		for i, m := range []string{"GET", "POST", "POST", "HEAD"} {
			resp, body := r.response(m)
			if resp.StatusCode != 200 || resp.Close || (m != "HEAD" && body != want) {
				t.Errorf("response %d: %d close=%v body %q", i, resp.StatusCode, resp.Close, body)
			}
		}
		resp, body := r.response("GET")
		if !resp.Close || body != want { // (net/http turns "Connection: close" into resp.Close)
			t.Errorf("last: close=%v body %q", resp.Close, body)
		}
		r.expectEOF()
	})

	t.Run("HTTP/1.0", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, body := r.response("GET")
		if resp.Close || resp.Header.Get("Connection") != "keep-alive" || body != want {
			t.Errorf("1.0 keep-alive: close=%v Connection %q body %q", resp.Close, resp.Header.Get("Connection"), body)
		}
		r.send("GET / HTTP/1.0\r\n\r\n")
		if _, body := r.response("GET"); body != want {
			t.Errorf("1.0: body %q", body)
		}
		r.expectEOF() // HTTP/1.0 without keep-alive: one request per connection
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		line, err := r.br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("%q, %v; want 100 Continue first", line, err)
		}
		r.br.ReadString('\n') // the empty line
		r.send("ping")
		if resp, body := r.response("POST"); resp.StatusCode != 200 || body != want {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})

	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"garbage", "hello\r\n\r\n", 400},
		{"no version", "GET /\r\n\r\n", 400},
		{"HTTP/2", "GET / HTTP/2.0\r\n\r\n", 505},
		{"header without colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"obsolete folding", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400},
		{"bad Content-Length", "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"bad chunk", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
		{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"unknown expectation", "GET / HTTP/1.1\r\nExpect: tea\r\n\r\n", 417},
		{"long header line", "GET / HTTP/1.1\r\nA: " + strings.Repeat("a", maxLine) + "\r\n\r\n", 431},
		{"long header section", "GET / HTTP/1.1\r\n" + strings.Repeat("A: "+strings.Repeat("a", 1000)+"\r\n", 70) + "\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			r.send(tc.req)
			resp, _ := r.response("GET")
			if resp.StatusCode != tc.code || !resp.Close {
				t.Errorf("status %d close=%v, want %d and close", resp.StatusCode, resp.Close, tc.code)
			}
			r.expectEOF()
		})
	}
}

// The drain, in process: once draining, an idle connection stays open (its
// client may be sending right now); a request on it is answered with
// "Connection: close" and the connection closed. shutdown closes the
// connections still idle and waits for one whose request is half read.
func TestHelloServerDrain(t *testing.T) {
	addr, srv := serveHello(t, "1")
	idle := dialRaw(t, addr)   // answered once, then idle
	later := dialRaw(t, addr)  // never sends a thing
	active := dialRaw(t, addr) // in the middle of a request at shutdown
	for _, r := range []*rawConn{idle, active} {
		r.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := r.response("GET"); resp.Close {
			t.Fatal("Connection: close before the drain")
		}
	}
	// waitConns waits for the server's own count of open and active
	// connections, woken by each change of connection state.
	waitConns := func(open, active int) {
		t.Helper()
		deadline := time.After(testDeadline)
		for {
			srv.mu.Lock()
			o, a := len(srv.conns), 0
			for c := range srv.conns {
				if c.active {
					a++
				}
			}
			srv.mu.Unlock()
			if o == open && a == active {
				return
			}
			select {
			case <-srv.changed:
			case <-deadline:
				t.Fatalf("%d connections open, %d active; want %d, %d", o, a, open, active)
			}
		}
	}
	waitConns(3, 0)

	srv.startDrain()
	idle.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := idle.response("GET"); !resp.Close {
		t.Error("draining: no Connection: close")
	}
	idle.expectEOF()
	waitConns(2, 0)

	active.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\npi")
	waitConns(2, 1) // the server has read the start of it and waits for the rest
	done := make(chan error, 1)
	go func() { done <- srv.shutdown(context.Background()) }()
	later.expectEOF() // idle: closed by shutdown
	select {
	case err := <-done:
		t.Fatalf("shutdown returned (%v) with a request half read", err)
	case <-time.After(50 * time.Millisecond):
	}
	active.send("ng")
	if resp, body := active.response("POST"); !resp.Close || resp.StatusCode != 200 || body == "" {
		t.Errorf("half-read request: %d close=%v %q", resp.StatusCode, resp.Close, body)
	}
	active.expectEOF()
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// Hello keeps an idle keep-alive connection open for the whole grace (it
// closes it only when the grace is over), rather than closing it under a
// client that may be sending on it.
func TestHelloKeepsIdleConnectionForGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	_, ln, addr := sharedSocket(t)
	p := startRole(t, "hello", "hello", ln, false, "HELLO_DRAIN="+grace.String())
	p.waitReady(t)
	r := dialRaw(t, addr)
	r.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	r.response("GET")
	t0 := time.Now()
	p.signal(t, syscall.SIGTERM)
	r.expectEOF()
	if d := time.Since(t0); d < grace {
		t.Errorf("idle connection closed %v after SIGTERM, before the grace (%v) was over", d, grace)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	p.stderr.waitFor(t, "1 connections left after the grace")
}
