package test

// The end-to-end test against a real Docker Engine (issue 4): baton as the
// ENTRYPOINT of a FROM scratch image, driven only with the docker CLI, as a
// user would.
//
// The image is built from binaries made on this host (baton from TestMain,
// plus the small test/docker/orphans helper), not with a multi-stage
// Dockerfile: the golang image cannot be pulled where these tests were
// written, and FROM scratch needs nothing from a registry.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-init/baton/demo"
)

// dkDockerfile is the test image: the project's own configuration for the
// demo, with a short stop timeout and a fast healthcheck so the test is
// quick. orphans is the helper for the --init subtest.
const dkDockerfile = `FROM scratch
COPY baton /baton
COPY orphans /orphans
ENV BATON_LISTEN=0.0.0.0:8080 BATON_READY=notify BATON_WORKERS=2 BATON_STOP_TIMEOUT=5s
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=1s --timeout=2s --start-period=1s CMD ["/baton","health"]
ENTRYPOINT ["/baton"]
CMD ["/baton","hello"]
`

const (
	dkStopTimeout = 5 * time.Second // BATON_STOP_TIMEOUT in dkDockerfile
	dkReloads     = 10              // docker kill -s HUP under load
	dkOrphans     = 5               // grandchildren in the --init subtest
	dkWait        = 20 * time.Second
)

// TestDockerE2E runs baton in a container: the demo image (Hello) and an
// unchanged app under BATON_BIND=intercept (Intercept). One top-level test,
// as the only one that stays in the host's network namespace (netns.Main).
func TestDockerE2E(t *testing.T) {
	dkRequire(t)
	t.Run("Hello", dkTestHello)
	t.Run("Intercept", dkTestIntercept)
}

