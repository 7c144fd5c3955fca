//go:build linux

package control

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/baton-init/baton/internal/metrictest"
	"github.com/baton-init/baton/supervisor"
)

// wantFamilies is the /metrics contract: every family and its type.
var wantFamilies = map[string]dto.MetricType{
	"baton_generation":              dto.MetricType_GAUGE,
	"baton_workers":                 dto.MetricType_GAUGE,
	"baton_reloads_total":           dto.MetricType_COUNTER,
	"baton_worker_restarts_total":   dto.MetricType_COUNTER,
	"baton_orphans_reaped_total":    dto.MetricType_COUNTER,
	"baton_signals_forwarded_total": dto.MetricType_COUNTER,
	"baton_workers_recycled_total":  dto.MetricType_COUNTER,
	"baton_watchdog_kills_total":    dto.MetricType_COUNTER,
	"baton_last_swap_seconds":       dto.MetricType_GAUGE,
	"baton_ready":                   dto.MetricType_GAUGE,
	"baton_canary_percent":          dto.MetricType_GAUGE,
	"baton_canary_step":             dto.MetricType_GAUGE,
	"baton_bake_seconds_left":       dto.MetricType_GAUGE,
}

// parseMetrics parses a scrape with the text parser Prometheus uses and
// checks the families and types against the contract.
func parseMetrics(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, text)
	}
	for name, typ := range wantFamilies {
		f := fams[name]
		if f == nil {
			t.Errorf("family %s missing", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("family %s has type %v, want %v", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("family %s has no HELP", name)
		}
	}
	for name := range fams {
		if _, ok := wantFamilies[name]; !ok {
			t.Errorf("unexpected family %s (add it to the contract and docs/operations.md)", name)
		}
	}
	return fams
}

func TestFormatMetrics(t *testing.T) {
	st := supervisor.Status{
		Gen: 7, Ready: true, Healthy: true, Starting: 1, Serving: 4, Retiring: 2,
		Canary: 8, CanaryStep: 2, CanaryPercent: 25, Parked: 6, ParkedWorkers: 29, BakeLeft: 90 * time.Second,
		Stats: supervisor.Stats{
			ReloadsOK: 6, ReloadsFailed: 2, ReloadsCoalesced: 3, ReloadsReverted: 23, Restarts: 5, Orphans: 11,
			Forwarded: 13, Recycled: 17, WatchdogKills: 19, LastSwap: 1250 * time.Millisecond,
		},
	}
	text := FormatMetrics(st)
	fams := parseMetrics(t, text)
	checks := []struct {
		fam  string
		kv   []string
		want float64
	}{
		{"baton_generation", nil, 7},
		{"baton_workers", []string{"state", "starting"}, 1},
		{"baton_workers", []string{"state", "serving"}, 4},
		{"baton_workers", []string{"state", "retiring"}, 2},
		{"baton_workers", []string{"state", "parked"}, 29},
		{"baton_reloads_total", []string{"result", "ok"}, 6},
		{"baton_reloads_total", []string{"result", "failed"}, 2},
		{"baton_reloads_total", []string{"result", "coalesced"}, 3},
		{"baton_reloads_total", []string{"result", "reverted"}, 23},
		{"baton_canary_percent", nil, 25},
		{"baton_canary_step", nil, 2},
		{"baton_bake_seconds_left", nil, 90},
		{"baton_worker_restarts_total", nil, 5},
		{"baton_orphans_reaped_total", nil, 11},
		{"baton_signals_forwarded_total", nil, 13},
		{"baton_workers_recycled_total", nil, 17},
		{"baton_watchdog_kills_total", nil, 19},
		{"baton_last_swap_seconds", nil, 1.25},
		{"baton_ready", nil, 1},
	}
	for _, c := range checks {
		if got := metrictest.Value(fams, c.fam, c.kv...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.fam, c.kv, got, c.want)
		}
	}
	if n := len(fams["baton_workers"].GetMetric()); n != 4 {
		t.Errorf("baton_workers has %d series, want 4", n)
	}
	if n := len(fams["baton_reloads_total"].GetMetric()); n != 4 {
		t.Errorf("baton_reloads_total has %d series, want 4", n)
	}

	// The same text through the Decoder API, as a scraper negotiating
	// text/plain 0.0.4 would read it.
	dec := expfmt.NewDecoder(bytes.NewReader(text), expfmt.NewFormat(expfmt.TypeTextPlain))
	n := 0
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoder: %v", err)
		}
		n++
	}
	if n != len(wantFamilies) {
		t.Errorf("decoder read %d families, want %d", n, len(wantFamilies))
	}

	// Not ready renders as 0, a zero swap as 0.
	fams = parseMetrics(t, FormatMetrics(supervisor.Status{}))
	if got := metrictest.Value(fams, "baton_ready"); got != 0 {
		t.Errorf("baton_ready = %v for a zero status", got)
	}
	if got := metrictest.Value(fams, "baton_last_swap_seconds"); got != 0 {
		t.Errorf("baton_last_swap_seconds = %v for a zero status", got)
	}
}

