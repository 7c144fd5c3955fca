package test

// BATON_BIND=intercept: unchanged apps that bind their own port serve from
// baton's sockets (intercept/, docs/protocol.md).

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// interceptPort is the port the unchanged apps bind: each test runs in a
// network namespace of its own, so a fixed port is free.
const interceptPort = 8080

// goApp is an unchanged Go app: http.ListenAndServe(":PORT", h), no
// LISTEN_FDS, no READY=1. With DRAIN=1 it shuts down gracefully on SIGTERM
// (http.Server.Shutdown), as a careful app of its own would; without, it
// dies at once, the default.
const goApp = `package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	gen := os.Getenv("BATON_GENERATION")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Baton-Generation", gen)
		if r.URL.Path == "/crash" { // a worker that dies, for the restart tests
			os.Exit(3)
		}
		fmt.Fprintf(w, "hello from go pid %d\n", os.Getpid())
	})
	srv := &http.Server{Addr: ":" + os.Getenv("PORT"), Handler: h}
	if os.Getenv("DRAIN") == "1" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		go func() { <-sigs; srv.Shutdown(context.Background()) }()
	}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

// buildGoApp builds goApp as a static binary every user may run.
func buildGoApp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Dir(batonBin), "goapp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(goApp), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "goapp")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the Go app: %v\n%s", err, out)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func interceptEnv(extra ...string) []string {
	return append([]string{"BATON_LISTEN=tcp://0.0.0.0:" + strconv.Itoa(interceptPort), "BATON_BIND=intercept", "BATON_WORKERS=2",
		"PORT=" + strconv.Itoa(interceptPort)}, extra...)
}

// get makes one request on a fresh connection and returns the status,
// X-Baton-Generation and body.
func get(t *testing.T, addr string) (int, string, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Baton-Generation"), string(body)
}

// listenBacklog is the backlog of the one listening socket on port (ss's
// Send-Q), and how many listening sockets there are on it.
func listenBacklog(t *testing.T, port int) (backlog, sockets int) {
	t.Helper()
	out, err := exec.Command("ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 {
			backlog, _ = strconv.Atoi(f[2])
			sockets++
		}
	}
	return backlog, sockets
}

// TestInterceptPython: unmodified `python3 -m http.server PORT` (blocking
// accept, a dual-stack [::] bind, listen(5)), two workers, serves from
// baton's socket: no second listening socket, baton's backlog kept, ready
// on listen(), and a reload swaps it.
func TestInterceptPython(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("python says hi\n"), 0o644)
	b := StartBaton(t, Opt{Env: interceptEnv()}, python(t), "-m", "http.server", "-d", dir, strconv.Itoa(interceptPort))
	b.Expect("generation ready")
	addr := "127.0.0.1:" + strconv.Itoa(interceptPort)
	for range 4 {
		if code, _, body := get(t, addr); code != 200 || body != "python says hi\n" {
			t.Fatalf("GET: %d %q", code, body)
		}
	}
	backlog, n := listenBacklog(t, interceptPort)
	if n != 1 || backlog <= 5 {
		t.Errorf("%d listening sockets on the port, backlog %d; want baton's one, its backlog kept (not python's listen(5))", n, backlog)
	}
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	if code, _, _ := get(t, addr); code != 200 {
		t.Fatalf("GET after the reload: %d", code)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestInterceptNode: an unmodified Node app (createServer().listen(PORT),
// non-blocking, no signal handler; plain and with Express), started as `sh -c 'exec node ...'`
// (the filter survives the exec), two workers; both serve, and after a
// reload the new generation does.
func TestInterceptNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	t.Run("http", func(t *testing.T) { interceptNode(t, node, "intercept_server.js") })
	t.Run("express", func(t *testing.T) {
		if _, err := os.Stat("/usr/share/nodejs/express"); err != nil {
			t.Skip("Debian's node-express not installed")
		}
		interceptNode(t, node, "intercept_express.js", "NODE_PATH=/usr/share/nodejs")
	})
}

func interceptNode(t *testing.T, node, app string, env ...string) {
	b := StartBaton(t, Opt{Env: interceptEnv(env...)}, "sh", "-c", "exec "+node+" "+testdata(app))
	b.Expect("generation ready")
	addr := "127.0.0.1:" + strconv.Itoa(interceptPort)
	pids := map[string]bool{}
	for i := 0; i < 200 && len(pids) < 2; i++ {
		code, gen, body := get(t, addr)
		if code != 200 || gen != "1" {
			t.Fatalf("GET: %d gen %q %q", code, gen, body)
		}
		pids[body] = true
	}
	if len(pids) != 2 {
		t.Errorf("answers came from %d workers, want 2: %v", len(pids), pids)
	}
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	if code, gen, _ := get(t, addr); code != 200 || gen != "2" {
		t.Fatalf("after the reload: %d from generation %q, want 2", code, gen)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestInterceptGo: a static Go binary calling http.ListenAndServe(":PORT")
// (Go probes IPv6 with binds to port 0 first, which pass untouched) serves
// with two workers. Under light load, with reloads, it loses nothing: the
// unchanged app that dies at once on SIGTERM while steer mode holds back
// the stop until its queue is empty, and one that shuts down gracefully
// (DRAIN=1) through ten reloads at 32 clients.
func TestInterceptGo(t *testing.T) {
	app := buildGoApp(t)
	t.Run("unchanged", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: interceptEnv()}, app)
		b.Expect("generation ready")
		addr := "127.0.0.1:" + strconv.Itoa(interceptPort)
		if code, gen, _ := get(t, addr); code != 200 || gen != "1" {
			t.Fatalf("GET: %d from generation %q", code, gen)
		}
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", 2)
		if code, gen, _ := get(t, addr); code != 200 || gen != "2" {
			t.Fatalf("after the reload: %d from generation %q", code, gen)
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
	t.Run("drain-under-load", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: interceptEnv("DRAIN=1")}, app)
		b.Expect("generation ready")
		addr := "127.0.0.1:" + strconv.Itoa(interceptPort)
		stop := load(t, addr, 32)
		for gen := 2; gen <= 11; gen++ {
			b.Signal(unix.SIGHUP)
			b.Expect("swap complete", "gen", gen)
		}
		waitGenerationServes(t, addr, "11")
		r := stop()
		t.Logf("%d requests, %d failed %v (%d on reused connections), generations %v", r.Requests, r.Failures, r.ByKind, r.Reused, r.Generations)
		if hard := r.Failures - r.Reused; hard != 0 {
			t.Errorf("%d hard failures, want 0", hard)
		}
		if len(r.Generations) < 10 {
			t.Errorf("only %d generations answered", len(r.Generations))
		}
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
}

// TestInterceptRestartAndRecycle: a worker baton starts outside a reload,
// a restart after a crash or a BATON_MAX_AGE replacement, starts under the
// filter too: its own bind gets baton's socket (without the filter it would
// fail with EADDRINUSE against baton's listener, or add a second listening
// socket), it is ready on listen(), and it serves.
func TestInterceptRestartAndRecycle(t *testing.T) {
	app := buildGoApp(t)
	addr := "127.0.0.1:" + strconv.Itoa(interceptPort)
	// servedBy waits until a fresh GET is answered by the worker pid.
	servedBy := func(t *testing.T, pid int) {
		t.Helper()
		want := fmt.Sprintf("hello from go pid %d\n", pid)
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _, body := get(t, addr)
			if body == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d never answered; last answer %q", pid, body)
			}
		}
		if _, n := listenBacklog(t, interceptPort); n != 1 {
			t.Errorf("%d listening sockets on the port, want baton's one", n)
		}
	}
	t.Run("restart", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: interceptEnv("BATON_WORKERS=1")}, app)
		first := b.Expect("worker ready", "gen", 1)
		servedBy(t, first.Int("pid"))
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, err := c.Get("http://" + addr + "/crash"); err == nil {
			resp.Body.Close()
			t.Fatalf("/crash answered %d; the worker should have died", resp.StatusCode)
		}
		b.Expect("worker restarting", "gen", 1)
		again := b.Expect("worker ready", "gen", 1)
		if again.Int("pid") == first.Int("pid") {
			t.Fatalf("ready twice from pid %d", again.Int("pid"))
		}
		servedBy(t, again.Int("pid"))
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
	t.Run("recycle", func(t *testing.T) {
		b := StartBaton(t, Opt{Env: interceptEnv("BATON_WORKERS=1", "BATON_MAX_AGE=1s")}, app)
		first := b.Expect("worker ready", "gen", 1)
		b.Expect("recycle begun", "pid", first.Int("pid"))
		b.Expect("worker recycled")
		var repl Event
		for _, ev := range b.Events() {
			if ev.Msg() == "worker ready" && ev.Int("pid") != first.Int("pid") {
				repl = ev
				break
			}
		}
		if repl == nil {
			t.Fatal("worker recycled, but no replacement was ready")
		}
		servedBy(t, repl.Int("pid"))
		b.Signal(unix.SIGTERM)
		b.Wait()
	})
}

// TestInterceptNotHeld: a bind to anything baton does not hold (port 0,
// another port, a unix path, UDP on a TCP listener's port) runs as without
// baton; a bind to the held address gets baton's socket.
func TestInterceptNotHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	b := StartBaton(t, Opt{Env: interceptEnv("BATON_WORKERS=1")},
		python(t), testdata("intercept_binds.py"), strconv.Itoa(interceptPort), "9191", path)
	line := func(prefix string) []string {
		l, _ := b.ExpectOut(0, prefix+" ")
		return strings.Fields(l)
	}
	if f := line("port0"); f[1] == "0" || f[2] != "False" {
		t.Errorf("port 0: %v, want a port of the kernel's choosing, not baton's socket", f)
	}
	if f := line("other"); f[1] != "9191" || f[2] != "False" {
		t.Errorf("another port: %v, want 9191 bound as usual", f)
	}
	if f := line("unix"); f[1] != "True" || f[2] != "False" {
		t.Errorf("a unix path: %v, want the socket file created as usual", f)
	}
	if f := line("udp"); f[1] != strconv.Itoa(interceptPort) || f[2] != "False" {
		t.Errorf("UDP on the TCP listener's port: %v, want its own socket", f)
	}
	if f := line("held"); f[1] != strconv.Itoa(interceptPort) || f[2] != "True" {
		t.Errorf("the held address: %v, want baton's socket", f)
	}
	b.Expect("generation ready")
	if code, _, _ := get(t, "127.0.0.1:"+strconv.Itoa(interceptPort)); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestInterceptListenReady: BATON_READY=listen (the default with
// intercept). A worker that binds, waits 2 s, then listens becomes ready
// only then; a generation whose workers never listen is rolled back at
// BATON_READY_TIMEOUT.
func TestInterceptListenReady(t *testing.T) {
	b := StartBaton(t, Opt{Env: interceptEnv("BATON_WORKERS=1", "WAIT=2", "NEVER_GEN=2", "BATON_READY_TIMEOUT=4s")},
		python(t), testdata("intercept_slowlisten.py"), strconv.Itoa(interceptPort))
	ev := b.Expect("worker ready", "gen", 1)
	if el := time.Duration(ev["elapsed"].(float64) * float64(time.Millisecond)); el < 2*time.Second {
		t.Errorf("ready %v after start, before the worker listened (2 s)", el)
	}
	b.ExpectOut(0, "listening gen=1") // printed before listen(): ready came after it
	b.Signal(unix.SIGHUP)
	b.ExpectOut(0, "never listening gen=2")
	ab := b.Expect("swap aborted", "gen", 2)
	if !strings.Contains(ab.Str("reason"), "BATON_READY_TIMEOUT") {
		t.Errorf("swap aborted: %v, want the ready timeout", ab)
	}
	if b.Count("worker ready", "gen", 2) != 0 {
		t.Error("a worker that never listened was ready")
	}
	if code, _, _ := get(t, "127.0.0.1:"+strconv.Itoa(interceptPort)); code != 200 {
		t.Fatalf("generation 1 after the rollback: %d", code)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestInterceptUDP: an unmodified UDP server (a blocking recvfrom loop)
// that binds the held address is served; after a reload new datagrams
// reach the new generation.
func TestInterceptUDP(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=udp://0.0.0.0:8053", "BATON_BIND=intercept", "BATON_WORKERS=2", "BATON_READY=delay:300ms"}},
		python(t), testdata("intercept_udp.py"), "8053")
	b.Expect("generation ready")
	ask := func() string {
		t.Helper()
		c, err := net.Dial("udp", "127.0.0.1:8053")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return string(buf[:n])
	}
	if got := ask(); !strings.HasPrefix(got, "gen=1 ") {
		t.Fatalf("before the reload: %q", got)
	}
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	for range 5 {
		if got := ask(); !strings.HasPrefix(got, "gen=2 ") {
			t.Fatalf("after the reload: %q, want generation 2", got)
		}
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestInterceptUnprivileged: workers that run as another user
// (BATON_USER=65534) are intercepted too.
func TestInterceptUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start workers as uid 65534")
	}
	dir, err := os.MkdirTemp(filepath.Dir(batonBin), "www-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("nobody says hi\n"), 0o644)
	b := StartBaton(t, Opt{Env: interceptEnv("BATON_USER=65534:65534")}, python(t), "-m", "http.server", "-d", dir, strconv.Itoa(interceptPort))
	b.Expect("generation ready")
	for _, pid := range childrenOf(b.PID()) { // host pids: /proc is the host's
		if uid := procStatus(pid, "Uid"); uid != 65534 {
			t.Fatalf("worker %d runs as uid %d, want 65534", pid, uid)
		}
	}
	if code, _, body := get(t, "127.0.0.1:"+strconv.Itoa(interceptPort)); code != 200 || body != "nobody says hi\n" {
		t.Fatalf("GET: %d %q", code, body)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestInterceptRefused: where seccomp(2) is denied (as a container profile
// may), BATON_BIND=intercept is one line naming the variable and the
// reason, exit 2, and nothing starts.
func TestInterceptRefused(t *testing.T) {
	args, role := selfWorker(t, "noseccomp")
	marker := filepath.Join(t.TempDir(), "started")
	b := StartBaton(t, Opt{Bin: args[0], Env: append(interceptEnv(), role, "NOSECCOMP_EXEC="+batonBin)}, "touch", marker)
	if code := b.Wait(); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	b.WaitOutClosed()
	lines := b.ErrLines()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "baton: BATON_BIND=intercept: ") || !strings.Contains(lines[0], "seccomp") {
		t.Fatalf("stderr %q, want one line naming BATON_BIND=intercept and seccomp", lines)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the worker started")
	}
}

// noSeccomp is the "noseccomp" role: it denies seccomp(2) with EPERM for
// itself and what it execs, as a container profile may, then execs
// NOSECCOMP_EXEC with its own arguments.
func noSeccomp() int {
	bin := os.Getenv("NOSECCOMP_EXEC")
	if bin == "" {
		fmt.Fprintln(os.Stderr, "noseccomp: NOSECCOMP_EXEC unset")
		return 2
	}
	runtime.LockOSThread() // the filter and no_new_privs are per thread until the exec
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "noseccomp:", err)
		return 1
	}
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: ldW, K: 0},
		{Code: jeqK, K: unix.SYS_SECCOMP, Jt: 0, Jf: 1},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "noseccomp:", err)
		return 1
	}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEST_ROLE=") && !strings.HasPrefix(kv, "NOSECCOMP_EXEC=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	fmt.Fprintln(os.Stderr, "noseccomp: exec:", err)
	return 1
}
