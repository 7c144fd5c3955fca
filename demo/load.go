package demo

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
	// complete response: io.EOF, io.ErrUnexpectedEOF, "server closed idle
	// connection"), "timeout", "status" (a response other than 200),
	// "other". Every kind is present, zero or not.
	ByKind map[string]int64
	// Reused counts the failures that happened on a reused keep-alive
	// connection: the keep-alive close races, as opposed to failures on a
	// fresh connection.
	Reused int64
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
	// loadPayload is the body of every request; see newRequest for why
	// there is one.
	loadPayload = "ping"
)

// Load sends requests to cfg.Addr from cfg.Clients concurrent clients until
// ctx is done, then lets the requests in flight finish (each bounded by
// cfg.Timeout) and returns what the clients saw. It is safe to run several
// Loads at once.
//
// Load never retries, so a request lost by the server is counted, not
// hidden:
//   - each client has its own http.Transport, with one connection at most:
//     keep-alive clients (MaxIdleConnsPerHost=1) reuse it, the others
//     (DisableKeepAlives) open a fresh connection per request;
//   - every request is a POST with a 4-byte body that cannot be rewound
//     (GetBody is nil). net/http's Transport silently re-sends a request
//     that failed on a reused connection (persistConn.shouldRetryRequest)
//     when it never wrote a byte of it and the request has no body or a
//     rewindable one, or when the request is replayable: GET, HEAD,
//     OPTIONS, TRACE or an Idempotency-Key header, with no body or a
//     rewindable one (Request.isReplayable). A POST with a non-rewindable
//     body matches none of these, so the keep-alive close race surfaces as
//     an error instead of a silent second attempt. A request on a fresh
//     connection is never retried either (the transport does not retry
//     when !pc.isReused()).
//   - redirects are not followed (the Transport is used directly, not an
//     http.Client), and proxies from the environment are ignored.
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
			c.tr.CloseIdleConnections()
		})
	}
	wg.Wait()

	r := &Result{
		ByKind:      make(map[string]int64, len(Kinds)),
		Generations: make(map[string]int64),
		Errors:      make(map[string]string),
		Start:       start,
		Elapsed:     time.Since(start),
	}
	for _, k := range Kinds {
		r.ByKind[k] = 0
	}
	for _, c := range clients {
		r.Requests += c.requests
		r.Reused += c.reusedFailures
		for k, v := range c.kinds {
			r.ByKind[Kinds[k]] += v
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
	tr      *http.Transport
	tmpl    *http.Request
	base    context.Context
	timeout time.Duration
	record  bool
	start   time.Time
	reused  atomic.Bool // set by the GotConn trace hook

	requests       int64
	kinds          [len(Kinds)]int64  // indexed like Kinds
	errs           [len(Kinds)]string // first error message of each kind
	reusedFailures int64
	gens           map[string]int64
	samples        []Sample
}

func newLoadClient(addr string, keepAlive bool, timeout time.Duration, record bool, start time.Time) *loadClient {
	c := &loadClient{
		timeout: timeout,
		record:  record,
		start:   start,
		gens:    make(map[string]int64, 8),
		base:    context.Background(),
	}
	c.tr = &http.Transport{
		Proxy: nil, // never a proxy from the environment
		DialContext: (&net.Dialer{
			Timeout:   timeout,
			KeepAlive: -1, // no TCP keep-alive probes: connections are short
		}).DialContext,
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
	}
	if keepAlive {
		// Set once per client, not per request: the trace reports whether
		// the connection a request got was a reused one.
		c.base = httptrace.WithClientTrace(c.base, &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { c.reused.Store(info.Reused) },
		})
	}
	tmpl, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", nil)
	if err != nil {
		// Only a malformed address gets here; every request then fails
		// the same way and is counted as "other".
		tmpl = &http.Request{Method: http.MethodPost, Header: http.Header{}}
	}
	c.tmpl = tmpl
	return c
}

// do sends one request and records its outcome.
func (c *loadClient) do() {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(c.base, c.timeout)
	req := c.tmpl.WithContext(ctx) // shallow copy: URL and Header shared, read-only
	// A fresh body per request: the Transport may still be reading the
	// previous one after RoundTrip returned an error. A NopCloser around a
	// strings.Reader is a body net/http knows to be in memory, so it sends
	// headers and body in one write (any other type costs a second write
	// syscall: transferWriter.FlushHeaders).
	req.Body = io.NopCloser(strings.NewReader(loadPayload))
	req.ContentLength = int64(len(loadPayload))
	req.GetBody = nil // not rewindable: never retried (see Load)
	c.reused.Store(false)

	kind := -1
	var gen string
	resp, err := c.tr.RoundTrip(req)
	if err == nil {
		gen = resp.Header.Get("X-Baton-Generation")
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close() // the body was read to EOF or failed; nothing to add
		if err == nil && resp.StatusCode != http.StatusOK {
			kind = kindIndex(KindStatus)
			if c.errs[kind] == "" {
				c.errs[kind] = resp.Status
			}
		}
	}
	if err != nil {
		kind = classify(err)
		if c.errs[kind] == "" {
			c.errs[kind] = err.Error()
		}
	}
	cancel()
	lat := time.Since(t0)

	c.requests++
	if kind >= 0 {
		c.kinds[kind]++
		if c.reused.Load() {
			c.reusedFailures++
		}
	} else {
		c.gens[gen]++
	}
	if c.record {
		c.samples = append(c.samples, Sample{At: t0.Sub(c.start), Latency: lat, OK: kind < 0})
	}
}

func kindIndex(kind string) int { return slices.Index(Kinds[:], kind) }

// classify maps a request error to an index into Kinds.
func classify(err error) int {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindIndex(KindRefused)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return kindIndex(KindReset)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return kindIndex(KindTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's errServerClosedIdle is not exported and wraps
		// nothing: the server's FIN reached an idle connection just as
		// it was picked for this request.
		strings.Contains(err.Error(), "server closed idle connection"),
		// The Transport's read loop saw the server close the connection
		// and closed it while the request body was still being written:
		// the write then fails with "use of closed network connection".
		errors.Is(err, net.ErrClosed):
		return kindIndex(KindEOF)
	default:
		return kindIndex(KindOther)
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