// fakeLoop is the loop as control sees it: Query answers the status the
// test set.
type fakeLoop struct {
	mu sync.Mutex
	st supervisor.Status
}

func (f *fakeLoop) set(st supervisor.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
}

func (f *fakeLoop) Query(context.Context) (supervisor.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, nil
}

func (f *fakeLoop) Reload(context.Context, string) (supervisor.Outcome, error) {
	return supervisor.Outcome{Reason: "no reloads here"}, nil
}

// serveFake serves HTTP for a fakeLoop whose status is st.
func serveFake(t *testing.T, st supervisor.Status) (*fakeLoop, string) {
	t.Helper()
	f := &fakeLoop{st: st}
	l, err := ServeHTTP(f, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return f, l.Addr().String()
}

// get does one request with Go's own client (a strict HTTP/1.1 parser).
func get(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	if resp.ContentLength != int64(len(body)) && method != "HEAD" {
		t.Fatalf("%s %s: Content-Length %d, body %d bytes", method, url, resp.ContentLength, len(body))
	}
	if !resp.Close {
		t.Fatalf("%s %s: no Connection: close", method, url)
	}
	return resp, body
}

func wantCode(t *testing.T, base, path string, code int) {
	t.Helper()
	if resp, body := get(t, "GET", base+path); resp.StatusCode != code {
		t.Fatalf("GET %s: %d %q, want %d", path, resp.StatusCode, body, code)
	}
}

func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := get(t, "GET", base+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("/metrics Content-Type %q is not the text format (got %v)", resp.Header.Get("Content-Type"), f)
	}
	return parseMetrics(t, body)
}

