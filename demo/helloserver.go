package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// helloReadTimeout bounds reading a request's header section, from its
	// first byte (net/http's ReadHeaderTimeout, which hello used to set),
	// and then each stretch of its body without progress. An idle keep-alive
	// connection has no deadline, as with net/http without IdleTimeout.
	helloReadTimeout = 10 * time.Second
	// helloWriteTimeout bounds writing one response.
	helloWriteTimeout = 10 * time.Second
	// helloLinger bounds the wait for a client's leftovers after an error
	// response, before the connection is closed (see lingerClose).
	helloLinger = 500 * time.Millisecond
)

// helloServer is the HTTP/1.1 server behind `baton hello`: just enough of
// RFC 9112 for any client (keep-alive, pipelining, HTTP/1.0, request bodies
// with Content-Length or chunked, Expect: 100-continue, HEAD), with one
// answer for every request. It is not net/http, which would make the baton
// binary 4 MB larger; demo's tests drive it with net/http's client.
//
// What matters for the drain is the state of each connection, which the
// server always knows exactly (net/http exposes it through ConnState):
// idle, waiting for the first byte of a request (a new connection, or one
// that has answered), or active, from that first byte until the response is
// written. Once draining, every response carries "Connection: close" and
// the connection is closed after it; idle connections stay open, since the
// client may be sending on them at that very moment, until [shutdown].
type helloServer struct {
	head     []byte // status line and the fixed headers, up to Date
	body     []byte
	draining atomic.Bool
	served   atomic.Int64
	logf     func(format string, args ...any)

	mu      sync.Mutex
	conns   map[*helloConn]struct{}
	closing bool          // shutdown began: idle connections are closed
	zero    chan struct{} // buffered 1: the last connection closed
	// changed, when set (tests), gets a token whenever a connection opens,
	// closes, turns active or turns idle again, so a test can wait for the
	// state it needs.
	changed chan struct{}
}

// helloConn is one connection, served by one goroutine.
type helloConn struct {
	nc     net.Conn
	br     *bufio.Reader
	out    []byte // the response being written, reused
	active bool   // guarded by helloServer.mu: between a request's first byte and its response
	refill func() // pushes the read deadline forward while a body arrives

	dateSec int64
	date    []byte // Date header value for dateSec
}

func newHelloServer(gen, worker string, pid int, logf func(string, ...any)) *helloServer {
	body := fmt.Sprintf("hello from generation %s worker %s pid %d\n", gen, worker, pid)
	// The same headers as when hello was a net/http handler: it set
	// X-Baton-Generation, X-Baton-Pid, Content-Type and Content-Length,
	// and net/http added Date (and Connection, see respond).
	head := "HTTP/1.1 200 OK\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Baton-Generation: " + headerValue(gen) + "\r\n" +
		"X-Baton-Pid: " + strconv.Itoa(pid) + "\r\n"
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &helloServer{
		head:  []byte(head),
		body:  []byte(body),
		logf:  logf,
		conns: make(map[*helloConn]struct{}),
		zero:  make(chan struct{}, 1),
	}
}

// headerValue replaces control characters (a newline in BATON_GENERATION
// would start a header of its own) with spaces, as net/http does.
func headerValue(v string) string {
	b := []byte(v)
	for i, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}

// serve accepts connections on ln until it fails; closing ln is how it is
// stopped. Every connection accepted is tracked (open counts it) before
// serve accepts the next one or returns, so once serve has returned for
// every listener, open is complete. Like net/http's Serve, it retries
// accept errors that running out of descriptors or memory causes.
func (s *helloServer) serve(ln net.Listener) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !acceptRetryable(err) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("accept: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := &helloConn{nc: nc}
		if !s.track(c) {
			_ = nc.Close() // shutting down: nothing to answer on it
			continue
		}
		go s.serveConn(c)
	}
}

