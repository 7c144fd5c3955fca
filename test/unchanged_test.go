package test

// Unchanged apps under load (issue 21's acceptance): apps that bind their
// own port, know nothing of LISTEN_FDS or READY=1 and die at once on
// SIGTERM, run with BATON_BIND=intercept and nothing else, reloaded again
// and again under load at 64 clients, half of them keep-alive: no request
// on a fresh connection fails, every generation answers, and the
// keep-alive close races (a request sent on a kept connection the old
// generation had just given up) are counted and logged.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/demo"
)

// unchangedReloads is how many reloads each app gets: 20 in the suite,
// the 100 with TEST_LONG=1.
func unchangedReloads() int {
	if os.Getenv("TEST_LONG") == "1" {
		return 100
	}
	return 20
}

// unchangedApp is one unchanged app and how to tell which generation
// answered a fresh GET.
type unchangedApp struct {
	args []string
	env  []string
	// gen is the generation that answered a GET, from its header or body.
	gen func(h http.Header, body string) string
	// statusAnswers: the app answers demo.Load's POSTs with an error
	// status of its own (python's http.server: 501), a complete HTTP
	// response, so a "status" failure is the app's answer, not a loss.
	statusAnswers bool
	// control: a setting that loses requests, to show the test sees
	// hard failures; it wants some instead of none.
	control bool
}

func genHeader(h http.Header, _ string) string { return h.Get("X-Baton-Generation") }

