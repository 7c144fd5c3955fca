package demo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// get sends one GET on a fresh connection and returns the response and body.
func get(t *testing.T, addr string) (*http.Response, string) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/any/path")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func checkHello(t *testing.T, resp *http.Response, body, gen, worker string, pid int) {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	if g := resp.Header.Get("X-Baton-Generation"); g != gen {
		t.Errorf("X-Baton-Generation %q, want %q", g, gen)
	}
	if p := resp.Header.Get("X-Baton-Pid"); p != strconv.Itoa(pid) {
		t.Errorf("X-Baton-Pid %q, want %d", p, pid)
	}
	want := fmt.Sprintf("hello from generation %s worker %s pid %d\n", gen, worker, pid)
	if body != want {
		t.Errorf("body %q, want %q", body, want)
	}
}

// Hello serves the inherited socket, announces READY=1 (path and abstract
// NOTIFY_SOCKET), answers per the contract, exits 0 on SIGTERM, and leaves
// the shared socket's flags alone.
func TestHelloInherited(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			fd, ln, addr := sharedSocket(t)
			p := startRole(t, "hello", "hello", ln, abstract, "BATON_GENERATION=7", "BATON_WORKER=1")
			p.waitReady(t)
			resp, body := get(t, addr)
			checkHello(t, resp, body, "7", "1", p.cmd.Process.Pid)
			p.stderr.waitFor(t, "serving on 127.0.0.1:")
			p.signal(t, syscall.SIGTERM)
			if code := p.wait(t); code != 0 {
				t.Errorf("exit %d after SIGTERM, want 0\n%s", code, p.stderr.String())
			}
			assertNonblock(t, fd)
		})
	}
}

// Without LISTEN_FDS, hello listens on :$PORT itself (PORT=0: any port,
// read back from its log line).
func TestHelloStandalone(t *testing.T) {
	p := startRole(t, "hello", "hello", nil, false, "PORT=0", "BATON_GENERATION=", "BATON_WORKER=")
	p.waitReady(t)
	line := p.stderr.waitFor(t, "serving on ")
	addr := strings.Fields(line[strings.Index(line, "serving on ")+len("serving on "):])[0]
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	resp, body := get(t, "127.0.0.1:"+port)
	checkHello(t, resp, body, "0", "0", p.cmd.Process.Pid)
	p.signal(t, syscall.SIGINT)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGINT, want 0", code)
	}
}

// HELLO_UNCHANGED=1 plays an app that knows nothing of baton: given
// LISTEN_FDS and NOTIFY_SOCKET, it binds :$PORT itself and sends no READY=1.
func TestHelloUnchanged(t *testing.T) {
	_, ln, inherited := sharedSocket(t)
	p := startRole(t, "hello", "hello", ln, false, "HELLO_UNCHANGED=1", "PORT=0", "BATON_GENERATION=3", "BATON_WORKER=0")
	line := p.stderr.waitFor(t, "serving on ")
	addr := strings.Fields(line[strings.Index(line, "serving on ")+len("serving on "):])[0]
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	if !strings.HasSuffix(line, "(own socket)") || strings.HasSuffix(inherited, ":"+port) {
		t.Errorf("log line %q: want its own socket, not the inherited %s", line, inherited)
	}
	resp, body := get(t, "127.0.0.1:"+port)
	checkHello(t, resp, body, "3", "0", p.cmd.Process.Pid)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	select {
	case <-p.ready:
		t.Error("sent READY=1")
	default:
	}
}

// LISTEN_FDS meant for another process is an error, not a reason to listen
// somewhere else.
func TestHelloForeignListenPID(t *testing.T) {
	_, ln, _ := sharedSocket(t)
	p := startRole(t, "hello", "hello", ln, false, "LISTEN_PID=1")
	if code := p.wait(t); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	select {
	case <-p.ready:
		t.Error("sent READY=1 without a listener")
	default:
	}
	if !strings.Contains(p.stderr.String(), `LISTEN_PID="1" is not this process`) {
		t.Errorf("stderr does not explain the LISTEN_PID mismatch:\n%s", p.stderr.String())
	}
}

func TestHelloBadEnv(t *testing.T) {
	for _, c := range []struct{ env, want string }{
		{"HELLO_DRAIN=banana", `HELLO_DRAIN="banana"`},
		{"HELLO_FAIL_QUIET=yes", `HELLO_FAIL_QUIET: want 0 or 1, got "yes"`},
		{"HELLO_UNCHANGED=yes", `HELLO_UNCHANGED: want 0 or 1, got "yes"`},
	} {
		p := startRole(t, "hello", "hello", nil, false, c.env)
		if code := p.wait(t); code != 2 {
			t.Errorf("%s: exit %d, want 2", c.env, code)
		}
		if out := p.stderr.String(); !strings.Contains(out, c.want) {
			t.Errorf("%s: stderr does not name the variable and its value:\n%s", c.env, out)
		}
	}
}

// A stop signal while booting (HELLO_BOOT_DELAY) is a clean exit, without
// READY=1.
func TestHelloTermWhileBooting(t *testing.T) {
	_, ln, _ := sharedSocket(t)
	p := startRole(t, "hello", "hello", ln, false, "HELLO_BOOT_DELAY=1h")
	p.stderr.waitFor(t, "booting for 1h0m0s") // logged after signal.Notify
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	select {
	case <-p.ready:
		t.Error("READY=1 although it never served")
	default:
	}
}

// HELLO_FAIL_AFTER: unasked, after the duration, hello drains (answering
// a request on a connection open before, with "Connection: close") and
// exits 1.
func TestHelloFailAfter(t *testing.T) {
	_, ln, addr := sharedSocket(t)
	p := startRole(t, "hello", "hello", ln, false, "HELLO_FAIL_AFTER=300ms", "HELLO_DRAIN=1h")
	p.waitReady(t)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p.stderr.waitFor(t, "failing (HELLO_FAIL_AFTER=300ms)")
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("a request during the failing drain: %v", err)
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("during the failing drain: no Connection: close")
	}
	conn.Close()
	if code := p.wait(t); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
}

// The drain, step by step on one keep-alive connection: after the stop
// signal hello still answers a request on an open connection, with
// "Connection: close", then closes it; with no connection left it exits at
// once instead of waiting out its (here one hour) grace.
func TestHelloDrainConnectionClose(t *testing.T) {
	fd, ln, addr := sharedSocket(t)
	p := startRole(t, "hello", "hello", ln, false, "HELLO_DRAIN=1h", "BATON_GENERATION=3")
	p.waitReady(t)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	roundTrip := func() *http.Response {
		t.Helper()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	if resp := roundTrip(); resp.Close || resp.Header.Get("X-Baton-Generation") != "3" {
		t.Fatalf("before the drain: Close=%v gen=%q", resp.Close, resp.Header.Get("X-Baton-Generation"))
	}
	p.signal(t, syscall.SIGTERM)
	p.stderr.waitFor(t, "draining on SIGTERM")
	// The idle connection was not closed under us: it is answered, and
	// told to go away.
	// (net/http turns "Connection: close" into resp.Close.)
	if resp := roundTrip(); !resp.Close {
		t.Fatal("during the drain: no Connection: close")
	}
	if n, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: read %v, %v; want EOF", n, err)
	}
	conn.Close()
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	p.stderr.waitFor(t, "0 connections left after the grace")
	assertNonblock(t, fd)
}