// dkTestHello runs baton in a container: reloads under load through the
// published port, docker exec baton reload, the HEALTHCHECK, docker stop,
// docker logs, and docker run --init.
func dkTestHello(t *testing.T) {
	t0 := time.Now()
	img := dkBuildImage(t)
	t.Logf("image %s built in %v", img, time.Since(t0).Round(time.Millisecond))

	c := dkRun(t, "-p", "127.0.0.1::8080", img)
	logs := dkFollowLogs(t, c)
	addr := dkHostPort(t, c, "8080")
	t.Logf("container %.12s, port 8080 published on %s", c, addr)

	t.Run("Health", func(t *testing.T) {
		t0 := time.Now()
		dkWaitHealthy(t, c)
		t.Logf("healthy %v after docker run returned", time.Since(t0).Round(time.Millisecond))
		out, err := dkCmd(10*time.Second, "exec", c, "/baton", "health")
		if err != nil || !strings.HasPrefix(out, "ready: generation ") {
			t.Fatalf("docker exec %.12s /baton health: %v, output %q", c, err, out)
		}
		if st := dkInspect(t, c, "{{.State.Health.Status}}"); st != "healthy" {
			t.Fatalf("State.Health.Status %q after the healthy event", st)
		}
	})

	t.Run("ReloadUnderLoad", func(t *testing.T) {
		first := dkAwait(t, logs, "first generation ready", func(evs []Event) (Event, bool) {
			return dkFind(evs, "generation ready", "gen", 1)
		})
		base := dkCurrentGen(logs)
		if first == nil || base < 1 {
			t.Fatalf("no current generation in the logs")
		}
		res, wres, took := dkReloadsUnderLoad(t, c, logs, addr, base, dkReloads)
		t.Logf("docker kill -s HUP to \"swap complete\" in docker logs -f (baton's own elapsed): %s", strings.Join(took, " "))
		t.Logf("load: %d requests in %v, %d failed %v, by generation %v; watcher: %d requests, %d failed",
			res.Requests, res.Elapsed.Round(time.Millisecond), res.Failures, res.ByKind, res.Generations, wres.requests, wres.failures)
		if res.Failures > 0 {
			t.Errorf("%d of %d requests failed: %v (%v)", res.Failures, res.Requests, res.ByKind, res.Errors)
		}
		if wres.failures > 0 {
			t.Errorf("watcher: %d of %d requests failed, first: %s", wres.failures, wres.requests, wres.firstErr)
		}
		if res.Requests == 0 {
			t.Errorf("the load sent no request")
		}
		for g := base; g <= base+dkReloads; g++ {
			if res.Generations[strconv.Itoa(g)] == 0 {
				t.Errorf("generation %d never answered the load (by generation: %v)", g, res.Generations)
			}
		}
		for g := range res.Generations {
			if n, err := strconv.Atoi(g); err != nil || n < base || n > base+dkReloads {
				t.Errorf("unexpected X-Baton-Generation %q in %d responses", g, res.Generations[g])
			}
		}
		if n := dkCount(logs, "swap aborted"); n > 0 {
			t.Errorf("%d swaps aborted", n)
		}
	})

	t.Run("ExecReload", func(t *testing.T) {
		gen := dkCurrentGen(logs) + 1
		// It waits for the outcome, through the control socket, in a
		// FROM scratch image.
		out, err := dkCmd(30*time.Second, "exec", c, "/baton", "reload")
		if err != nil {
			t.Fatalf("docker exec %.12s /baton reload: %v: %s", c, err, out)
		}
		if want := fmt.Sprintf("generation %d serving", gen); !strings.Contains(string(out), want) {
			t.Errorf("docker exec /baton reload printed %q, want %q", out, want)
		}
		begun := dkAwait(t, logs, fmt.Sprintf(`"swap begun" gen %d`, gen), func(evs []Event) (Event, bool) {
			return dkFind(evs, "swap begun", "gen", gen)
		})
		dkAwaitSwap(t, logs, gen)
		if r := begun.Str("reason"); r != "baton reload" {
			t.Errorf(`"swap begun" reason %q, want "baton reload"`, r)
		}
		logs.mu.Lock()
		ib, ic := dkIndex(logs.events, "swap begun", "gen", gen), dkIndex(logs.events, "swap complete", "gen", gen)
		logs.mu.Unlock()
		if ib > ic {
			t.Errorf(`"swap complete" (event %d) before "swap begun" (event %d)`, ic, ib)
		}
	})

	t.Run("Stop", func(t *testing.T) {
		exited := dkWhen(logs, func(evs []Event) bool { return dkIndex(evs, "baton exiting") >= 0 })
		t0 := time.Now()
		dkDocker(t, "stop", c) // the default 10 s before SIGKILL
		took := time.Since(t0)
		var batonTook time.Duration
		select {
		case at := <-exited:
			batonTook = at.Sub(t0)
		case <-time.After(dkWait):
		}
		t.Logf("docker stop took %v; \"baton exiting\" reached docker logs -f %v after it began", took.Round(time.Millisecond), batonTook.Round(time.Millisecond))

		var st struct {
			Status    string
			ExitCode  int
			OOMKilled bool
		}
		if err := json.Unmarshal([]byte(dkInspect(t, c, "{{json .State}}")), &st); err != nil {
			t.Fatal(err)
		}
		// docker logs -f ends with the container: everything is in.
		logs.waitFor(t, "the end of docker logs -f", dkWait, func([]string, []Event) bool { return logs.closed })
		logs.mu.Lock()
		exiting, ok := dkFind(logs.events, "baton exiting")
		begun, _ := dkFind(logs.events, "shutdown begun")
		killed := dkIndex(logs.events, "stop timeout: killing what remains") >= 0 ||
			dkIndex(logs.events, "worker killed after stop timeout") >= 0
		logs.mu.Unlock()
		if !ok {
			t.Fatalf(`no "baton exiting" line: baton did not end by itself (SIGKILLed by docker stop?); State %+v`, st)
		}
		if st.Status != "exited" || st.OOMKilled {
			t.Errorf("State.Status %q, OOMKilled %v", st.Status, st.OOMKilled)
		}
		// The hello workers exit 0 on TERM, so baton does too.
		if code := exiting.Int("code"); code != 0 || st.ExitCode != code {
			t.Errorf(`"baton exiting" code %d, State.ExitCode %d: want both 0`, code, st.ExitCode)
		}
		if begun == nil || begun.Str("signal") != "SIGTERM" {
			t.Errorf(`"shutdown begun" %v: want signal SIGTERM`, begun)
		}
		if killed {
			t.Errorf("baton had to SIGKILL workers after BATON_STOP_TIMEOUT")
		}
		// docker stop itself adds the daemon's own teardown after baton has
		// exited (1 to 5 s on fuse-overlayfs here), so the bound for baton
		// is on its own exit: well inside BATON_STOP_TIMEOUT, while the
		// hello workers drain in well under a second.
		if took >= 10*time.Second {
			t.Errorf("docker stop took %v: docker's 10 s timeout ran out", took)
		}
		if batonTook <= 0 || batonTook >= dkStopTimeout {
			t.Errorf("baton took %v from docker stop to \"baton exiting\": want well under BATON_STOP_TIMEOUT (%v)", batonTook, dkStopTimeout)
		}
	})

	t.Run("Logs", func(t *testing.T) {
		dkCheckLogs(t, c)
	})

	t.Run("Init", func(t *testing.T) {
		dkTestInit(t, img)
	})
}

