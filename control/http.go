//go:build linux

package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/internal/http1"
	"github.com/baton-init/baton/supervisor"
)

// The operations endpoint (BATON_HTTP_ADDR) is a tiny HTTP/1.1 responder
// written on net.Listen rather than net/http, which would add about 4 MB
// to a binary that must stay small. It answers GET and HEAD for three
// paths, one request per connection ("Connection: close"), which is all a
// Prometheus scraper, a kubelet probe or curl needs.
const (
	// httpMaxHeader bounds the request line plus headers.
	httpMaxHeader = 8 << 10
	// httpHeadTimeout bounds the wait for a request's head: a probe sends
	// it at once; a client that dribbles it (slowloris) is dropped.
	httpHeadTimeout = 2 * time.Second
	// httpWriteTimeout bounds writing the answer.
	httpWriteTimeout = 2 * time.Second
	// httpQueryTimeout bounds the status query to the event loop.
	httpQueryTimeout = 2 * time.Second
	// httpMaxConns bounds the connections held at once; at the cap the
	// oldest idle one is closed for a new one (see limiter).
	httpMaxConns = 256
	// httpLinger bounds the drain of a client's leftovers after the answer
	// (see linger).
	httpLinger = time.Second
)

// MetricsContentType is the Prometheus text exposition format, 0.0.4.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// ServeHTTP serves /metrics (Prometheus text format), /healthz and /readyz
// on addr (host:port; port 0 picks a free one) until the returned listener
// is closed. Like the control socket it owns nothing: every request is a
// Query to the loop.
func ServeHTTP(s Loop, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go acceptLoop(l, newLimiter(httpMaxConns), func(h *held) { serveConn(s, h) }, time.Sleep)
	return l, nil
}

// httpRequest is what the responder needs of a request.
type httpRequest struct {
	method, path string
}

// errHeaderTooLarge means the request line and headers exceed httpMaxHeader.
var errHeaderTooLarge = errors.New("request header too large")

// errBadRequest means the request is not HTTP/1.x as we read it.
var errBadRequest = errors.New("malformed request")

// errBadVersion means a request in another HTTP major version.
var errBadVersion = errors.New("unsupported HTTP version")

func serveConn(s Loop, h *held) {
	_ = h.SetReadDeadline(time.Now().Add(httpHeadTimeout)) // without it a slow client only holds a place longer
	br := bufio.NewReaderSize(h, 1024)
	req, err := readRequest(br)
	var resp []byte
	switch {
	case errors.Is(err, errHeaderTooLarge):
		resp = response(431, "", "request header too large\n", false, nil)
	case errors.Is(err, errBadVersion):
		resp = response(505, "", "HTTP version not supported\n", false, nil)
	case errors.Is(err, errBadRequest):
		resp = response(400, "", "bad request\n", false, nil)
	case err != nil:
		return // timeout, reset or EOF: nobody to answer
	}
	if !h.working() {
		return // evicted for a newer client meanwhile
	}
	if resp == nil {
		resp = route(s, req)
	}
	_ = h.SetWriteDeadline(time.Now().Add(httpWriteTimeout))
	if _, err := h.Write(resp); err != nil {
		return
	}
	h.idleAgain()
	linger(h.Conn, br)
}

// linger half-closes the connection and reads what the client still sends
// (a body we ignored, a pipelined request) until it closes its side, for
// at most httpLinger: closing a socket with unread input makes the kernel
// send a reset, which can destroy the answer before the client has read it.
func linger(c net.Conn, br *bufio.Reader) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite() // best effort: Close follows either way
	}
	_ = c.SetReadDeadline(time.Now().Add(httpLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(br, 1<<20))
}

// readRequest reads the request line and the headers, up to the empty
// line, within httpMaxHeader bytes. Headers are read only to be skipped:
// the answer depends on the method and path alone.
func readRequest(br *bufio.Reader) (httpRequest, error) {
	var req httpRequest
	budget := httpMaxHeader
	first := true
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return req, err
		}
		if first {
			if line == "" {
				continue // RFC 9112 section 2.2: ignore empty lines before the request line
			}
			first = false
			if req, err = parseRequestLine(line); err != nil {
				return req, err
			}
			continue
		}
		if line == "" {
			return req, nil
		}
		if line[0] == ' ' || line[0] == '\t' || !strings.Contains(line, ":") {
			return req, errBadRequest // obsolete line folding or not a header
		}
	}
}

// readLine reads one line of the request head, charging budget, with
// control's errors: a head over the budget is errHeaderTooLarge, a client
// that closed mid-line errBadRequest.
func readLine(br *bufio.Reader, budget *int) (string, error) {
	line, err := http1.ReadLine(br, budget)
	switch {
	case errors.Is(err, http1.ErrTooLong):
		return "", errHeaderTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "", errBadRequest
	case err != nil:
		return "", err
	}
	return string(line), nil
}

// parseRequestLine parses "METHOD SP request-target SP HTTP/1.x".
func parseRequestLine(line string) (httpRequest, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" || strings.ContainsAny(version, " ") || !strings.HasPrefix(version, "HTTP/") {
		return httpRequest{}, errBadRequest
	}
	if !strings.HasPrefix(version, "HTTP/1.") {
		return httpRequest{}, errBadVersion
	}
	for _, r := range method {
		if r < 'A' || r > 'Z' {
			return httpRequest{}, errBadRequest
		}
	}
	// absolute-form (a proxy's request): keep the path only.
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
		if j := strings.IndexByte(target, '/'); j >= 0 {
			target = target[j:]
		} else {
			target = "/"
		}
	}
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	return httpRequest{method: method, path: target}, nil
}

