package test

// BATON_DRAIN=idle: a generation that handed over (steer mode) gets its
// stop signal only once each of its TCP connections was seen idle, so an
// app that dies at once on SIGTERM cuts no request in flight.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// slowClient is one connection to baton's listener and its requests.
type slowClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialSlow(t *testing.T, addr string) *slowClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &slowClient{c: c, r: bufio.NewReader(c)}
}

func (s *slowClient) send(path string) error {
	_, err := fmt.Fprintf(s.c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	return err
}

// answer reads one response: its body, or what went wrong.
func (s *slowClient) answer() (string, error) {
	s.c.SetReadDeadline(time.Now().Add(deadline))
	resp, err := http.ReadResponse(s.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// inFlightThroughReload starts the slow worker (1 s a request, no SIGTERM
// handler), puts requests in flight on fresh connections and on a
// keep-alive one, keeps one more keep-alive connection idle, reloads, and
// returns how many in-flight requests were cut.
func inFlightThroughReload(t *testing.T, drain string) (*Baton, int) {
	env := []string{"BATON_HANDOFF=steer", "BATON_WORKERS=2", "BATON_READY=notify", "BATON_DRAIN=" + drain}
	b, addr := serve(t, env, python(t), testdata("slowhttp.py"))
	// Two keep-alive connections, each with one request answered: one
	// stays idle, the other's second request is in flight at the reload.
	cut, _ := reloadWithInFlight(t, b, addr)
	return b, cut
}

// reloadWithInFlight makes two keep-alive connections to a slow app at
// addr (it answers "gen N PATH" after a while), each with one request
// answered; one stays idle, the other's second request and six on fresh
// connections are in flight when it sends the reload. It returns how many
// of those 7 were cut, and how long the swap took after they were read.
func reloadWithInFlight(t *testing.T, b *Baton, addr string) (cut int, swap time.Duration) {
	idle, busy := dialSlow(t, addr), dialSlow(t, addr)
	for _, c := range []*slowClient{idle, busy} {
		if err := c.send("/first"); err != nil {
			t.Fatal(err)
		}
		if body, err := c.answer(); err != nil || body != "gen 1 /first\n" {
			t.Fatalf("first request: %q %v", body, err)
		}
	}
	inflight := []*slowClient{busy}
	for range 6 {
		inflight = append(inflight, dialSlow(t, addr))
	}
	from := len(b.OutLines())
	for i, c := range inflight {
		if err := c.send(fmt.Sprintf("/inflight-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range inflight {
		_, from = b.ExpectOut(from, "request 1 /inflight-")
		from++
	}
	sent := time.Now()
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	swap = time.Since(sent)
	for i, c := range inflight {
		body, err := c.answer()
		if err != nil || body != fmt.Sprintf("gen 1 /inflight-%d\n", i) {
			t.Logf("in-flight request %d: %q %v", i, body, err)
			cut++
		}
	}
	return cut, swap
}

// TestDrainIdle: with the drain, no request in flight at a reload is cut,
// and the idle keep-alive connection does not hold the drain up; without
// it, the same reload cuts some (the control: the test can see cuts).
func TestDrainIdle(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		b, cut := inFlightThroughReload(t, "off")
		t.Logf("BATON_DRAIN=off: %d of 7 in-flight requests cut", cut)
		if cut == 0 {
			t.Error("no request was cut without the drain: the test cannot see cuts")
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
	t.Run("idle", func(t *testing.T) {
		b, cut := inFlightThroughReload(t, "idle:20s")
		expectDrained(t, b, cut)
	})
}

// expectDrained checks a reload with the idle drain: none of the 7
// in-flight requests cut, generation 1 seen idle before its bound, and
// only then its stop signal; it stops baton.
func expectDrained(t *testing.T, b *Baton, cut int) {
	t.Helper()
	if cut != 0 {
		t.Errorf("%d of 7 in-flight requests cut, want 0", cut)
	}
	ev := b.Expect("old generation idle", "gen", 1)
	t.Logf("%d of 7 cut; old generation idle after %v ms", cut, ev["elapsed"])
	if n := b.Count("old generation not idle in time"); n != 0 {
		t.Errorf("the drain reached its bound %d times", n)
	}
	b.Expect("worker retiring", "gen", 1)
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestDrainIdleBound: a connection that never goes idle (a request the
// app never answers) holds the old generation up for the bound, then its
// workers get the stop signal.
func TestDrainIdleBound(t *testing.T) {
	env := []string{"BATON_HANDOFF=steer", "BATON_WORKERS=1", "BATON_READY=notify", "BATON_DRAIN=idle:1500ms"}
	b, addr := serve(t, env, python(t), testdata("slowhttp.py"))
	c := dialSlow(t, addr)
	if err := c.send("/hang"); err != nil {
		t.Fatal(err)
	}
	b.ExpectOut(0, "request 1 /hang")
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	ev := b.Expect("old generation not idle in time", "gen", 1, "busy", 1)
	if ms, _ := ev["elapsed"].(float64); ms < 1500 {
		t.Errorf("bound reached after %v ms, want at least 1500", ms)
	}
	b.Expect("worker retiring", "gen", 1)
	// In the log's order: the bound, then the stop signal.
	var order []string
	for _, e := range b.Events() {
		if (e.Msg() == "worker retiring" || e.Msg() == "old generation not idle in time") && e.Int("gen") == 1 {
			order = append(order, e.Msg())
		}
	}
	if len(order) != 2 || order[0] != "old generation not idle in time" {
		t.Errorf("want the bound, then the stop signal; got %q", order)
	}
	if _, err := c.answer(); err == nil {
		t.Error("the hung request was answered: the worker was not stopped")
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}