// dkRequire skips the test when there is no usable Docker Engine, except
// under CI (CI=true), which has one: there a missing engine is a failure.
func dkRequire(t *testing.T) {
	t.Helper()
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	fail := t.Skipf
	if ci {
		fail = t.Fatalf
	}
	if _, err := exec.LookPath("docker"); err != nil {
		fail("docker CLI not found (%v): the Docker end-to-end test needs a Docker Engine", err)
	}
	if out, err := dkCmd(30*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		fail("docker info failed (%v): no usable Docker Engine: %s", err, out)
	}
}

// dkCmd runs docker with args and returns its trimmed stdout, or, on error,
// stdout and stderr together.
func dkCmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String() + "\n" + stderr.String()), err
	}
	return strings.TrimSpace(stdout.String()), nil
}

// dkDocker runs docker with args or fails the test.
func dkDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dkCmd(2*time.Minute, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func dkInspect(t testing.TB, c, format string) string {
	t.Helper()
	return dkDocker(t, "inspect", "--format", format, c)
}

func dkRandom() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// dkBuildImage builds the test image in a temporary context holding the
// host-built static binaries, tags it baton-e2e:<random> and removes it when
// the test ends.
func dkBuildImage(t *testing.T) string {
	t.Helper()
	ctxDir := t.TempDir()
	dkCopyFile(t, batonBin, filepath.Join(ctxDir, "baton"))
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "orphans"), "./docker/orphans")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build test/docker/orphans: %v\n%s", err, out)
	}
	return dkBuild(t, ctxDir, dkDockerfile, "baton-e2e")
}

// dkBuild builds ctxDir with dockerfile as name:<random>, removed when the
// test ends, and returns the tag.
func dkBuild(t *testing.T, ctxDir, dockerfile, name string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	img := name + ":" + dkRandom()
	t.Cleanup(func() {
		if out, err := dkCmd(time.Minute, "rmi", "--force", img); err != nil {
			t.Logf("docker rmi %s: %v: %s", img, err, out)
		}
	})
	dkDocker(t, "build", "--quiet", "--force-rm", "--tag", img, ctxDir)
	return img
}

func dkCopyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// dkRun starts a detached container (docker run -d args...) and removes it
// when the test ends.
func dkRun(t *testing.T, args ...string) string {
	t.Helper()
	name := "baton-e2e-" + dkRandom()
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := dkCmd(30*time.Second, "logs", "--tail", "80", name); err == nil {
				t.Logf("docker logs --tail 80 %s:\n%s", name, out)
			}
		}
		// A container that failed to start exists too; one never created
		// makes rm fail harmlessly.
		_, _ = dkCmd(time.Minute, "rm", "--force", "--volumes", name)
	})
	out, err := dkCmd(time.Minute, append([]string{"run", "-d", "--name", name}, args...)...)
	if err != nil {
		t.Fatalf("docker run -d %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	lines := strings.Fields(out)
	return lines[len(lines)-1] // the container id (pull progress cannot precede it: nothing is pulled)
}

// dkFollowLogs streams `docker logs -f c` (its stdout and stderr into one
// pipe) into a lines collector; the stream ends when the container stops.
func dkFollowLogs(t *testing.T, c string) *lines {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "logs", "--follow", c)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("docker logs -f: %v", err)
	}
	w.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // its end is seen as EOF on r
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return newLines(r)
}

