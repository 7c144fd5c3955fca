package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LoadConfig describes the load [Load] generates.
type LoadConfig struct {
	Addr      string        // host:port
	Clients   int           // concurrent clients (at least 1)
	KeepAlive float64       // fraction of clients using keep-alive (rest open a fresh connection per request), e.g. 0.5
	Timeout   time.Duration // per request, connect to last body byte (default 5s)
	Record    bool          // keep per-request (time offset, latency) samples
}

// Sample is one request: when it started (since the load began), how long it
// took to the last body byte or to the error, and whether it succeeded.
type Sample struct {
	At      time.Duration
	Latency time.Duration
	OK      bool
}

// Result is what the clients of one [Load] run saw.
type Result struct {
	Requests int64 // requests completed or failed
	Failures int64 // requests without a complete 200 response
	// ByKind splits Failures: "refused" (ECONNREFUSED), "reset"
	// (ECONNRESET, EPIPE, ECONNABORTED), "eof" (connection closed before a
	// complete response: io.EOF, io.ErrUnexpectedEOF), "timeout", "status"
	// (a response other than 200), "other" (e.g. a malformed response).
	// Every kind is present, zero or not.
	ByKind map[string]int64
	// Reused counts the failures that happened on a reused keep-alive
	// connection: the keep-alive close races, as opposed to failures on a
	// fresh connection.
	Reused int64
	// Fresh splits the failures on a fresh connection (the hard ones:
	// Failures - Reused) by kind, as ByKind.
	Fresh map[string]int64
	// Errors holds, for each kind that occurred, one error message, for
	// diagnosis.
	Errors      map[string]string
	Generations map[string]int64 // X-Baton-Generation -> 200 responses
	Samples     []Sample         // when Record, sorted by At
	Start       time.Time        // when the load began (Sample.At is relative to it)
	Elapsed     time.Duration
}

// Failure kinds, the keys of Result.ByKind.
const (
	KindRefused = "refused"
	KindReset   = "reset"
	KindEOF     = "eof"
	KindTimeout = "timeout"
	KindStatus  = "status"
	KindOther   = "other"
)

// Kinds lists the failure kinds in report order.
var Kinds = [...]string{KindRefused, KindReset, KindEOF, KindTimeout, KindStatus, KindOther}

const (
	defaultTimeout = 5 * time.Second
	// loadPayload is the body of every request; see Load for why there is
	// one.
	loadPayload = "ping"
)

// Load sends requests to cfg.Addr from cfg.Clients concurrent clients until
// ctx is done, then lets the requests in flight finish (each bounded by
// cfg.Timeout) and returns what the clients saw. It is safe to run several
// Loads at once.
//
// Load never retries, so a request lost by the server is counted, not
// hidden. Each client is a minimal HTTP/1.1 client of its own (not
// net/http, which would make the baton binary 4 MB larger), sending one
// request at a time:
//   - keep-alive clients keep one connection and send every request on it
//     until a response says "Connection: close" or a request fails; then
//     the next request goes on a new connection. Like net/http's Transport,
//     a client does not send on a connection whose server has already
//     closed it (its FIN has arrived) or sent it bytes nobody asked for: it
//     opens a new one instead. Nothing was sent, so nothing is re-sent.
//   - the other clients open a new connection per request and send
//     "Connection: close";
//   - every request is a POST with a 4-byte body, as a hint to anyone
//     reading the server's logs that it must not be replayed. (net/http's
//     Transport silently re-sends a request that failed on a reused
//     connection when it is a GET, HEAD, OPTIONS or TRACE, or carries an
//     Idempotency-Key, with no body or a rewindable one
//     (persistConn.shouldRetryRequest, Request.isReplayable): a load test
//     built on it with plain GETs hides exactly the keep-alive close race.
//     demo's TestNetHTTPRetriesGET shows it.)
//   - no redirects are followed and no proxy is used.
func Load(ctx context.Context, cfg LoadConfig) *Result {
	n := max(cfg.Clients, 1)
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	keep := int(math.Round(cfg.KeepAlive * float64(n)))
	start := time.Now()
	clients := make([]*loadClient, n)
	var wg sync.WaitGroup
	for i := range clients {
		c := newLoadClient(cfg.Addr, i < keep, timeout, cfg.Record, start)
		clients[i] = c
		wg.Go(func() {
			for ctx.Err() == nil {
				c.do()
			}
			c.drop()
		})
	}
	wg.Wait()

	r := &Result{
		ByKind:      make(map[string]int64, len(Kinds)),
		Fresh:       make(map[string]int64, len(Kinds)),
		Generations: make(map[string]int64),
		Errors:      make(map[string]string),
		Start:       start,
		Elapsed:     time.Since(start),
	}
	for _, k := range Kinds {
		r.ByKind[k], r.Fresh[k] = 0, 0
	}
	for _, c := range clients {
		r.Requests += c.requests
		r.Reused += c.reusedFailures
		for k, v := range c.kinds {
			r.ByKind[Kinds[k]] += v
			r.Fresh[Kinds[k]] += c.freshKinds[k]
			r.Failures += v
			if msg := c.errs[k]; msg != "" && r.Errors[Kinds[k]] == "" {
				r.Errors[Kinds[k]] = msg
			}
		}
		for g, v := range c.gens {
			r.Generations[g] += v
		}
		r.Samples = append(r.Samples, c.samples...)
	}
	slices.SortFunc(r.Samples, func(a, b Sample) int { return int(a.At - b.At) })
	return r
}