// TestUnchangedUnderLoad: the Express app, a static Go binary and
// `python3 -m http.server`, each unchanged, 2 workers,
// BATON_LISTEN=tcp://0.0.0.0:PORT BATON_BIND=intercept, reloaded
// unchangedReloads() times under load at 64 clients, half keep-alive:
// 0 hard failures, every generation answers, the close races reported.
func TestUnchangedUnderLoad(t *testing.T) {
	n := unchangedReloads()
	t.Run("express", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node not installed")
		}
		if _, err := os.Stat("/usr/share/nodejs/express"); err != nil {
			t.Skip("Debian's node-express not installed")
		}
		reloadUnchanged(t, unchangedApp{args: []string{node, testdata("unchanged_express.js")},
			env: []string{"NODE_PATH=/usr/share/nodejs"}, gen: genHeader}, n)
	})
	t.Run("go", func(t *testing.T) {
		reloadUnchanged(t, unchangedApp{args: []string{buildGoApp(t)}, gen: genHeader}, n)
	})
	t.Run("python", func(t *testing.T) {
		py := python(t)
		// http.server sends no generation header: each generation serves
		// a directory of its own, whose index.html names it.
		root, err := os.MkdirTemp(filepath.Dir(batonBin), "www-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(root) })
		for g := 1; g <= n+1; g++ {
			dir := filepath.Join(root, strconv.Itoa(g))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("gen "+strconv.Itoa(g)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		reloadUnchanged(t, unchangedApp{
			args:          []string{"sh", "-c", `exec "$PY" -m http.server -d "$WWW/$BATON_GENERATION" "$PORT"`},
			env:           []string{"PY=" + py, "WWW=" + root},
			gen:           func(_ http.Header, body string) string { return strings.TrimPrefix(strings.TrimSpace(body), "gen ") },
			statusAnswers: true,
		}, n)
	})
}

// TestUnchangedUnderLoadControl: the same run with the static Go app but
// BATON_HANDOFF=shared, where nothing holds back the stop signal, loses
// requests on fresh connections (60 to 117 in 10 reloads, 4 runs): the
// test above can fail. (BATON_DRAIN=off in steer mode is no control for
// an app this fast: it waits for the old queue to empty, and a request
// in flight at the signal is rare, 0 in one run of 2; TestUnchangedDrainIdle
// shows what it cuts with a slow app.)
func TestUnchangedUnderLoadControl(t *testing.T) {
	reloadUnchanged(t, unchangedApp{args: []string{buildGoApp(t)}, env: []string{"BATON_HANDOFF=shared"}, gen: genHeader, control: true}, 10)
}

// reloadUnchanged runs app under intercept, reloads it n times under load
// and checks and reports what the clients saw.
func reloadUnchanged(t *testing.T, app unchangedApp, n int) *demo.Result {
	t.Helper()
	b := StartBaton(t, Opt{Env: interceptEnv(app.env...)}, app.args...)
	b.Expect("generation ready")
	addr := "127.0.0.1:" + strconv.Itoa(interceptPort)
	waitUnchangedGen(t, addr, app, "1")
	stop := load(t, addr, 64)
	start := time.Now()
	for gen := 2; gen <= n+1; gen++ {
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", gen)
		// Every generation answers: a fresh request reaches it.
		waitUnchangedGen(t, addr, app, strconv.Itoa(gen))
	}
	reloads := time.Since(start)
	r := stop()
	hard := int64(0)
	for k, v := range r.Fresh {
		if !(app.statusAnswers && k == demo.KindStatus) {
			hard += v
		}
	}
	races := r.Reused
	answered := r.Requests - r.Failures
	if app.statusAnswers {
		answered += r.ByKind[demo.KindStatus]
	}
	t.Logf("%d reloads in %v at 64 clients (half keep-alive): %d requests (%.0f/s), %d answered, %d hard failures (fresh connections) %v, %d keep-alive close races (reused connections), all failures by kind %v, first errors %v, %d generations in the load's answers",
		n, reloads.Round(time.Millisecond), r.Requests, float64(r.Requests)/r.Elapsed.Seconds(), answered, hard, r.Fresh, races, r.ByKind, r.Errors, len(r.Generations))
	if r.Requests == 0 || answered == 0 {
		t.Fatal("no request was answered")
	}
	switch {
	case app.control && hard == 0:
		t.Errorf("no hard failure with %v: the test cannot see them", app.env)
	case !app.control && hard != 0:
		t.Errorf("%d hard failures (on fresh connections), want 0: %v %v", hard, r.Fresh, r.Errors)
	}
	if app.statusAnswers && r.ByKind[demo.KindStatus] > 0 && !strings.HasPrefix(r.Errors[demo.KindStatus], "501 ") {
		t.Errorf("the app's answers: %q, want its 501 to POST", r.Errors[demo.KindStatus])
	}
	if !app.statusAnswers {
		// The load itself reached every generation but perhaps the last
		// (its keep-alive clients may still be on the one before).
		for gen := 1; gen <= n; gen++ {
			if r.Generations[strconv.Itoa(gen)] == 0 {
				t.Errorf("generation %d never answered the load", gen)
			}
		}
	}
	settle(t, b, 2)
	b.Signal(unix.SIGTERM)
	b.Wait()
	return r
}

// waitUnchangedGen waits until a GET on a fresh connection is answered by
// generation gen.
func waitUnchangedGen(t *testing.T, addr string, app unchangedApp, gen string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	last := ""
	for end := time.Now().Add(deadline); time.Now().Before(end); {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := app.gen(resp.Header, string(body)); got == gen {
			return
		} else {
			last = fmt.Sprintf("%d from generation %q", resp.StatusCode, got)
		}
	}
	t.Fatalf("generation %s never answered a GET (last: %s)", gen, last)
}

// TestUnchangedDrainIdle: BATON_DRAIN=idle for an unchanged app through
// intercept (TestDrainIdle's case, whose worker takes fd 3 and says
// READY=1): Python's own ThreadingHTTPServer binding PORT, 4 s a request
// (the 1 s is shorter than an intercepted Python generation may
// take to start here under load: the requests would end before the swap
// does, and nothing could be cut),
// no SIGTERM handler, 2 workers, BATON_BIND=intercept and nothing else
// (so steer, listen readiness and the idle drain are the defaults). No
// request in flight at a reload is cut, on fresh connections or a
// keep-alive one, and an idle keep-alive connection does not hold the
// drain up. The control, BATON_DRAIN=off, cuts some.
func TestUnchangedDrainIdle(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		b, cut := unchangedInFlightThroughReload(t)
		expectDrained(t, b, cut)
	})
	t.Run("off", func(t *testing.T) {
		b, cut := unchangedInFlightThroughReload(t, "BATON_DRAIN=off")
		t.Logf("BATON_DRAIN=off: %d of 7 in-flight requests cut", cut)
		if cut == 0 {
			t.Error("no request was cut without the drain: the test cannot see cuts")
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
}

// unchangedInFlightThroughReload is inFlightThroughReload for the
// unchanged slow app under intercept: two keep-alive connections with one
// request answered each, one left idle; the other's second request and six
// on fresh connections in flight at a reload. It returns how many of
// those 7 were cut.
func unchangedInFlightThroughReload(t *testing.T, env ...string) (*Baton, int) {
	const slow = 4 * time.Second
	env = append([]string{"SLOW_SECONDS=" + strconv.Itoa(int(slow.Seconds()))}, env...)
	b := StartBaton(t, Opt{Env: interceptEnv(env...)}, python(t), testdata("unchanged_slow.py"))
	b.Expect("generation ready")
	cut, swap := reloadWithInFlight(t, b, "127.0.0.1:"+strconv.Itoa(interceptPort))
	if swap >= slow {
		t.Fatalf("the swap took %v, longer than a request (%v): nothing was in flight at its end", swap, slow)
	}
	t.Logf("swap complete %v after the requests were read", swap.Round(time.Millisecond))
	return b, cut
}