// dkHostPort is the host address docker published the container port on.
func dkHostPort(t *testing.T, c, port string) string {
	t.Helper()
	out := dkDocker(t, "port", c, port+"/tcp")
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if _, p, err := net.SplitHostPort(l); err == nil && p != "" {
			return l
		}
	}
	t.Fatalf("docker port %s %s: no address in %q", c, port, out)
	return ""
}

// dkWaitHealthy waits for the container's health_status: healthy event:
// `docker events` from the container's creation on, so it cannot be missed.
func dkWaitHealthy(t *testing.T, c string) {
	t.Helper()
	created := dkInspect(t, c, "{{.Created}}")
	ctx, cancel := context.WithTimeout(context.Background(), dkWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "events", "--since", created,
		"--filter", "container="+c, "--filter", "event=health_status", "--format", "{{.Status}}")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("docker events: %v", err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait() // killed by cancel: its error says so and nothing more
	}()
	sc := bufio.NewScanner(out)
	var seen []string
	for sc.Scan() {
		st := strings.TrimSpace(sc.Text())
		seen = append(seen, st)
		switch st {
		case "health_status: healthy":
			return
		case "health_status: unhealthy":
			t.Fatalf("container became unhealthy; health log: %s", dkInspect(t, c, "{{json .State.Health}}"))
		}
	}
	t.Fatalf("not healthy within %v (events %q, docker events: %s); health: %s",
		dkWait, seen, strings.TrimSpace(stderr.String()), dkInspect(t, c, "{{json .State.Health}}"))
}

// dkFind returns the first event with message msg whose fields match kv.
func dkFind(evs []Event, msg string, kv ...any) (Event, bool) {
	if i := dkIndex(evs, msg, kv...); i >= 0 {
		return evs[i], true
	}
	return nil, false
}

func dkIndex(evs []Event, msg string, kv ...any) int {
	for i, ev := range evs {
		if ev.Msg() == msg && match(ev, kv) {
			return i
		}
	}
	return -1
}

func dkCount(l *lines, msg string, kv ...any) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.events {
		if ev.Msg() == msg && match(ev, kv) {
			n++
		}
	}
	return n
}

// dkAwait waits until find reports an event in the log stream.
func dkAwait(t *testing.T, l *lines, what string, find func([]Event) (Event, bool)) Event {
	t.Helper()
	var found Event
	l.waitFor(t, what, dkWait, func(_ []string, evs []Event) bool {
		ev, ok := find(evs)
		found = ev
		return ok
	})
	return found
}

// dkAwaitSwap waits for "swap complete" of generation gen; a "swap aborted"
// of it fails at once.
func dkAwaitSwap(t *testing.T, l *lines, gen int) Event {
	t.Helper()
	ev := dkAwait(t, l, fmt.Sprintf(`"swap complete" gen %d`, gen), func(evs []Event) (Event, bool) {
		if ev, ok := dkFind(evs, "swap aborted", "gen", gen); ok {
			return ev, true
		}
		return dkFind(evs, "swap complete", "gen", gen)
	})
	if ev.Msg() != "swap complete" {
		t.Fatalf("swap to generation %d aborted: %v", gen, ev)
	}
	return ev
}

// dkWhen reports, on the channel it returns, when pred first holds for the
// events of l; the channel is closed without a value if the stream ends
// first. It never touches a testing.T, so it may run beside the test.
func dkWhen(l *lines, pred func([]Event) bool) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		defer close(ch)
		for {
			l.mu.Lock()
			ok, grew, closed := pred(l.events), l.grew, l.closed
			l.mu.Unlock()
			if ok {
				ch <- time.Now()
				return
			}
			if closed {
				return
			}
			<-grew
		}
	}()
	return ch
}

// dkCurrentGen is the newest generation that became current, per the logs.
func dkCurrentGen(l *lines) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := 0
	for _, ev := range l.events {
		if m := ev.Msg(); m == "generation ready" || m == "swap complete" {
			gen = max(gen, ev.Int("gen"))
		}
	}
	return gen
}

