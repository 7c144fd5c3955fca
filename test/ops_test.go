package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/demo"
	"github.com/baton-init/baton/internal/metrictest"
)

// Operations: BATON_HTTP_ADDR (/metrics, /healthz, /readyz), baton health
// and baton reload, BATON_SHUTDOWN_DELAY, BATON_WATCH, BATON_MAX_AGE and
// BATON_MAX_RSS, BATON_USER and BATON_ULIMITS.

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartBatonHTTP starts baton with BATON_HTTP_ADDR on a free port and
// returns it with the endpoint's base URL. The port can be taken between
// the probe and baton's bind: baton then exits 2 naming BATON_HTTP_ADDR,
// and the start is retried once on another port.
func StartBatonHTTP(t testing.TB, env []string, args ...string) (*Baton, string) {
	t.Helper()
	for attempt := 0; attempt < 2; attempt++ {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		b := StartBaton(t, Opt{Env: append(append([]string(nil), env...), "BATON_HTTP_ADDR="+addr)}, args...)
		serving, refused := false, false
		b.Err.waitFor(t, "http serving", deadline, func(all []string, evs []Event) bool {
			for _, ev := range evs {
				if ev.Msg() == "http serving" {
					if ev.Str("addr") != addr {
						t.Fatalf("http serving on %q, want %q", ev.Str("addr"), addr)
					}
					serving = true
				}
			}
			for _, l := range all {
				if strings.Contains(l, "BATON_HTTP_ADDR:") {
					refused = true
				}
			}
			return serving || refused
		})
		if serving {
			return b, "http://" + addr
		}
		t.Logf("attempt %d: %s was taken, retrying", attempt+1, addr)
		b.Wait()
	}
	t.Fatal("no free port for BATON_HTTP_ADDR after 2 attempts")
	return nil, ""
}

// opsClient never reuses a connection: every probe is a fresh one, as a
// kubelet's is.
var opsClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// httpGet returns the status, headers and body of GET url.
func httpGet(t testing.TB, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := opsClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func wantStatus(t testing.TB, url string, want int) {
	t.Helper()
	if code, _, body := httpGet(t, url); code != want {
		t.Fatalf("GET %s: %d %q, want %d", url, code, body, want)
	}
}

// opsScrape fetches /metrics and parses it with Prometheus' own parser.
func opsScrape(t testing.TB, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, hdr, body := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	if f := expfmt.ResponseFormat(hdr); f.FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("/metrics Content-Type %q is not the Prometheus text format", hdr.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	for name, typ := range map[string]dto.MetricType{
		"baton_generation": dto.MetricType_GAUGE, "baton_workers": dto.MetricType_GAUGE,
		"baton_reloads_total": dto.MetricType_COUNTER, "baton_worker_restarts_total": dto.MetricType_COUNTER,
		"baton_orphans_reaped_total": dto.MetricType_COUNTER, "baton_signals_forwarded_total": dto.MetricType_COUNTER,
		"baton_workers_recycled_total": dto.MetricType_COUNTER, "baton_last_swap_seconds": dto.MetricType_GAUGE,
		"baton_ready": dto.MetricType_GAUGE, "baton_watchdog_kills_total": dto.MetricType_COUNTER,
		"baton_canary_percent": dto.MetricType_GAUGE, "baton_canary_step": dto.MetricType_GAUGE,
		"baton_bake_seconds_left": dto.MetricType_GAUGE,
	} {
		if f := fams[name]; f == nil || f.GetType() != typ {
			t.Fatalf("/metrics: family %s missing or not a %v:\n%s", name, typ, body)
		}
	}
	return fams
}

// eventTime is an event's zerolog timestamp.
func eventTime(t testing.TB, ev Event) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, ev.Str("time"))
	if err != nil {
		t.Fatalf("event %q: bad time %q: %v", ev.Msg(), ev.Str("time"), err)
	}
	return ts
}

// appAddr is the real address of baton's first listener.
func appAddr(b *Baton) string {
	return b.Expect("listener opened").Str("addr")
}

// poller GETs url on fresh connections until stopped, counting answers
// that are not 200 (errors included).
type poller struct {
	polls, bad atomic.Int64
	mu         sync.Mutex
	first      string // first bad answer, for the failure message
	stop       chan struct{}
	done       chan struct{}
}

