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
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/reaper"

	"github.com/baton-init/baton/handoff"
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

// value returns the value of the sample of fam whose labels match kv
// (name, value pairs); -1 when there is none.
func value(fams map[string]*dto.MetricFamily, fam string, kv ...string) float64 {
	f := fams[fam]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(kv); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		default:
			return m.GetGauge().GetValue()
		}
	}
	return -1
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
		if got := value(fams, c.fam, c.kv...); got != c.want {
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
	if got := value(fams, "baton_ready"); got != 0 {
		t.Errorf("baton_ready = %v for a zero status", got)
	}
	if got := value(fams, "baton_last_swap_seconds"); got != 0 {
		t.Errorf("baton_last_swap_seconds = %v for a zero status", got)
	}
}

// fakeWorld stands in for the kernel: workers are pids that "exit" when
// they receive a stopping signal (or when the test says so), and each exit
// raises a SIGCHLD on the loop's signal channel.
type fakeWorld struct {
	t       *testing.T
	sigs    chan os.Signal
	started chan int // pids, in start order

	mu     sync.Mutex
	pid    int
	alive  map[int]bool
	exits  []reaper.Exit
	timers []fakeTimer
}

type fakeTimer struct {
	d time.Duration
	f func()
}

type fakeWorker struct {
	pid int
	w   *fakeWorld
}

func (f *fakeWorker) PID() int { return f.pid }

func (f *fakeWorker) Signal(sig unix.Signal) error {
	if sig == unix.SIGTERM || sig == unix.SIGKILL {
		f.w.exit(f.pid, 0)
	}
	return nil
}

func (w *fakeWorld) start(gen, idx int, _ []int, _ bool) (supervisor.Worker, error) {
	w.mu.Lock()
	w.pid++
	pid := w.pid
	w.alive[pid] = true
	w.mu.Unlock()
	w.started <- pid
	return &fakeWorker{pid: pid, w: w}, nil
}

// exit makes pid exit with code and tells the loop (SIGCHLD).
func (w *fakeWorld) exit(pid, code int) {
	w.mu.Lock()
	if w.alive[pid] {
		delete(w.alive, pid)
		w.exits = append(w.exits, reaper.Exit{PID: pid, Status: unix.WaitStatus(code << 8)})
	}
	w.mu.Unlock()
	w.sigs <- unix.SIGCHLD
}

func (w *fakeWorld) reap() ([]reaper.Exit, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.exits
	w.exits = nil
	return out, nil
}

func (w *fakeWorld) afterFunc(d time.Duration, f func()) {
	w.mu.Lock()
	w.timers = append(w.timers, fakeTimer{d, f})
	w.mu.Unlock()
}

// fire runs (once) every timer armed for exactly d.
func (w *fakeWorld) fire(d time.Duration) {
	w.mu.Lock()
	var run []func()
	kept := w.timers[:0]
	for _, tm := range w.timers {
		if tm.d == d {
			run = append(run, tm.f)
		} else {
			kept = append(kept, tm)
		}
	}
	w.timers = kept
	w.mu.Unlock()
	if len(run) == 0 {
		w.t.Fatalf("no timer armed for %v", d)
	}
	for _, f := range run {
		f()
	}
}

func (w *fakeWorld) nextPID() int {
	w.t.Helper()
	select {
	case pid := <-w.started:
		return pid
	case <-time.After(5 * time.Second):
		w.t.Fatal("no worker started")
		return 0
	}
}

// Distinct fake durations, so a test can fire one kind of timer.
const (
	fakeShutdownDelay = 7 * time.Hour
	fakeLong          = 100 * time.Hour
)