// dkGenWatch is a client that sends GETs on fresh connections (which
// net/http never retries) and publishes which generations answered.
type dkGenWatch struct {
	mu       sync.Mutex
	seen     map[int]bool
	grew     chan struct{} // closed and replaced when a new generation is seen
	requests int
	failures int
	firstErr string
	done     chan struct{}
}

type dkGenWatchResult struct {
	requests, failures int
	firstErr           string
}

func dkWatchGenerations(ctx context.Context, addr string) *dkGenWatch {
	w := &dkGenWatch{seen: map[int]bool{}, grew: make(chan struct{}), done: make(chan struct{})}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			gen, err := dkGet(tr, addr)
			if ctx.Err() != nil && err != nil {
				return // cut short by the end of the test, not a failure
			}
			w.mu.Lock()
			w.requests++
			if err != nil {
				w.failures++
				if w.firstErr == "" {
					w.firstErr = err.Error()
				}
			} else if !w.seen[gen] {
				w.seen[gen] = true
				close(w.grew)
				w.grew = make(chan struct{})
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func dkGet(tr *http.Transport, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return 0, err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	return strconv.Atoi(resp.Header.Get("X-Baton-Generation"))
}

// await waits until generation gen has answered the watcher.
func (w *dkGenWatch) await(t *testing.T, gen int) {
	t.Helper()
	end := time.After(dkWait)
	for {
		w.mu.Lock()
		ok, grew := w.seen[gen], w.grew
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-grew:
		case <-w.done:
			t.Fatalf("watcher stopped before generation %d answered", gen)
		case <-end:
			t.Fatalf("generation %d did not answer within %v", gen, dkWait)
		}
	}
}

func (w *dkGenWatch) result() dkGenWatchResult {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return dkGenWatchResult{w.requests, w.failures, w.firstErr}
}

// helloLine is what `baton hello` prints on stderr (demo/hello.go logf).
var helloLine = regexp.MustCompile(`^hello: generation (\d+) worker (\d+) pid (\d+) (.*)$`)

// dkCheckLogs reads `docker logs c` of the stopped container: baton's JSON
// lines and the workers' own plain lines, both on stderr, none mangled.
func dkCheckLogs(t *testing.T, c string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "logs", c)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker logs: %v", err)
	}
	if stdout.Len() > 0 {
		t.Errorf("docker logs stdout: want nothing (baton and hello write to stderr), got %q", dkClip(stdout.String()))
	}
	var evs []Event
	hello := map[string][]string{} // "gen worker pid" -> the rest of its lines
	for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
		var ev Event
		if strings.HasPrefix(l, "{") {
			if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Msg() == "" {
				t.Errorf("mangled JSON line: %q", dkClip(l))
				continue
			}
			evs = append(evs, ev)
			continue
		}
		m := helloLine.FindStringSubmatch(l)
		if m == nil || strings.Contains(l, `{"`) {
			t.Errorf("a line neither baton's JSON nor hello's: %q", dkClip(l))
			continue
		}
		k := m[1] + " " + m[2] + " " + m[3]
		hello[k] = append(hello[k], m[4])
	}
	for _, msg := range []string{"listener opened", "baton started", "generation ready", "swap complete", "baton exiting"} {
		if _, ok := dkFind(evs, msg); !ok {
			t.Errorf("no %q JSON line in docker logs", msg)
		}
	}
	if ev, ok := dkFind(evs, "baton started"); ok && (ev.Int("pid") != 1 || ev["pid1"] != true) {
		t.Errorf(`"baton started" %v: want pid 1, pid1 true`, ev)
	}
	// Every worker that became ready said so itself, and every one that
	// exited 0 said why.
	ready, exited := 0, 0
	for _, ev := range evs {
		k := fmt.Sprintf("%d %d %d", ev.Int("gen"), ev.Int("worker"), ev.Int("pid"))
		switch ev.Msg() {
		case "worker ready":
			ready++
			if !slices.ContainsFunc(hello[k], func(s string) bool { return strings.HasPrefix(s, "serving on ") }) {
				t.Errorf("worker ready %s: no \"hello: generation %s ... serving on\" line (its lines: %q)", k, k, hello[k])
			}
		case "worker exited":
			exited++
			if ev.Int("code") == 0 && !slices.ContainsFunc(hello[k], func(s string) bool { return strings.HasPrefix(s, "exiting: ") }) {
				t.Errorf("worker exited %s: no \"hello: ... exiting:\" line (its lines: %q)", k, hello[k])
			}
		}
	}
	t.Logf("docker logs: %d baton JSON lines, %d hello workers' own lines (%d ready, %d exited)", len(evs), dkSum(hello), ready, exited)
	if ready == 0 || len(hello) == 0 {
		t.Errorf("no worker output in docker logs")
	}
}