func startPoller(url string) *poller {
	p := &poller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			resp, err := opsClient.Get(url)
			what := ""
			if err != nil {
				what = err.Error()
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					what = resp.Status
				}
			}
			p.polls.Add(1)
			if what != "" {
				p.bad.Add(1)
				p.mu.Lock()
				if p.first == "" {
					p.first = what
				}
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *poller) Stop() { close(p.stop); <-p.done }

// TestOpsMetricsAndReadyAcrossSwap: /metrics parses and shows the swap
// (generation 1 -> 2, one ok reload); /healthz and /readyz answer 200, and
// /readyz never answers anything else while a swap is under way.
func TestOpsMetricsAndReadyAcrossSwap(t *testing.T) {
	b, base := StartBatonHTTP(t, []string{
		"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify",
		// Each new worker takes 500ms to become ready: the swap lasts long
		// enough for the poller to probe it many times.
		"HELLO_BOOT_DELAY=500ms",
	}, "--", batonBin, "hello")
	b.Expect("generation ready", "gen", 1)
	wantStatus(t, base+"/healthz", 200)
	wantStatus(t, base+"/readyz", 200)
	fams := opsScrape(t, base)
	if g := metrictest.Value(fams, "baton_generation"); g != 1 {
		t.Fatalf("baton_generation = %v before the swap, want 1", g)
	}
	if r := metrictest.Value(fams, "baton_ready"); r != 1 {
		t.Fatalf("baton_ready = %v, want 1", r)
	}

	p := startPoller(base + "/readyz")
	defer func() {
		select {
		case <-p.done:
		default:
			p.Stop()
		}
	}()
	b.Signal(syscall.SIGHUP)
	b.Expect("swap begun", "gen", 2)
	atBegin := p.polls.Load()
	b.Expect("swap complete", "gen", 2)
	during := p.polls.Load() - atBegin
	p.Stop()
	if bad := p.bad.Load(); bad != 0 {
		t.Fatalf("/readyz answered %d of %d probes with something else than 200 around a swap (first: %s)", bad, p.polls.Load(), p.first)
	}
	if during < 5 {
		t.Fatalf("only %d /readyz probes while the swap was under way: the test proves nothing", during)
	}
	t.Logf("/readyz: %d probes, %d of them during the swap, all 200", p.polls.Load(), during)

	fams = opsScrape(t, base)
	if g := metrictest.Value(fams, "baton_generation"); g != 2 {
		t.Fatalf("baton_generation = %v after the swap, want 2", g)
	}
	if n := metrictest.Value(fams, "baton_reloads_total", "result", "ok"); n != 1 {
		t.Fatalf(`baton_reloads_total{result="ok"} = %v, want 1`, n)
	}
	if n := metrictest.Value(fams, "baton_reloads_total", "result", "failed"); n != 0 {
		t.Fatalf(`baton_reloads_total{result="failed"} = %v, want 0`, n)
	}
	if s := metrictest.Value(fams, "baton_last_swap_seconds"); s < 0.5 || s > 30 {
		t.Fatalf("baton_last_swap_seconds = %v, want the swap's duration (>= the 500ms boot delay)", s)
	}
	if n := metrictest.Value(fams, "baton_workers", "state", "serving"); n != 1 {
		t.Fatalf(`baton_workers{state="serving"} = %v, want 1`, n)
	}
	wantStatus(t, base+"/healthz", 200)
	b.Signal(syscall.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// TestOpsShutdownDelay: with BATON_SHUTDOWN_DELAY, /readyz turns 503 the
// moment shutdown begins while the workers keep serving, and they are
// stopped only once the delay is over.
func TestOpsShutdownDelay(t *testing.T) {
	const delay = 2 * time.Second
	b, base := StartBatonHTTP(t, []string{
		"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify", "BATON_SHUTDOWN_DELAY=2s",
	}, "--", batonBin, "hello")
	app := "http://" + appAddr(b) + "/"
	b.Expect("generation ready")
	wantStatus(t, base+"/readyz", 200)

	b.Signal(syscall.SIGTERM)
	begun := b.Expect("shutdown begun", "signal", "SIGTERM")
	if d, _ := begun["delay"].(float64); time.Duration(d*float64(time.Millisecond)) != delay {
		t.Fatalf("shutdown begun with delay %vms, want %v", begun["delay"], delay)
	}
	// The loop is not ready from the moment it logged "shutdown begun".
	wantStatus(t, base+"/readyz", 503)
	wantStatus(t, base+"/healthz", 200)
	if r := metrictest.Value(opsScrape(t, base), "baton_ready"); r != 0 {
		t.Fatalf("baton_ready = %v during the shutdown delay, want 0", r)
	}
	// The workers still serve, on a fresh connection, before "stopping".
	code, hdr, _ := httpGet(t, app)
	if code != 200 || hdr.Get("X-Baton-Generation") != "1" {
		t.Fatalf("app during the shutdown delay: %d generation %q", code, hdr.Get("X-Baton-Generation"))
	}
	if b.Count("stopping") != 0 || b.Count("worker exited") != 0 {
		t.Fatal("workers were stopped before the app answered inside the shutdown delay")
	}
	stopping := b.Expect("stopping")
	if el := eventTime(t, stopping).Sub(eventTime(t, begun)); el < delay {
		t.Fatalf("workers stopped %v after shutdown began, want >= %v", el, delay)
	}
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// TestOpsProbesThroughShutdown: what /healthz, /readyz and `baton health`
// answer in each phase of a shutdown, as docs/operations.md tables it.
// During BATON_SHUTDOWN_DELAY the workers still serve: /readyz and `baton
// health` say not ready (stopping=true), so that load balancers stop
// sending, while /healthz, the liveness probe, stays 200. Once baton sends
// the stop signal, /healthz is 503 too. The delay is long and a second
// TERM ends it, and the worker stays on its stop signal (USR2) until a
// third TERM, so no phase ends before its checks are done.
func TestOpsProbesThroughShutdown(t *testing.T) {
	b, base := StartBatonHTTP(t, []string{
		"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms", "BATON_SHUTDOWN_DELAY=10m",
		"BATON_STOP_SIGNAL=USR2", "BATON_STOP_TIMEOUT=10m",
	}, "--", python(t), testdata("sigworker.py"))
	pid := strconv.Itoa(b.PID())
	worker := b.Expect("worker started").Int("pid")
	b.Expect("generation ready")
	b.ExpectOut(0, fmt.Sprintf("ready pid=%d ", worker)) // its handlers are in place
	probes := func(phase string, healthz, readyz, health int, status string) {
		t.Helper()
		for _, p := range []struct {
			path string
			want int
		}{{"/healthz", healthz}, {"/readyz", readyz}} {
			if code, _, body := httpGet(t, base+p.path); code != p.want {
				t.Errorf("%s: GET %s: %d %q, want %d", phase, p.path, code, body, p.want)
			}
		}
		code, out := runBaton(t, "health", "--pid", pid)
		if code != health || !strings.Contains(out, status) {
			t.Errorf("%s: baton health: exit %d %q, want %d and %q", phase, code, out, health, status)
		}
	}
	probes("serving", 200, 200, 0, "ready: generation 1, 1 serving")

	b.Signal(syscall.SIGTERM)
	b.Expect("shutdown begun", "signal", "SIGTERM")
	probes("shutdown delay", 200, 503, 1, "not ready: generation 1, 1 serving, 0 starting, stopping=true")
	if b.Count("stopping") != 0 {
		t.Fatal("workers were stopped inside the shutdown delay")
	}

	b.Signal(syscall.SIGTERM) // a second TERM ends the delay
	b.Expect("stopping")
	b.ExpectOut(0, fmt.Sprintf("sig SIGUSR2 pid=%d", worker))
	probes("stopping", 503, 503, 1, "stopping=true")

	b.Signal(syscall.SIGTERM) // forwarded as is: the worker exits 0
	b.Expect("worker exited", "pid", worker, "code", 0)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// runBaton runs `baton ARGS...` (a subcommand) and returns its status and
// output.
func runBaton(t testing.TB, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(batonBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("baton %v did not finish within %v", args, deadline)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// TestOpsHealthAndReloadCommands: `baton health --pid` finds the baton of
// another PID namespace through its control socket: 1 before the first
// generation is ready, 0 after; `baton reload --pid` starts a swap.
func TestOpsHealthAndReloadCommands(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify"}},
		"--", python(t), testdata("ops_readyworker.py"))
	pid := fmt.Sprint(b.PID())
	_, from := b.ExpectOut(0, "started gen=1 ")
	code, out := runBaton(t, "health", "--pid", pid)
	if code != 1 || !strings.Contains(out, "not ready") {
		t.Fatalf("health before ready: exit %d %q, want 1 and not ready", code, out)
	}
	if b.Count("generation ready") != 0 {
		t.Fatal("generation ready without READY=1")
	}

	b.Signal(syscall.SIGUSR1) // forwarded: the worker sends READY=1
	b.Expect("generation ready", "gen", 1)
	code, out = runBaton(t, "health", "--pid", pid)
	if code != 0 || !strings.Contains(out, "ready: generation 1") {
		t.Fatalf("health after ready: exit %d %q, want 0", code, out)
	}

	// --no-wait only sends the signal (the worker here is ready only
	// when the test says so, so waiting for the outcome would wait for it).
	code, out = runBaton(t, "reload", "--pid", pid, "--no-wait")
	if code != 0 {
		t.Fatalf("reload: exit %d %q", code, out)
	}
	b.Expect("swap begun", "gen", 2)
	b.ExpectOut(from, "started gen=2 ")
	// A swap in progress keeps baton ready (generation 1 serves).
	code, out = runBaton(t, "health", "--pid", pid)
	if code != 0 || !strings.Contains(out, "ready: generation 1") {
		t.Fatalf("health during a swap: exit %d %q, want 0", code, out)
	}
	b.Signal(syscall.SIGUSR1)
	b.Expect("swap complete", "gen", 2)
	code, out = runBaton(t, "health", "--pid", pid)
	if code != 0 || !strings.Contains(out, "ready: generation 2") {
		t.Fatalf("health after the swap: exit %d %q, want 0", code, out)
	}

	b.Signal(syscall.SIGTERM)
	b.Expect("shutdown begun")
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	// Nobody answers any more.
	if code, out := runBaton(t, "health", "--pid", pid); code != 1 || !strings.Contains(out, "baton: health:") {
		t.Fatalf("health after exit: %d %q, want 1 and the reason (a probe's no)", code, out)
	}
}

// configMap is a directory laid out the way the kubelet mounts a
// ConfigMap: key -> ..data/key, ..data -> ..<timestamp>, updated
// atomically by a new timestamped directory and a rename of ..data_tmp
// over ..data.
type configMap struct {
	t   testing.TB
	dir string
	n   int
	cur string
}

func newConfigMap(t testing.TB, key, value string) *configMap {
	c := &configMap{t: t, dir: t.TempDir()}
	c.update(key, value)
	if err := os.Symlink(filepath.Join("..data", key), filepath.Join(c.dir, key)); err != nil {
		t.Fatal(err)
	}
	return c
}

// update publishes a new version, as the kubelet's AtomicWriter does.
func (c *configMap) update(key, value string) {
	c.t.Helper()
	c.publish(c.prepare(key, value))
}

// prepare writes a new timestamped version directory, not yet visible.
func (c *configMap) prepare(key, value string) string {
	c.t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%09d", c.n, c.n)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, ts, key), []byte(value), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return ts
}

// publish points ..data at ts atomically and removes the old version.
func (c *configMap) publish(ts string) {
	c.t.Helper()
	must := func(err error) {
		c.t.Helper()
		if err != nil {
			c.t.Fatal(err)
		}
	}
	must(os.Symlink(ts, filepath.Join(c.dir, "..data_tmp")))
	must(os.Rename(filepath.Join(c.dir, "..data_tmp"), filepath.Join(c.dir, "..data")))
	if c.cur != "" {
		must(os.RemoveAll(filepath.Join(c.dir, c.cur)))
	}
	c.cur = ts
}

// readWatch reports, through inotify, when a file in dir has been read
// (opened read-only and closed).
type readWatch struct {
	f *os.File
}

func newReadWatch(t testing.TB, dir string) *readWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_NOWRITE); err != nil {
		unix.Close(fd)
		t.Fatalf("inotify watch %s: %v", dir, err)
	}
	// Non-blocking, so os.File puts it in the poller: deadlines work.
	rw := &readWatch{f: os.NewFile(uintptr(fd), "inotify")}
	t.Cleanup(func() { rw.f.Close() })
	return rw
}

// wait waits until name has been read.
func (rw *readWatch) wait(t testing.TB, name string) {
	t.Helper()
	_ = rw.f.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 64*1024)
	for {
		n, err := rw.f.Read(buf)
		if err != nil {
			t.Fatalf("waiting for a read of %s: %v", name, err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if string(bytes.TrimRight(nameBytes, "\x00")) == name {
				return
			}
		}
	}
}

// expectWatchSwap waits for the swap to gen that BATON_WATCH started and
// for the new generation's worker to print "config gen=GEN CONTENT": a
// swap that came for nothing (a change of no content) would have started
// it with the old content.
func expectWatchSwap(t *testing.T, b *Baton, gen int, content string) {
	t.Helper()
	ev := b.Expect("swap begun", "gen", gen)
	if ev.Str("reason") != "watch" {
		t.Fatalf("swap %d reason %q, want watch", gen, ev.Str("reason"))
	}
	b.Expect("swap complete", "gen", gen)
	want := fmt.Sprintf("config gen=%d %s", gen, content)
	if line, _ := b.ExpectOut(0, fmt.Sprintf("config gen=%d ", gen)); line != want {
		t.Fatalf("generation %d started with %q, want %q: a swap came for nothing", gen, line, want)
	}
}

// TestOpsWatchConfigMap: a ConfigMap update (the ..data symlink swap)
// makes exactly one swap; a touch, or an update with identical content,
// makes none.
//
// Absence is proved by a barrier: a real change afterwards must be the
// very next swap, and each generation prints the content it started with,
// so a swap that came first for nothing shows up as a generation started
// with old content. A no-change version is followed by the barrier only
// once something has read it (inotify): the watcher has judged it then.
// A swap that came for nothing may still pick up the barrier's content if
// the watcher reports a moment late, so, last, every reload request ever
// logged is counted after baton exited: BATON_SHUTDOWN_DELAY keeps the loop
// running (and logging "reload ignored while stopping") well past the
// watcher's debounce.
func TestOpsWatchConfigMap(t *testing.T) {
	for _, target := range []string{"dir", "file"} {
		t.Run(target, func(t *testing.T) {
			cm := newConfigMap(t, "app.conf", "v1")
			watched := cm.dir
			if target == "file" {
				watched = filepath.Join(cm.dir, "app.conf")
			}
			b := StartBaton(t, Opt{Env: []string{
				"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify", "BATON_WATCH=" + watched,
				"BATON_SHUTDOWN_DELAY=1500ms",
			}}, "--", "sh", "-c", `echo "config gen=$BATON_GENERATION $(cat "$1")"; exec "$2" hello`,
				"sh", filepath.Join(cm.dir, "app.conf"), batonBin)
			b.Expect("generation ready", "gen", 1)
			b.ExpectOut(0, "config gen=1 v1")

			cm.update("app.conf", "v2")
			expectWatchSwap(t, b, 2, "v2")
			cm.update("app.conf", "v3") // barrier
			expectWatchSwap(t, b, 3, "v3")

			// No change of content: a touch of the file behind the key,
			// then a new version with the same bytes, read by the watcher.
			now := time.Now().Add(time.Minute)
			if err := os.Chtimes(filepath.Join(cm.dir, cm.cur, "app.conf"), now, now); err != nil {
				t.Fatal(err)
			}
			same := cm.prepare("app.conf", "v3")
			rw := newReadWatch(t, filepath.Join(cm.dir, same))
			cm.publish(same)
			rw.wait(t, "app.conf")
			cm.update("app.conf", "v4") // barrier
			expectWatchSwap(t, b, 4, "v4")

			b.Signal(syscall.SIGTERM)
			if code := b.Wait(); code != 0 {
				t.Fatalf("exit %d, want 0", code)
			}
			if n := b.Count("swap begun") + b.Count("reload coalesced") + b.Count("reload ignored while stopping"); n != 3 {
				t.Fatalf("%d reload requests for 3 content changes and 2 non-changes", n)
			}
		})
	}
}

// checkRecycleOneAtATime fails if a "recycle begun" follows another one
// before that one ended ("worker recycled" or "recycle aborted").
func checkRecycleOneAtATime(t testing.TB, evs []Event) {
	t.Helper()
	open := false
	for _, ev := range evs {
		switch ev.Msg() {
		case "recycle begun":
			if open {
				t.Fatal("two recycles at once: \"recycle begun\" before the previous one ended")
			}
			open = true
		case "worker recycled", "recycle aborted":
			open = false
		}
	}
}

// TestOpsRecycleMaxAge: under load, BATON_MAX_AGE replaces workers one at
// a time, each slot in turn, without a failed request.
func TestOpsRecycleMaxAge(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{
		"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify", "BATON_WORKERS=2", "BATON_MAX_AGE=1s",
	}}, "--", batonBin, "hello")
	addr := appAddr(b)
	b.Expect("generation ready")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan *demo.Result, 1)
	go func() { res <- demo.Load(ctx, demo.LoadConfig{Addr: addr, Clients: 8, KeepAlive: 0.5}) }()

	// Two recycles: with two workers past their age, each slot once.
	first := b.Expect("worker recycled")
	second := b.Expect("worker recycled")
	cancel()
	r := <-res
	evs := b.Events()
	checkRecycleOneAtATime(t, evs)
	if n := b.Count("recycle aborted"); n != 0 {
		t.Fatalf("%d recycles aborted", n)
	}
	for _, ev := range evs {
		if ev.Msg() == "recycle begun" && ev.Str("reason") != "max age" {
			t.Fatalf("recycle reason %q, want max age", ev.Str("reason"))
		}
	}
	if r.Requests < 100 || r.Failures != 0 {
		t.Fatalf("load: %d requests, %d failed %v %v", r.Requests, r.Failures, r.ByKind, r.Errors)
	}
	t.Logf("load: %d requests, 0 failed, by generation %v", r.Requests, r.Generations)
	if first.Int("worker") == second.Int("worker") {
		t.Errorf("worker %d was recycled twice while worker %d, just as old, was not", first.Int("worker"), 1-first.Int("worker"))
	}
	if g := first.Int("gen"); g != 1 || second.Int("gen") != 1 {
		t.Fatalf("recycling changed the generation: %d, %d", g, second.Int("gen"))
	}
	b.Signal(syscall.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// TestOpsRecycleMaxRSS: a worker above BATON_MAX_RSS is recycled, with the
// reason said.
//
// baton reads RSS from /proc/PID/statm. The harness gives baton a new PID
// namespace but not a /proc of its own (a container runtime mounts one), so
// as PID 1 here baton would read other processes' statm under its workers'
// pids. This test therefore runs baton as a plain child (subreaper), where
// its pids and /proc agree.
func TestOpsRecycleMaxRSS(t *testing.T) {
	b := StartBaton(t, Opt{NoPIDNS: true, Env: []string{
		"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify", "BATON_MAX_RSS=1Mi",
	}}, "--", batonBin, "hello")
	addr := appAddr(b)
	ready := b.Expect("worker ready", "gen", 1)
	begun := b.Expect("recycle begun", "reason", "max rss")
	if begun.Int("pid") != ready.Int("pid") {
		t.Fatalf("recycled pid %d, want the worker %d", begun.Int("pid"), ready.Int("pid"))
	}
	rec := b.Expect("worker recycled")
	if rec.Int("pid") == begun.Int("pid") {
		t.Fatal("the replacement has the old worker's pid")
	}
	b.Expect("worker exited", "pid", begun.Int("pid"))
	if code, _, _ := httpGet(t, "http://"+addr+"/"); code != 200 {
		t.Fatalf("app after a recycle: %d", code)
	}
	b.Signal(syscall.SIGTERM)
	b.Wait()
}

// privilegedPort returns a free TCP port below 1024 on 127.0.0.1.
func privilegedPort(t testing.TB) int {
	t.Helper()
	for p := 1023; p >= 80; p-- {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Skip("no free port below 1024 on 127.0.0.1")
	return 0
}

// TestOpsUserAndUlimits: baton keeps root to hold a port below 1024, the
// worker serving it runs as nobody (no supplementary group of root's left)
// with BATON_ULIMITS applied, and reaches NOTIFY_SOCKET.
func TestOpsUserAndUlimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: baton cannot switch the workers' user or bind a port below 1024")
	}
	py := python(t)
	var b *Baton
	port := 0
	for attempt := 0; attempt < 2 && b == nil; attempt++ {
		port = privilegedPort(t)
		b = StartBaton(t, Opt{Env: []string{
			fmt.Sprintf("BATON_LISTEN=127.0.0.1:%d", port), "BATON_READY=notify",
			"BATON_USER=65534:65534", "BATON_ULIMITS=nofile=1024:2048,core=0",
		}}, "--", py, testdata("ops_idworker.py"))
		taken := false
		b.Err.waitFor(t, "listener opened", deadline, func(all []string, evs []Event) bool {
			for _, l := range all {
				taken = taken || strings.Contains(l, "BATON_LISTEN:")
			}
			for _, ev := range evs {
				if ev.Msg() == "listener opened" {
					return true
				}
			}
			return taken
		})
		if taken {
			b.Wait()
			b = nil
		}
	}
	if b == nil {
		t.Fatal("no free port below 1024 after 2 attempts")
	}
	b.Expect("generation ready") // READY=1 from nobody reached baton
	code, _, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if code != 200 {
		t.Fatalf("worker: %d %q", code, body)
	}
	var id struct {
		PID                              int
		ListenPIDOK                      bool `json:"listen_pid_ok"`
		UID, EUID, SUID, GID, EGID, SGID int
		Groups                           []int
		Nofile, Core                     []uint64
		ProcLimits                       map[string][]string `json:"proc_limits"`
		NotifyErr                        string              `json:"notify_err"`
	}
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatalf("worker answer %q: %v", body, err)
	}
	t.Logf("worker identity: %s", body)
	for name, v := range map[string]int{"uid": id.UID, "euid": id.EUID, "suid": id.SUID, "gid": id.GID, "egid": id.EGID, "sgid": id.SGID} {
		if v != 65534 {
			t.Errorf("%s = %d, want 65534", name, v)
		}
	}
	for _, g := range id.Groups {
		if g != 65534 {
			t.Errorf("supplementary groups %v: root's groups leaked", id.Groups)
			break
		}
	}
	if !id.ListenPIDOK {
		t.Error("LISTEN_PID is not the worker's pid")
	}
	if id.NotifyErr != "" {
		t.Errorf("NOTIFY_SOCKET unreachable for the worker's user: %s", id.NotifyErr)
	}
	if len(id.Nofile) != 2 || id.Nofile[0] != 1024 || id.Nofile[1] != 2048 {
		t.Errorf("nofile = %v, want [1024 2048]", id.Nofile)
	}
	if len(id.Core) != 2 || id.Core[0] != 0 || id.Core[1] != 0 {
		t.Errorf("core = %v, want [0 0]", id.Core)
	}
	if pl := id.ProcLimits; strings.Join(pl["nofile"], " ") != "1024 2048" || strings.Join(pl["core"], " ") != "0 0" {
		t.Errorf("/proc/self/limits: %v", pl)
	}
	// baton itself is still root.
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.PID())); err == nil && !strings.Contains(string(st), "\nUid:\t0\t0\t0\t0\n") {
		t.Errorf("baton is no longer root:\n%s", st)
	}
	b.Signal(syscall.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// runAs65534 runs bin with args as uid and gid 65534 and returns its status and
// output.
func runAs65534(t testing.TB, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestHealthPidMessages: `baton health --pid` of a pid nobody has says so
// (one line, no NUL byte from an abstract name) and exits 3, as baton
// reload does; an unprivileged caller,
// who may not read baton's /proc/PID/ns, still gets baton's status.
func TestHealthPidMessages(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms"}}, "sleep", "1000")
	b.Expect("generation ready")
	nobody := 4194303 // pid_max's last pid: free, but check
	for unix.Kill(nobody, 0) != unix.ESRCH {
		nobody--
	}
	code, out := runBaton(t, "health", "--pid", strconv.Itoa(nobody))
	if want := fmt.Sprintf("baton: health: no process has pid %d\n", nobody); code != 1 || out != want {
		t.Errorf("health --pid %d: exit %d %q, want 1 (a probe's no) %q", nobody, code, out, want)
	}
	// Nobody answers a reload either: 3, whether it asks or only signals.
	for _, args := range [][]string{{"reload", "--pid", strconv.Itoa(nobody), "--timeout", "2s"}, {"reload", "--no-wait", "--pid", strconv.Itoa(nobody)}} {
		if code, out := runBaton(t, args...); code != 3 || strings.Count(out, "\n") != 1 {
			t.Errorf("%v: exit %d %q, want 3 and one line", args, code, out)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run baton health as uid 65534")
	}
	code, out = runAs65534(t, batonBin, "health", "--pid", strconv.Itoa(b.PID()))
	if code != 0 || !strings.Contains(out, "ready: generation 1") {
		t.Errorf("health --pid %d as uid 65534: exit %d %q, want 0 and ready", b.PID(), code, out)
	}
	b.Signal(syscall.SIGTERM)
	b.Wait()
}

// TestReloadWaitersLeave: during a slow swap, 64 `baton reload --timeout
// 1s` that give up leave nothing behind in baton (its descriptors come
// back), and 64 that still wait do not keep `baton health` from an
// answer. baton and its reload clients run as uid 65534 (reloads are
// baton's own user's to ask).
func TestReloadWaitersLeave(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run baton as uid 65534")
	}
	bin := batonBin
	b := StartBaton(t, Opt{Bin: bin, Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=notify"},
		Sys: &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID, Setpgid: true,
			Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}},
		"--", python(t), testdata("ops_readyworker.py"))
	pid := strconv.Itoa(b.PID())
	_, from := b.ExpectOut(0, "started gen=1 ")
	b.Signal(syscall.SIGUSR1)
	b.Expect("generation ready", "gen", 1)
	if code, out := runBaton(t, "health", "--pid", pid); code != 0 {
		t.Fatalf("health: exit %d %q", code, out)
	}
	fds0 := fdCount(t, b.PID())
	// A slow swap: generation 2 is ready only when the test says so.
	if code, out := runBaton(t, "reload", "--pid", pid, "--no-wait"); code != 0 {
		t.Fatalf("reload --no-wait: exit %d %q", code, out)
	}
	b.Expect("swap begun", "gen", 2)
	b.ExpectOut(from, "started gen=2 ")

	reloads := func(timeout string) []*exec.Cmd {
		var cmds []*exec.Cmd
		for i := 0; i < 64; i++ {
			cmd := exec.Command(bin, "reload", "--pid", pid, "--timeout", timeout)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		return cmds
	}
	// fdsBack polls baton's descriptors, a health check apart, until they
	// are back where they were (or the deadline).
	fdsBack := func(what string) {
		end := time.Now().Add(deadline)
		for fdCount(t, b.PID()) > fds0+4 {
			if time.Now().After(end) {
				t.Fatalf("%s: baton holds %d descriptors, %d before", what, fdCount(t, b.PID()), fds0)
			}
			runBaton(t, "health", "--pid", pid)
		}
	}

	// 64 that give up after 1 s.
	for _, cmd := range reloads("1s") {
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 3 {
			t.Fatalf("reload --timeout 1s during a slow swap: exit %d, want 3", code)
		}
	}
	if n := b.Count("reload coalesced"); n != 64 {
		t.Fatalf("%d reloads coalesced, want 64", n)
	}
	if code, out := runBaton(t, "health", "--pid", pid); code != 0 {
		t.Errorf("health after 64 reload clients gave up: exit %d %q, want 0", code, out)
	}
	fdsBack("after 64 reload clients gave up")

	// 64 that wait on.
	waiting := reloads("60s")
	b.Err.waitFor(t, "128 reloads coalesced", deadline, func(_ []string, evs []Event) bool {
		n := 0
		for _, ev := range evs {
			if ev.Msg() == "reload coalesced" {
				n++
			}
		}
		return n == 128
	})
	if code, out := runBaton(t, "health", "--pid", pid); code != 0 {
		t.Errorf("health while 64 reload clients wait: exit %d %q, want 0", code, out)
	}
	for _, cmd := range waiting {
		cmd.Process.Kill()
		cmd.Wait()
	}
	fdsBack("after 64 waiting reload clients were killed")

	b.Signal(syscall.SIGUSR1) // generation 2 says READY=1
	b.Expect("swap complete", "gen", 2)
	b.Signal(syscall.SIGTERM)
	b.Wait()
}