// route answers one request.
func route(s Loop, req httpRequest) []byte {
	head := req.method == "HEAD"
	switch req.path {
	case "/metrics", "/healthz", "/readyz":
	default:
		return response(404, "", "not found\n", head, nil)
	}
	if req.method != "GET" && !head {
		return response(405, "", "method not allowed\n", false, []string{"Allow: GET, HEAD"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpQueryTimeout)
	defer cancel()
	st, err := s.Query(ctx)
	if err != nil {
		// The loop is gone or stuck: neither healthy nor ready, no numbers.
		return response(503, "", "baton is not answering\n", head, nil)
	}
	switch req.path {
	case "/metrics":
		return response(200, MetricsContentType, string(FormatMetrics(st)), head, nil)
	case "/healthz":
		if st.Healthy {
			return response(200, "", "ok\n", head, nil)
		}
		return response(503, "", "not healthy\n", head, nil)
	default: // /readyz
		if st.Ready {
			return response(200, "", "ready\n", head, nil)
		}
		return response(503, "", "not ready\n", head, nil)
	}
}

var statusText = map[int]string{
	200: "OK",
	400: "Bad Request",
	404: "Not Found",
	405: "Method Not Allowed",
	431: "Request Header Fields Too Large",
	503: "Service Unavailable",
	505: "HTTP Version Not Supported",
}

// response renders a complete HTTP/1.1 response. A HEAD answer carries the
// Content-Length the GET body would have, and no body.
func response(code int, ctype, body string, head bool, extra []string) []byte {
	if ctype == "" {
		ctype = "text/plain; charset=utf-8"
	}
	var b bytes.Buffer
	b.Grow(160 + len(body))
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(statusText[code])
	b.WriteString("\r\nContent-Type: ")
	b.WriteString(ctype)
	b.WriteString("\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n")
	for _, h := range extra {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	if !head {
		b.WriteString(body)
	}
	return b.Bytes()
}

// FormatMetrics renders st in the Prometheus text exposition format 0.0.4.
func FormatMetrics(st supervisor.Status) []byte {
	var b bytes.Buffer
	family := func(name, typ, help string) {
		b.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
	}
	sample := func(name, labels, value string) {
		b.WriteString(name)
		if labels != "" {
			b.WriteString("{" + labels + "}")
		}
		b.WriteString(" " + value + "\n")
	}
	num := func(n int) string { return strconv.Itoa(n) }
	flag := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}

	family("baton_generation", "gauge", "Number of the current worker generation (1, 2, ...).")
	sample("baton_generation", "", num(st.Gen))
	family("baton_workers", "gauge", "Live workers by state.")
	sample("baton_workers", `state="starting"`, num(st.Starting))
	sample("baton_workers", `state="serving"`, num(st.Serving))
	sample("baton_workers", `state="retiring"`, num(st.Retiring))
	sample("baton_workers", `state="parked"`, num(st.ParkedWorkers))
	family("baton_reloads_total", "counter", "Reload requests by result: ok (swap complete), failed (rolled back or canary aborted), coalesced (folded into a pending swap), reverted (back to the parked generation during a bake).")
	sample("baton_reloads_total", `result="ok"`, num(st.ReloadsOK))
	sample("baton_reloads_total", `result="failed"`, num(st.ReloadsFailed))
	sample("baton_reloads_total", `result="coalesced"`, num(st.ReloadsCoalesced))
	sample("baton_reloads_total", `result="reverted"`, num(st.ReloadsReverted))
	family("baton_canary_percent", "gauge", "Share of new connections (percent) the generation in its canary gets (BATON_CANARY); 0 when no canary runs.")
	sample("baton_canary_percent", "", num(st.CanaryPercent))
	family("baton_canary_step", "gauge", "Step of the canary in progress (1, 2, ...); 0 when none.")
	sample("baton_canary_step", "", num(st.CanaryStep))
	family("baton_bake_seconds_left", "gauge", "Seconds left in the bake (BATON_BAKE), with the old generation parked; 0 when none.")
	sample("baton_bake_seconds_left", "", strconv.FormatFloat(st.BakeLeft.Seconds(), 'g', -1, 64))
	family("baton_worker_restarts_total", "counter", "Workers restarted after an exit.")
	sample("baton_worker_restarts_total", "", num(st.Restarts))
	family("baton_orphans_reaped_total", "counter", "Orphaned processes (not workers) reaped.")
	sample("baton_orphans_reaped_total", "", num(st.Orphans))
	family("baton_signals_forwarded_total", "counter", "Signals forwarded to worker process groups.")
	sample("baton_signals_forwarded_total", "", num(st.Forwarded))
	family("baton_workers_recycled_total", "counter", "Workers replaced for BATON_MAX_AGE or BATON_MAX_RSS.")
	sample("baton_workers_recycled_total", "", num(st.Recycled))
	family("baton_watchdog_kills_total", "counter", "Workers aborted by the watchdog (BATON_WATCHDOG): silent too long, or WATCHDOG=trigger.")
	sample("baton_watchdog_kills_total", "", num(st.WatchdogKills))
	family("baton_last_swap_seconds", "gauge", "Duration of the last completed generation swap, from reload to new generation ready.")
	sample("baton_last_swap_seconds", "", strconv.FormatFloat(st.LastSwap.Seconds(), 'g', -1, 64))
	family("baton_ready", "gauge", "1 while baton reports ready (as /readyz), else 0.")
	sample("baton_ready", "", flag(st.Ready))
	return b.Bytes()
}