// TestHTTPFollowsStatus: /readyz, /healthz and /metrics answer what the
// loop's status says, at each step of the lifecycle that supervisor's
// TestStatusAcrossLifecycle takes the loop through: start, swaps, a
// coalesced and a failed reload and a delayed shutdown.
func TestHTTPFollowsStatus(t *testing.T) {
	loop, addr := serveFake(t, supervisor.Status{Gen: 1, Healthy: true, Starting: 2})
	base := "http://" + addr

	// Before the first generation is ready: unready, healthy.
	wantCode(t, base, "/readyz", 503)
	wantCode(t, base, "/healthz", 200)

	loop.set(supervisor.Status{Gen: 1, Ready: true, Healthy: true, Serving: 2})
	wantCode(t, base, "/readyz", 200)
	fams := scrape(t, base)
	if metrictest.Value(fams, "baton_ready") != 1 || metrictest.Value(fams, "baton_generation") != 1 || metrictest.Value(fams, "baton_workers", "state", "serving") != 2 {
		t.Fatal("metrics do not show generation 1 ready with 2 serving")
	}

	// A swap: ready all along.
	loop.set(supervisor.Status{Gen: 1, Ready: true, Healthy: true, Serving: 2, Starting: 2})
	wantCode(t, base, "/readyz", 200)
	loop.set(supervisor.Status{Gen: 2, Ready: true, Healthy: true, Serving: 2, Stats: supervisor.Stats{ReloadsOK: 1}})
	wantCode(t, base, "/readyz", 200)
	fams = scrape(t, base)
	if metrictest.Value(fams, "baton_generation") != 2 || metrictest.Value(fams, "baton_reloads_total", "result", "ok") != 1 {
		t.Fatal("metrics do not show generation 2 after one ok reload")
	}

	// Two reloads at once, one coalesced, then a failed swap.
	loop.set(supervisor.Status{Gen: 3, Ready: true, Healthy: true, Serving: 2, Stats: supervisor.Stats{
		ReloadsOK: 2, ReloadsFailed: 1, ReloadsCoalesced: 1, LastSwap: 3 * time.Millisecond}})
	fams = scrape(t, base)
	for _, r := range []struct {
		result string
		want   float64
	}{{"ok", 2}, {"failed", 1}, {"coalesced", 1}} {
		if got := metrictest.Value(fams, "baton_reloads_total", "result", r.result); got != r.want {
			t.Errorf("baton_reloads_total{result=%q} = %v, want %v", r.result, got, r.want)
		}
	}
	if got := metrictest.Value(fams, "baton_last_swap_seconds"); got < 0 {
		t.Errorf("baton_last_swap_seconds = %v", got)
	}

	// Shutdown with a delay: unready at once, still healthy and serving.
	loop.set(supervisor.Status{Gen: 3, Healthy: true, Stopping: true, Serving: 2})
	wantCode(t, base, "/readyz", 503)
	wantCode(t, base, "/healthz", 200)
	if metrictest.Value(scrape(t, base), "baton_ready") != 0 {
		t.Fatal("baton_ready is not 0 during the shutdown delay")
	}
}

// raw sends req as is and returns the whole answer (the server closes).
func raw(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer to %q: %v (got %q)", req, err, b)
	}
	return string(b)
}

func statusLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestHTTPProtocol: methods, paths, malformed and oversized requests.
func TestHTTPProtocol(t *testing.T) {
	_, addr := serveFake(t, supervisor.Status{Gen: 1, Ready: true, Healthy: true, Serving: 2})
	base := "http://" + addr

	cases := []struct {
		req, status string
	}{
		{"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"},
		{"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"},
		{"GET /healthz HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"},
		{"GET /healthz HTTP/1.0\n\n", "HTTP/1.1 200 OK"}, // bare LF
		{"\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"},
		{"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"},
		{"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"},
		{"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"},
		{"POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", "HTTP/1.1 405 Method Not Allowed"},
		{"DELETE /readyz HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
		{"GET /readyz\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"get /readyz HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"GET /readyz HTTP/1.1\r\nno-colon\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"GET /readyz HTTP/2.0\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported"},
		{"GET /readyz HTTP/1.1\r\nX: " + strings.Repeat("a", httpMaxHeader) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
	}
	for _, c := range cases {
		ans := raw(t, addr, c.req)
		if got := statusLine(ans); got != c.status {
			t.Errorf("%.40q: %q, want %q", c.req, got, c.status)
		}
		if !strings.Contains(ans, "\r\nConnection: close\r\n") || !strings.Contains(ans, "\r\nContent-Length: ") {
			t.Errorf("%.40q: no Connection: close or Content-Length in %q", c.req, ans)
		}
	}
	if ans := raw(t, addr, "DELETE /readyz HTTP/1.1\r\n\r\n"); !strings.Contains(ans, "\r\nAllow: GET, HEAD\r\n") {
		t.Errorf("405 without Allow: %q", ans)
	}
	// A client that closes without finishing its request gets nothing and
	// costs nothing.
	if ans := raw(t, addr, "GET /readyz HTTP/1.1\r\nHost: x\r\n"); ans != "" && statusLine(ans) != "HTTP/1.1 400 Bad Request" {
		t.Errorf("truncated request: %q", ans)
	}

	// HEAD: same headers as GET, no body.
	getResp, getBody := get(t, "GET", base+"/metrics")
	headResp, headBody := get(t, "HEAD", base+"/metrics")
	if headResp.StatusCode != 200 || len(headBody) != 0 || headResp.ContentLength != int64(len(getBody)) {
		t.Errorf("HEAD /metrics: %d, %d body bytes, Content-Length %d (GET body %d)", headResp.StatusCode, len(headBody), headResp.ContentLength, len(getBody))
	}
	if getResp.Header.Get("Content-Type") != MetricsContentType {
		t.Errorf("Content-Type %q", getResp.Header.Get("Content-Type"))
	}

	// Many clients at once, more than the connection bound: all answered.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Go(func() {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A slow client holding a connection does not block the others.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "GET /readyz HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, base, "/readyz", 200)
	// ...and is answered once it finishes.
	if _, err := io.WriteString(slow, "\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = slow.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(slow).ReadString('\n')
	if err != nil || line != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("slow client: %q %v", line, err)
	}
}

// TestServeHTTPClose: closing the returned listener stops serving.
func TestServeHTTPClose(t *testing.T) {
	sup := &fakeLoop{}
	l, err := ServeHTTP(sup, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Close")
	}
	if _, err := ServeHTTP(sup, "not-an-address"); err == nil {
		t.Fatal("no error for a bad address")
	}
}

// FuzzReadRequest: no request bytes make the parser panic (a panic in any
// goroutine of PID 1 takes the whole container down) or read past its
// header budget, whatever they hold and however they arrive. An error is
// one serveConn answers (431, 505, 400) or the client's EOF; a request has
// a method of capital letters and a path without query or fragment, and
// ends at its empty line.
func FuzzReadRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
		"\r\n\r\nHEAD /readyz HTTP/1.0\r\n\r\n",
		"GET /healthz HTTP/2.0\r\n\r\n",
		"GET\r\n\r\n",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n",
		"\x00\xff GET / HTTP/1.1\n\n",
		"GET http://host:9090/metrics?x=1#f HTTP/1.1\n\n",
		"GET /readyz HTTP/1.1\r\n folded\r\n\r\n",
		"GET /readyz HTTP/1.1\r\nHost",
		"get / HTTP/1.1\r\n\r\n",
		"GET  / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		strings.Repeat("\r\n", 5000),
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &counted{r: bytes.NewReader(data)}
		br := bufio.NewReaderSize(src, 1024) // as serveConn reads
		req, err := readRequest(br)
		if src.n > httpMaxHeader+1024 {
			t.Fatalf("read %d bytes: past the %d-byte budget and one buffer", src.n, httpMaxHeader)
		}
		switch err {
		case nil, errHeaderTooLarge, errBadVersion, errBadRequest, io.EOF:
		default:
			t.Fatalf("readRequest(%.200q): unclassified error %v", data, err)
		}
		// A client that sends a byte at a time gets the same answer.
		req1, err1 := readRequest(bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(data)), 1024))
		if req1 != req || err1 != err {
			t.Fatalf("readRequest(%.200q) = %+v, %v; a byte at a time %+v, %v", data, req, err, req1, err1)
		}
		if err != nil {
			return
		}
		head := data[:src.n-br.Buffered()]
		if len(head) > httpMaxHeader || !(bytes.HasSuffix(head, []byte("\n\n")) || bytes.HasSuffix(head, []byte("\n\r\n"))) {
			t.Errorf("readRequest(%.200q) = %+v after %d bytes %.200q: past the budget or not at an empty line", data, req, len(head), head)
		}
		if req.method == "" || strings.Trim(req.method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" || strings.ContainsAny(req.path, "?#") {
			t.Errorf("readRequest(%.200q) = %+v", data, req)
		}
	})
}

// counted counts the bytes read through it.
type counted struct {
	r io.Reader
	n int
}

func (c *counted) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += k
	return k, err
}