func acceptRetryable(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (s *helloServer) track(c *helloConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.notify()
	return true
}

// notify tells a waiting test that connection state changed.
func (s *helloServer) notify() {
	if s.changed != nil {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

func (s *helloServer) untrack(c *helloConn) {
	_ = c.nc.Close() // may be closed already (shutdown); nothing to add
	s.mu.Lock()
	delete(s.conns, c)
	n := len(s.conns)
	s.notify()
	s.mu.Unlock()
	if n == 0 {
		select {
		case s.zero <- struct{}{}:
		default:
		}
	}
}

// activate marks c active on the first byte of a request; false means the
// server is closing idle connections and c is (or is about to be) closed.
func (s *helloServer) activate(c *helloConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.active = !s.closing
	s.notify()
	return c.active
}

// idle marks c idle after a response; false means c must close.
func (s *helloServer) idle(c *helloConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.active = false
	// A client can read its response before this runs: a test that waits
	// for the connection to be idle is woken here, not by the next change.
	s.notify()
	return !s.closing
}

// startDrain makes every response from now on carry "Connection: close"
// and close its connection afterwards.
func (s *helloServer) startDrain() { s.draining.Store(true) }

// open returns the number of open connections.
func (s *helloServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// shutdown is the end of the drain, what http.Server.Shutdown does after
// its listeners are closed: close every idle connection now and wait (until
// ctx is done) for the active ones to answer and close. The listeners must
// be closed first. A connection still idle when this runs is the keep-alive
// close race itself, which is why hello only gets here after its grace.
func (s *helloServer) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for c := range s.conns {
		if !c.active {
			_ = c.nc.Close() // its goroutine sees the error and untracks it
		}
	}
	s.mu.Unlock()
	for s.open() > 0 {
		select {
		case <-s.zero:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// close closes every connection at once, active or not.
func (s *helloServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for c := range s.conns {
		_ = c.nc.Close() // best effort; we are giving up on it
	}
}

func (s *helloServer) serveConn(c *helloConn) {
	defer s.untrack(c)
	c.br = bufio.NewReaderSize(c.nc, maxLine)
	c.refill = func() { _ = c.nc.SetReadDeadline(time.Now().Add(helloReadTimeout)) }
	for {
		// Idle: no deadline, as long as the client keeps the connection.
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		if !s.activate(c) {
			return
		}
		c.refill() // from the first byte: the header section's deadline
		if !s.handle(c) || !s.idle(c) {
			return
		}
		_ = c.nc.SetReadDeadline(time.Time{}) // idle again: no deadline
	}
}

// helloRequest is what hello needs to know about a request.
type helloRequest struct {
	head    bool  // HEAD: no body in the response
	http11  bool  // HTTP/1.1 (else 1.0)
	close   bool  // close the connection after the response
	length  int64 // Content-Length, -1 if none
	chunked bool  // Transfer-Encoding: chunked
	expect  bool  // Expect: 100-continue
	hasCLen bool  // a Content-Length header was seen
	teCount int   // Transfer-Encoding headers seen
	ka10    bool  // "Connection: keep-alive" (for HTTP/1.0)
}

// handle reads one request and answers it. It returns whether the
// connection stays open for another request.
func (s *helloServer) handle(c *helloConn) bool {
	req, status, err := readHelloRequest(c.br)
	if status != 0 {
		s.respondError(c, status)
		return false
	}
	if err != nil {
		return false // the client went away or stalled: nobody to answer
	}
	if req.expect && (req.chunked || req.length > 0) && req.http11 {
		// The client waits for this before it sends the body.
		_ = c.nc.SetWriteDeadline(time.Now().Add(helloWriteTimeout))
		if _, err := io.WriteString(c.nc, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
	}
	// The body means nothing to hello; reading it keeps the connection in
	// step for the next request.
	switch {
	case req.chunked:
		err = discardChunked(c.br, c.refill)
	case req.length > 0:
		err = discard(c.br, req.length, c.refill)
	}
	if err != nil {
		if errors.Is(err, errMalformed) || errors.Is(err, errLineTooLong) {
			s.respondError(c, 400)
		}
		return false
	}
	return s.respond(c, req)
}

// respond writes the 200 response. Once the server is draining, it carries
// "Connection: close" and the connection closes after it: the heart of the
// drain. The client learns, in a response it already has, that this
// connection is done, so its next request goes on a new connection (to the
// new generation) instead of racing our close.
func (s *helloServer) respond(c *helloConn, req helloRequest) bool {
	closing := req.close || s.draining.Load()
	now := time.Now()
	out := append(c.out[:0], s.head...)
	switch {
	case closing && req.http11:
		out = append(out, "Connection: close\r\n"...)
	case !closing && !req.http11:
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "Date: "...)
	out = append(out, c.httpDate(now)...)
	out = append(out, "\r\n\r\n"...)
	if !req.head {
		out = append(out, s.body...)
	}
	c.out = out
	s.served.Add(1) // before the write: once it is out, the client may count it
	_ = c.nc.SetWriteDeadline(now.Add(helloWriteTimeout))
	if _, err := c.nc.Write(out); err != nil {
		return false // the client's loss, reported on its side
	}
	return !closing
}

// httpDate returns the Date header value for now, formatted once a second.
func (c *helloConn) httpDate(now time.Time) []byte {
	if sec := now.Unix(); sec != c.dateSec || c.date == nil {
		c.dateSec = sec
		c.date = now.UTC().AppendFormat(c.date[:0], "Mon, 02 Jan 2006 15:04:05 GMT")
	}
	return c.date
}

var statusText = map[int]string{
	400: "Bad Request",
	417: "Expectation Failed",
	431: "Request Header Fields Too Large",
	501: "Not Implemented",
	505: "HTTP Version Not Supported",
}

// respondError answers a request hello cannot read, and closes.
func (s *helloServer) respondError(c *helloConn, code int) {
	body := strconv.Itoa(code) + " " + statusText[code]
	msg := "HTTP/1.1 " + body + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	_ = c.nc.SetWriteDeadline(time.Now().Add(helloWriteTimeout))
	if _, err := io.WriteString(c.nc, msg); err == nil {
		lingerClose(c.nc)
	}
}

// lingerClose closes a connection that may have unread request bytes
// without losing the response just written: closing a socket with unread
// data makes the kernel send RST, which can destroy the response before the
// client reads it. So: FIN first, then read what the client still sends
// until it closes too (or helloLinger passes), then close.
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = nc.SetReadDeadline(time.Now().Add(helloLinger))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 256<<10)) // until EOF, the deadline or the limit
	}
	_ = nc.Close() // untrack closes it again; either way it is done
}

// readHelloRequest reads a request's start line and header section. A
// non-zero status is the error response to send (and then close); an error
// with status 0 means the connection is unusable (closed, reset, timed
// out): close without answering.
func readHelloRequest(br *bufio.Reader) (helloRequest, int, error) {
	req := helloRequest{length: -1}
	budget := maxHeader
	line, err := readLine(br, &budget)
	if err != nil {
		return req, lineStatus(err), err
	}
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, proto, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 {
		return req, 400, errMalformed
	}
	switch string(proto) {
	case "HTTP/1.1":
		req.http11 = true
	case "HTTP/1.0":
	default:
		if bytes.HasPrefix(proto, []byte("HTTP/")) {
			return req, 505, errMalformed
		}
		return req, 400, errMalformed
	}
	req.head = string(method) == "HEAD"

	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return req, lineStatus(err), err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := splitHeader(line)
		if err != nil {
			return req, 400, err
		}
		switch {
		case equalFold(name, "content-length"):
			n, err := parseContentLength(value)
			if err != nil || (req.hasCLen && n != req.length) {
				return req, 400, errMalformed
			}
			req.length, req.hasCLen = n, true
		case equalFold(name, "transfer-encoding"):
			// Only chunked framing is understood; any coding under it is
			// irrelevant, since the body is discarded.
			req.teCount++
			if req.teCount > 1 {
				return req, 400, errMalformed
			}
			if !chunkedLast(value) {
				return req, 501, errMalformed
			}
			req.chunked = true
		case equalFold(name, "connection"):
			if hasToken(value, "close") {
				req.close = true
			}
			if hasToken(value, "keep-alive") {
				req.ka10 = true
			}
		case equalFold(name, "expect"):
			if !equalFold(value, "100-continue") {
				return req, 417, errMalformed
			}
			req.expect = true
		}
	}
	if !req.http11 {
		if req.chunked {
			return req, 400, errMalformed // RFC 9112 section 6.1: not in HTTP/1.0
		}
		req.close = req.close || !req.ka10
	}
	if req.chunked {
		// RFC 9112 section 6.3: chunked overrides Content-Length, and the
		// connection must close after the response.
		if req.hasCLen {
			req.close = true
		}
		req.length = -1
	}
	return req, 0, nil
}

// lineStatus maps a readLine error to an error response: 431 for a header
// line or section that is too long, none (close) when the connection failed.
func lineStatus(err error) int {
	if errors.Is(err, errLineTooLong) {
		return 431
	}
	return 0
}