// startFake runs a supervisor.Supervisor over a fakeWorld with 2 workers, notify
// readiness and a shutdown delay, and serves HTTP for it.
func startFake(t *testing.T) (*supervisor.Supervisor, *fakeWorld, chan handoff.Note, string, <-chan int) {
	t.Helper()
	w := &fakeWorld{t: t, sigs: make(chan os.Signal, 256), started: make(chan int, 64), alive: map[int]bool{}}
	notes := make(chan handoff.Note, 16)
	sup := supervisor.New(supervisor.Options{
		Workers:       2,
		Ready:         supervisor.ReadyMode{Kind: "notify"},
		ReadyTimeout:  fakeLong,
		ReloadSignal:  unix.SIGHUP,
		StopSignal:    unix.SIGTERM,
		StopTimeout:   fakeLong,
		ShutdownDelay: fakeShutdownDelay,
		Restart:       supervisor.RestartOnFailure,
		RestartLimit:  supervisor.RestartLimit{Count: 5, Window: time.Minute},
	}, zerolog.Nop())
	sup.Start = w.start
	sup.Reap = w.reap
	sup.HasChildren = func() bool { return false }
	sup.KillAll = func(unix.Signal) error { return nil }
	sup.KillGroup = func(int, unix.Signal) error { return nil } // no real process group is ever signalled
	sup.RSS = func(int) (int64, error) { return 0, nil }
	sup.AfterFunc = w.afterFunc
	sup.Notes = notes
	done := make(chan int, 1)
	go func() { done <- sup.Run(w.sigs) }()

	l, err := ServeHTTP(sup, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return sup, w, notes, l.Addr().String(), done
}

func query(t *testing.T, s Loop) supervisor.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Query(ctx)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	return st
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

// until queries the loop until pred holds (the loop takes signals, notes
// and queries in any order, so a state change shows up a few queries
// later), checking each snapshot on the way with each (may be nil).
func until(t *testing.T, s Loop, what string, pred func(supervisor.Status) bool, each func(supervisor.Status)) supervisor.Status {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for {
		st := query(t, s)
		if each != nil {
			each(st)
		}
		if pred(st) {
			return st
		}
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s: %+v", what, st)
		}
	}
}