func dkSum(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

func dkClip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// dkTestInit runs baton under docker run --init (docker-init, i.e. tini, is
// PID 1 and baton its child): baton must say it is not PID 1 and, as a
// child subreaper, still reap the orphans its worker leaves behind.
func dkTestInit(t *testing.T, img string) {
	name := "baton-e2e-init-" + dkRandom()
	t.Cleanup(func() { _, _ = dkCmd(time.Minute, "rm", "--force", name) })
	// Plain init mode: no listeners (an empty value means unset), one
	// worker, the orphan maker.
	out, err := dkCmd(time.Minute, "run", "-d", "--init", "--name", name,
		"-e", "BATON_LOG_LEVEL=debug", "-e", "BATON_LISTEN=", "-e", "BATON_WORKERS=1", "-e", "BATON_READY=auto",
		img, "/orphans", strconv.Itoa(dkOrphans))
	if err != nil {
		if strings.Contains(out, "docker-init") || strings.Contains(out, "init binary") {
			t.Skipf("the daemon has no docker-init for --init: %s", out)
		}
		t.Fatalf("docker run --init: %v\n%s", err, out)
	}
	c := name
	logs := dkFollowLogs(t, c)
	var orphans []int
	logs.waitFor(t, fmt.Sprintf(`"done %d" from /orphans`, dkOrphans), dkWait, func(all []string, _ []Event) bool {
		orphans = orphans[:0]
		done := false
		for _, l := range all {
			if p, ok := strings.CutPrefix(l, "orphan "); ok {
				if pid, err := strconv.Atoi(p); err == nil {
					orphans = append(orphans, pid)
				}
			}
			done = done || l == fmt.Sprintf("done %d", dkOrphans)
		}
		return done && len(orphans) == dkOrphans
	})
	for _, pid := range orphans {
		ev := dkAwait(t, logs, fmt.Sprintf(`"orphan reaped" pid %d`, pid), func(evs []Event) (Event, bool) {
			return dkFind(evs, "orphan reaped", "pid", pid)
		})
		if code := ev.Int("code"); code != 7 {
			t.Errorf("orphan %d reaped with code %d, want 7 (its own exit status)", pid, code)
		}
	}
	logs.mu.Lock()
	started, ok := dkFind(logs.events, "baton started")
	_, noSub := dkFind(logs.events, "not PID 1 and no subreaper: orphans will not be reaped by baton")
	logs.mu.Unlock()
	if !ok {
		t.Fatalf(`no "baton started" line`)
	}
	// Not "pid 2": runc's init (a Go program, now docker-init) used a few
	// pids for its threads before it exec'd, so baton gets the next free one.
	if started.Int("pid") == 1 || started["pid1"] != false {
		t.Errorf(`"baton started" %v under --init: want a pid other than 1 and pid1 false`, started)
	}
	if noSub {
		t.Errorf("baton could not become a child subreaper")
	}
	t.Logf(`under --init: "baton started" pid %v pid1 %v; %d orphans reaped by baton: %v`, started["pid"], started["pid1"], len(orphans), orphans)
	if init := dkInspect(t, c, "{{.HostConfig.Init}}"); init != "true" {
		t.Errorf("HostConfig.Init %q", init)
	}
	// Where the daemon shares this host's PID namespace, check that PID 1 of
	// the container really is docker-init.
	if hostPID := dkInspect(t, c, "{{.State.Pid}}"); hostPID != "0" {
		if comm, err := os.ReadFile("/proc/" + hostPID + "/comm"); err == nil {
			if s := strings.TrimSpace(string(comm)); s != "docker-init" && s != "tini" && s != "tini-static" {
				t.Errorf("the container's PID 1 is %q, want docker-init", s)
			}
		}
	}

	// docker stop reaches baton through tini; baton stops the worker and
	// exits 0 by itself.
	dkDocker(t, "stop", c)
	logs.waitFor(t, "the end of docker logs -f", dkWait, func([]string, []Event) bool { return logs.closed })
	logs.mu.Lock()
	exiting, ok := dkFind(logs.events, "baton exiting")
	logs.mu.Unlock()
	code := dkInspect(t, c, "{{.State.ExitCode}}")
	if !ok || exiting.Int("code") != 0 || code != "0" {
		t.Errorf(`under --init, docker stop: "baton exiting" %v, State.ExitCode %s: want both 0`, exiting, code)
	}
}

// dkInterceptDockerfile is an unchanged app's image: goApp (intercept_test.go,
// http.ListenAndServe(":8080"), no LISTEN_FDS, no READY=1, dies at once on
// SIGTERM) under BATON_BIND=intercept and nothing else of baton's protocol.
// Debug logs for the "bind adopted" lines.
const dkInterceptDockerfile = `FROM scratch
COPY baton /baton
COPY goapp /goapp
ENV BATON_LISTEN=tcp://0.0.0.0:8080 BATON_BIND=intercept BATON_WORKERS=2 PORT=8080 BATON_STOP_TIMEOUT=5s BATON_LOG_LEVEL=debug
ENTRYPOINT ["/baton"]
CMD ["/goapp"]
`

// dkNoSeccompProfile allows every system call but seccomp(2), as a
// restrictive runtime profile may.
const dkNoSeccompProfile = `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["seccomp"], "action": "SCMP_ACT_ERRNO"}]}`

const dkInterceptReloads = 3

// dkTestIntercept: an unchanged app served through baton's socket under
// Docker's default seccomp profile, as root and as an unprivileged user with
// no capabilities, across reloads under load; root baton with BATON_USER
// (needs CAP_SYS_PTRACE, which Docker does not give); a profile that denies
// seccomp(2).
func dkTestIntercept(t *testing.T) {
	ctxDir := t.TempDir()
	dkCopyFile(t, batonBin, filepath.Join(ctxDir, "baton"))
	dkCopyFile(t, buildGoApp(t), filepath.Join(ctxDir, "goapp"))
	img := dkBuild(t, ctxDir, dkInterceptDockerfile, "baton-e2e-intercept")

	t.Run("Root", func(t *testing.T) { dkInterceptServe(t, img) })
	t.Run("Nobody", func(t *testing.T) {
		dkInterceptServe(t, img, "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
	})
	// Root baton, workers as another user: reading the worker's memory
	// and /proc/PID/fd then needs CAP_SYS_PTRACE (the kernel's ptrace
	// rules), which Docker's default capabilities lack. The bind is not
	// adopted and runs as without baton: EADDRINUSE, the first generation
	// fails, baton exits 1. With --cap-add SYS_PTRACE it serves.
	t.Run("BatonUser", func(t *testing.T) {
		c := dkRun(t, "-e", "BATON_USER=65534:65534", img)
		logs := dkFollowLogs(t, c)
		ev := dkAwait(t, logs, `"baton exiting"`, func(evs []Event) (Event, bool) { return dkFind(evs, "baton exiting") })
		logs.mu.Lock()
		na, ok := dkFind(logs.events, "bind not adopted")
		logs.mu.Unlock()
		if !ok || na.Str("step") != "procmem" || !strings.Contains(na.Str("err"), "permission denied") {
			t.Errorf(`"bind not adopted" %v: want step procmem, permission denied`, na)
		}
		if ev.Int("code") != 1 || dkCount(logs, "bind adopted") != 0 {
			t.Errorf(`"baton exiting" %v and %d binds adopted: want code 1 and none`, ev, dkCount(logs, "bind adopted"))
		}
		t.Logf("without CAP_SYS_PTRACE: %v; %v", na, ev)
		t.Run("CapSysPtrace", func(t *testing.T) {
			dkInterceptServe(t, img, "-e", "BATON_USER=65534:65534", "--cap-add", "SYS_PTRACE")
		})
	})
	t.Run("NoSeccomp", func(t *testing.T) {
		profile := filepath.Join(t.TempDir(), "noseccomp.json")
		if err := os.WriteFile(profile, []byte(dkNoSeccompProfile), 0o644); err != nil {
			t.Fatal(err)
		}
		c := dkRun(t, "--security-opt", "seccomp="+profile, img)
		code := dkDocker(t, "wait", c)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker", "logs", c)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("docker logs: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		t.Logf("exit %s, stderr %q", code, lines)
		if code != "2" {
			t.Errorf("exit code %s, want 2", code)
		}
		if stdout.Len() > 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "baton: BATON_BIND=intercept: ") || !strings.Contains(lines[0], "seccomp") {
			t.Errorf("stdout %q, stderr %q: want one line on stderr naming BATON_BIND=intercept and seccomp", stdout.String(), lines)
		}
	})
}

// dkReloadsUnderLoad sends n reloads (docker kill -s HUP) to container c,
// whose generation base serves addr, under load (8 clients, half
// keep-alive, no retries). One more client, the watcher (fresh
// connections), tells as it happens which generation answers: each reload
// waits until the new generation has served, so every generation takes
// part in the load. It returns the load's and the watcher's results, and
// per reload the time to "swap complete" in the logs (baton's elapsed).
func dkReloadsUnderLoad(t *testing.T, c string, logs *lines, addr string, base, n int) (*demo.Result, dkGenWatchResult, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loadDone := make(chan *demo.Result, 1)
	go func() {
		loadDone <- demo.Load(ctx, demo.LoadConfig{Addr: addr, Clients: 8, KeepAlive: 0.5, Timeout: 5 * time.Second})
	}()
	watch := dkWatchGenerations(ctx, addr)
	watch.await(t, base)
	var took []string
	for gen := base + 1; gen <= base+n; gen++ {
		t0 := time.Now()
		dkDocker(t, "kill", "-s", "HUP", c)
		ev := dkAwaitSwap(t, logs, gen)
		took = append(took, fmt.Sprintf("%v(%.0fms)", time.Since(t0).Round(time.Millisecond), ev["elapsed"]))
		watch.await(t, gen)
	}
	cancel()
	return <-loadDone, watch.result(), took
}

// dkInterceptServe runs the intercept image with args: both workers of
// every generation adopt baton's socket ("bind adopted"), and through
// dkInterceptReloads reloads (docker kill -s HUP) under load every
// generation answers and no request fails on a fresh connection.
func dkInterceptServe(t *testing.T, img string, args ...string) {
	c := dkRun(t, append(args, "-p", "127.0.0.1::8080", img)...)
	logs := dkFollowLogs(t, c)
	addr := dkHostPort(t, c, "8080")
	dkAwait(t, logs, "generation ready", func(evs []Event) (Event, bool) { return dkFind(evs, "generation ready", "gen", 1) })
	res, wres, _ := dkReloadsUnderLoad(t, c, logs, addr, 1, dkInterceptReloads)
	adopted := dkCount(logs, "bind adopted")
	t.Logf("load: %d requests, %d failed %v (%d on reused keep-alive connections: the close race), by generation %v; watcher: %d requests, %d failed; %d binds adopted",
		res.Requests, res.Failures, res.ByKind, res.Reused, res.Generations, wres.requests, wres.failures, adopted)
	if hard := res.Failures - res.Reused; hard != 0 {
		t.Errorf("%d requests failed on fresh connections: %v (%v)", hard, res.Fresh, res.Errors)
	}
	if wres.failures > 0 {
		t.Errorf("watcher: %d of %d requests failed, first: %s", wres.failures, wres.requests, wres.firstErr)
	}
	for g := 1; g <= 1+dkInterceptReloads; g++ {
		if res.Generations[strconv.Itoa(g)] == 0 {
			t.Errorf("generation %d never answered the load (by generation: %v)", g, res.Generations)
		}
	}
	if want := 2 * (1 + dkInterceptReloads); adopted < want {
		t.Errorf("%d binds adopted, want at least %d (two workers a generation)", adopted, want)
	}
	if n := dkCount(logs, "bind not adopted"); n > 0 {
		t.Errorf("%d binds not adopted", n)
	}
}