// Percentile returns the p-th percentile (p in percent: 50, 99, 99.9; 100 is
// the maximum) of the latencies of the Samples that started in [from, to),
// failed ones included (their latency is what the caller waited). to <= 0
// means no upper bound. It returns 0 when no sample is in range.
func (r *Result) Percentile(p float64, from, to time.Duration) time.Duration {
	var lat []time.Duration
	for _, s := range r.Samples {
		if s.At >= from && (to <= 0 || s.At < to) {
			lat = append(lat, s.Latency)
		}
	}
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	// Nearest rank: the smallest value with at least p% of samples <= it.
	rank := int(math.Ceil(p / 100 * float64(len(lat))))
	return lat[min(max(rank, 1), len(lat))-1]
}

// loadClient is one sequential client. Only its own goroutine touches it
// until Load merges the counters, so the counters need no locks.
type loadClient struct {
	addr      string
	keepAlive bool
	timeout   time.Duration
	record    bool
	start     time.Time
	dialer    net.Dialer
	req       []byte // the whole request, written at once
	conn      net.Conn
	br        *bufio.Reader
	lastGen   []byte                // the last X-Baton-Generation value, and as a string:
	genStr    string                // a response allocates nothing while it does not change
	peekFn    func(fd uintptr) bool // usable's probe, with its result and buffer:
	quiet     bool
	peekBuf   [1]byte

	requests       int64
	kinds          [len(Kinds)]int64  // indexed like Kinds
	freshKinds     [len(Kinds)]int64  // of those, on a fresh connection
	errs           [len(Kinds)]string // first error message of each kind
	reusedFailures int64
	gens           map[string]int64
	samples        []Sample
}

func newLoadClient(addr string, keepAlive bool, timeout time.Duration, record bool, start time.Time) *loadClient {
	req := "POST / HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: baton-demo\r\n" +
		"Content-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(loadPayload)) + "\r\n"
	if !keepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n" + loadPayload
	return &loadClient{
		addr:      addr,
		keepAlive: keepAlive,
		timeout:   timeout,
		record:    record,
		start:     start,
		// No TCP keep-alive probes: connections are short.
		dialer: net.Dialer{KeepAlive: -1},
		req:    []byte(req),
		gens:   make(map[string]int64, 8),
	}
}

// do sends one request and records its outcome.
func (c *loadClient) do() {
	t0 := time.Now()
	gen, reused, err := c.roundTrip(t0.Add(c.timeout))
	lat := time.Since(t0)

	c.requests++
	if err != nil {
		kind := classify(err)
		msg := err.Error()
		var se *statusError
		if errors.As(err, &se) {
			kind, msg = kindIndex(KindStatus), se.status
		}
		if c.errs[kind] == "" {
			c.errs[kind] = msg
		}
		c.kinds[kind]++
		if reused {
			c.reusedFailures++
		} else {
			c.freshKinds[kind]++
		}
	} else {
		c.gens[gen]++
	}
	if c.record {
		c.samples = append(c.samples, Sample{At: t0.Sub(c.start), Latency: lat, OK: err == nil})
	}
}

// statusError is a complete response other than 200.
type statusError struct{ status string } // "503 Service Unavailable"

func (e *statusError) Error() string { return "status " + e.status }

// roundTrip sends one request and reads its response, all before deadline.
// reused reports whether the request went on a connection that had served
// an earlier one.
func (c *loadClient) roundTrip(deadline time.Time) (gen string, reused bool, err error) {
	if c.conn != nil && !c.usable() {
		c.drop()
	}
	reused = c.conn != nil
	if c.conn == nil {
		c.dialer.Deadline = deadline
		conn, err := c.dialer.Dial("tcp", c.addr)
		if err != nil {
			return "", false, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 4<<10)
		} else {
			c.br.Reset(conn)
		}
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		c.drop()
		return "", reused, err
	}
	if _, err := c.conn.Write(c.req); err != nil {
		c.drop()
		return "", reused, err
	}
	gen, keep, err := c.readResponse()
	var se *statusError
	if (err != nil && !errors.As(err, &se)) || !keep || !c.keepAlive {
		c.drop() // a response other than 200 was read completely: keep may hold
	}
	return gen, reused, err
}