// TestHTTPReadyAcrossLifecycle drives a real supervisor.Supervisor (fake processes)
// through start, swaps, a coalesced and a failed reload and a delayed
// shutdown, and checks /readyz, /healthz and /metrics at every step:
// ready only once the first generation is, never unready in the middle
// of a swap, unready from the moment shutdown begins.
func TestHTTPReadyAcrossLifecycle(t *testing.T) {
	sup, w, notes, addr, done := startFake(t)
	base := "http://" + addr
	ready := func(pid int) { notes <- handoff.Note{PID: pid, Ready: true} }
	mustBeReady := func(st supervisor.Status) {
		if !st.Ready {
			t.Fatalf("not ready in the middle of a swap: %+v", st)
		}
	}

	a, b := w.nextPID(), w.nextPID()
	st := query(t, sup)
	if st.Ready || !st.Healthy || st.Starting != 2 || st.Gen != 1 {
		t.Fatalf("before ready: %+v", st)
	}
	wantCode(t, base, "/readyz", 503)
	wantCode(t, base, "/healthz", 200)
	ready(a)
	until(t, sup, "one worker ready", func(st supervisor.Status) bool { return st.Serving == 1 }, nil)
	if st := query(t, sup); st.Ready {
		t.Fatalf("ready with one of two workers ready: %+v", st)
	}
	ready(b)
	until(t, sup, "generation 1 ready", func(st supervisor.Status) bool { return st.Ready }, nil)
	wantCode(t, base, "/readyz", 200)
	fams := scrape(t, base)
	if value(fams, "baton_ready") != 1 || value(fams, "baton_generation") != 1 || value(fams, "baton_workers", "state", "serving") != 2 {
		t.Fatal("metrics do not show generation 1 ready with 2 serving")
	}

	// A swap: ready all along.
	w.sigs <- unix.SIGHUP
	c, d := w.nextPID(), w.nextPID()
	st = until(t, sup, "swap begun", func(st supervisor.Status) bool { return st.Starting == 2 }, mustBeReady)
	if st.Gen != 1 || st.Serving != 2 {
		t.Fatalf("mid-swap: %+v", st)
	}
	wantCode(t, base, "/readyz", 200)
	ready(c)
	until(t, sup, "one new worker ready", func(st supervisor.Status) bool { return st.Serving == 3 }, mustBeReady)
	ready(d)
	st = until(t, sup, "swap complete", func(st supervisor.Status) bool { return st.Gen == 2 }, mustBeReady)
	if st.ReloadsOK != 1 {
		t.Fatalf("after swap: %+v", st)
	}
	until(t, sup, "old generation gone", func(st supervisor.Status) bool { return st.Retiring == 0 && st.Serving == 2 }, mustBeReady)
	wantCode(t, base, "/readyz", 200)
	fams = scrape(t, base)
	if value(fams, "baton_generation") != 2 || value(fams, "baton_reloads_total", "result", "ok") != 1 {
		t.Fatal("metrics do not show generation 2 after one ok reload")
	}

	// Two reloads at once: one swap, one coalesced, then the coalesced
	// swap fails (a new worker exits before ready): still ready.
	w.sigs <- unix.SIGHUP
	w.sigs <- unix.SIGHUP
	e, f := w.nextPID(), w.nextPID()
	// The second HUP must reach the loop before the new workers' notes,
	// which come on another channel; otherwise it starts a swap of its own.
	until(t, sup, "second reload coalesced", func(st supervisor.Status) bool { return st.ReloadsCoalesced == 1 }, mustBeReady)
	ready(e)
	ready(f)
	g, h := w.nextPID(), w.nextPID() // the coalesced swap
	st = until(t, sup, "coalesced swap begun", func(st supervisor.Status) bool { return st.Gen == 3 && st.Starting == 2 }, mustBeReady)
	if st.ReloadsCoalesced != 1 {
		t.Fatalf("coalesced swap: %+v", st)
	}
	ready(g)
	w.exit(h, 3)
	st = until(t, sup, "swap aborted", func(st supervisor.Status) bool { return st.ReloadsFailed == 1 }, mustBeReady)
	if st.Gen != 3 {
		t.Fatalf("after failed swap: %+v", st)
	}
	fams = scrape(t, base)
	for _, r := range []struct {
		result string
		want   float64
	}{{"ok", 2}, {"failed", 1}, {"coalesced", 1}} {
		if got := value(fams, "baton_reloads_total", "result", r.result); got != r.want {
			t.Errorf("baton_reloads_total{result=%q} = %v, want %v", r.result, got, r.want)
		}
	}
	if got := value(fams, "baton_last_swap_seconds"); got < 0 {
		t.Errorf("baton_last_swap_seconds = %v", got)
	}

	// Shutdown with a delay: unready at once, still healthy and serving.
	w.sigs <- unix.SIGTERM
	st = until(t, sup, "shutdown begun", func(st supervisor.Status) bool { return st.Stopping }, nil)
	if st.Ready || !st.Healthy || st.Serving != 2 {
		t.Fatalf("during shutdown delay: %+v", st)
	}
	wantCode(t, base, "/readyz", 503)
	wantCode(t, base, "/healthz", 200)
	if value(scrape(t, base), "baton_ready") != 0 {
		t.Fatal("baton_ready is not 0 during the shutdown delay")
	}
	// A reload during the delay is ignored. USR1 behind it is a barrier:
	// the signal channel is FIFO, so once USR1 was forwarded, the HUP was
	// handled.
	fwd := st.Forwarded
	w.sigs <- unix.SIGHUP
	w.sigs <- unix.SIGUSR1
	st = until(t, sup, "USR1 forwarded", func(st supervisor.Status) bool { return st.Forwarded > fwd }, nil)
	if st.Ready || st.Starting != 0 || st.Gen != 3 {
		t.Fatalf("reload during shutdown delay: %+v", st)
	}
	w.fire(fakeShutdownDelay)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not end after the shutdown delay")
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
	sup, w, notes, addr, _ := startFake(t)
	notes <- handoff.Note{PID: w.nextPID(), Ready: true}
	notes <- handoff.Note{PID: w.nextPID(), Ready: true}
	until(t, sup, "generation 1 ready", func(st supervisor.Status) bool { return st.Ready }, nil)
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
	sup := supervisor.New(supervisor.Options{}, zerolog.Nop())
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