// usable reports whether the kept connection can carry the next request:
// nothing has arrived on it since the last response, neither bytes nor the
// server's FIN nor a reset. It peeks without blocking (MSG_PEEK|
// MSG_DONTWAIT), which is what net/http's Transport learns from the read
// loop it keeps on every idle connection.
func (c *loadClient) usable() bool {
	if c.br.Buffered() > 0 {
		return false // bytes nobody asked for: the stream is out of step
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	c.quiet = false
	if c.peekFn == nil { // made once: a closure per request would allocate
		c.peekFn = func(fd uintptr) bool {
			_, _, err := unix.Recvfrom(int(fd), c.peekBuf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			// EAGAIN: nothing to read, the connection is open and quiet.
			// A result (n > 0: bytes; n == 0: FIN) or another error (a
			// reset) means it is not.
			c.quiet = err == unix.EAGAIN || err == unix.EINTR
			return true // never wait for readability
		}
	}
	return rc.Read(c.peekFn) == nil && c.quiet
}

func (c *loadClient) drop() {
	if c.conn != nil {
		_ = c.conn.Close() // ours, and done; nothing to report
		c.conn = nil
	}
}

// readResponse reads one response and its body. keep reports whether the
// connection may carry another request. A response other than 200 is a
// *statusError, read completely (so the connection stays in step).
func (c *loadClient) readResponse() (gen string, keep bool, err error) {
	br := c.br
	budget := maxHeader
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return "", false, err
		}
		// "HTTP/1.1 200 OK": version, status code, reason (may be empty).
		if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') ||
			line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
			return "", false, fmt.Errorf("%w: status line %q", errMalformed, line)
		}
		http11 := line[7] == '1'
		code := 0
		for _, d := range line[9:12] {
			if d < '0' || d > '9' {
				return "", false, fmt.Errorf("%w: status line %q", errMalformed, line)
			}
			code = code*10 + int(d-'0')
		}
		var status string
		if code != 200 {
			status = string(bytes.TrimSpace(line[9:]))
		}

		length := int64(-1)
		chunked, closing, ka := false, false, false
		gen = ""
		for {
			line, err := readLine(br, &budget)
			if err != nil {
				return "", false, eofIsUnexpected(err)
			}
			if len(line) == 0 {
				break
			}
			name, value, err := splitHeader(line)
			if err != nil {
				return "", false, err
			}
			switch {
			case equalFold(name, "x-baton-generation"):
				if !bytes.Equal(value, c.lastGen) || c.genStr == "" {
					c.lastGen = append(c.lastGen[:0], value...)
					c.genStr = string(value)
				}
				gen = c.genStr
			case equalFold(name, "content-length"):
				n, err := parseContentLength(value)
				if err != nil || (length >= 0 && n != length) {
					return "", false, fmt.Errorf("%w: Content-Length %q", errMalformed, value)
				}
				length = n
			case equalFold(name, "transfer-encoding"):
				chunked = chunkedLast(value)
				if !chunked {
					return "", false, fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, value)
				}
			case equalFold(name, "connection"):
				closing = closing || hasToken(value, "close")
				ka = ka || hasToken(value, "keep-alive")
			}
		}
		if code >= 100 && code < 200 {
			continue // an interim response (100 Continue): the real one follows
		}

		keep = !closing && (http11 || ka)
		switch {
		case code == 204 || code == 304:
			// no body
		case chunked:
			err = discardChunked(br, nil)
		case length >= 0:
			err = discard(br, length, nil)
		default:
			// Delimited by the end of the connection.
			keep = false
			_, err = io.Copy(io.Discard, br)
		}
		if err != nil {
			return "", false, err
		}
		if code != 200 {
			return "", keep, &statusError{status: status}
		}
		return gen, keep, nil
	}
}

func kindIndex(kind string) int { return slices.Index(Kinds[:], kind) }

// classify maps a request error to an index into Kinds.
func classify(err error) int {
	var se *statusError
	switch {
	case errors.As(err, &se):
		return kindIndex(KindStatus)
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindIndex(KindRefused)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return kindIndex(KindReset)
	case errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return kindIndex(KindTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return kindIndex(KindEOF)
	default:
		return kindIndex(KindOther)
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
