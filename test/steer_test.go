package test

// Steer mode (BATON_HANDOFF=steer): a socket per generation, new
// connections steered to the current one in the kernel, the old one asked
// to stop only once its queue is empty.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// failuresThroughReloads runs 32 clients (half keep-alive, no retries)
// against baton's listener through n reloads and returns the hard
// failures (on fresh connections) and the keep-alive close races
// (failures on a reused connection, which only a client retry hides).
func failuresThroughReloads(t *testing.T, env []string, n int, args ...string) (hard, races int64) {
	t.Helper()
	b, addr := serve(t, env, args...)
	stop := load(t, addr, 32)
	for gen := 2; gen <= n+1; gen++ {
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", gen)
	}
	waitGenerationServes(t, addr, strconv.Itoa(n+1))
	r := stop()
	t.Logf("%d requests, %d failed %v (%d on reused connections), generations %v", r.Requests, r.Failures, r.ByKind, r.Reused, r.Generations)
	if r.Requests == 0 {
		t.Fatal("no requests were made")
	}
	if len(r.Generations) < n {
		t.Errorf("only %d generations answered, want %d", len(r.Generations), n+1)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
	return r.Failures - r.Reused, r.Reused
}

// TestSteerNaiveGoWorker: a Go worker that on SIGTERM closes its listener
// and calls http.Server.Shutdown at once loses requests when generations
// share one socket (the control: this test can see losses), and none in
// steer mode.
func TestSteerNaiveGoWorker(t *testing.T) {
	args, role := selfWorker(t, "naive")
	env := []string{role, "BATON_WORKERS=2", "BATON_READY=notify"}
	t.Run("shared", func(t *testing.T) {
		hard, races := failuresThroughReloads(t, append(env, "BATON_HANDOFF=shared"), 30, args...)
		t.Logf("shared: %d hard failures, %d keep-alive races", hard, races)
		if hard == 0 {
			t.Error("the naive worker lost nothing with a shared socket: the load cannot see losses")
		}
	})
	t.Run("steer", func(t *testing.T) {
		hard, races := failuresThroughReloads(t, append(env, "BATON_HANDOFF=steer"), 30, args...)
		t.Logf("steer: %d hard failures, %d keep-alive races (the worker's own)", hard, races)
		if hard != 0 {
			t.Errorf("steer mode: %d hard failures, want 0", hard)
		}
	})
}

// TestSteerNaiveNodeAndHello: two more workers that drain badly lose no
// request in steer mode: Node calling server.close() at once (Node 19+
// then also closes idle and just-accepted connections), and baton hello
// with no grace (HELLO_DRAIN=0).
func TestSteerNaiveNodeAndHello(t *testing.T) {
	env := []string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer"}
	t.Run("node", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node not installed (test/run installs it as root)")
		}
		w, _ := filepath.Abs("workers/node")
		hard, races := failuresThroughReloads(t, append(env, "WORKER_DRAIN=naive"), 30,
			python(t), filepath.Join(w, "notify_exec.py"), node, filepath.Join(w, "server.js"))
		t.Logf("node server.close(): %d hard failures, %d keep-alive races", hard, races)
		if hard != 0 {
			t.Errorf("%d hard failures, want 0", hard)
		}
	})
	t.Run("hello-no-drain", func(t *testing.T) {
		hard, races := failuresThroughReloads(t, append(env, "HELLO_DRAIN=0"), 30, batonBin, "hello")
		t.Logf("HELLO_DRAIN=0: %d hard failures, %d keep-alive races", hard, races)
		if hard != 0 {
			t.Errorf("%d hard failures, want 0", hard)
		}
	})
}

// TestSteerCarefulWorker: baton hello, which drains the careful way, loses
// nothing of any kind in steer mode either.
func TestSteerCarefulWorker(t *testing.T) {
	b, addr := serve(t, []string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer"}, batonBin, "hello")
	reloadUnderLoad(t, b, addr, 32, 20)
	settle(t, b, 2)
	b.Signal(unix.SIGTERM)
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// listeningOn counts the TCP sockets listening on port in this network
// namespace (the tests run in one of their own): in steer mode, the
// members of the kernel's reuseport group.
func listeningOn(t *testing.T, port string) int {
	t.Helper()
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X ", p)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			// local_address rem_address st: 0A is LISTEN
			if len(fs) > 3 && strings.HasSuffix(fs[1]+" ", want) && fs[3] == "0A" {
				n++
			}
		}
	}
	return n
}

// TestSteerNoLeak: through reloads and rollbacks in steer mode baton ends
// with the descriptors it started with, and the kernel's group holds the
// current generation's socket alone: no retired or rolled-back
// generation's socket stays. (test/soak/run --handoff steer does 1,000.)
func TestSteerNoLeak(t *testing.T) {
	b, addr := serve(t, []string{"BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer", "BATON_READY_TIMEOUT=2s", "BATON_LOG_LEVEL=debug"},
		"sh", "-c", `[ $((BATON_GENERATION % 7)) = 0 ] && exit 1; exec "$0" hello`, batonBin)
	_, port, _ := strings.Cut(addr, ":")
	settle(t, b, 2)
	waitNoShim(t, b)
	fds0 := fdCount(t, b.PID())
	if n := listeningOn(t, port); n != 1 {
		t.Fatalf("%d sockets listen on port %s at start, want 1", n, port)
	}
	stop := load(t, addr, 16)
	for gen := 2; gen <= 40; gen++ {
		b.Signal(unix.SIGHUP)
		if gen%7 == 0 {
			b.Expect("swap aborted", "gen", gen) // every 7th generation fails at boot
		} else {
			b.Expect("swap complete", "gen", gen)
		}
	}
	settle(t, b, 2)
	r := stop()
	checkNoFailures(t, r)
	waitNoShim(t, b)
	// settle saw the last retired worker's exit; the loop releases that
	// generation's socket in the same step.
	if n := listeningOn(t, port); n != 1 {
		t.Errorf("%d sockets listen on port %s after 39 reloads, want 1", n, port)
	}
	if fds := fdCount(t, b.PID()); fds != fds0 {
		t.Errorf("baton holds %d descriptors after 39 reloads, %d at start", fds, fds0)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// waitNoShim waits until every started worker has left the shim (its exec
// pipe, one of baton's descriptors, is then closed).
func waitNoShim(t *testing.T, b *Baton) {
	t.Helper()
	b.Err.waitFor(t, "every worker out of the shim", deadline, func(_ []string, evs []Event) bool {
		started, left := map[int]bool{}, map[int]bool{}
		for _, ev := range evs {
			switch ev.Msg() {
			case "worker started":
				started[ev.Int("pid")] = true
			case "worker left the shim", "worker exited":
				left[ev.Int("pid")] = true
			}
		}
		for p := range started {
			if !left[p] {
				return false
			}
		}
		return true
	})
}

// TestSteerUDP: in steer mode new datagrams go to the new generation once
// it is steered to, also from a client socket that talked to the old one
// (UDP has no connection to keep: its flow moves at once).
func TestSteerUDP(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=udp://127.0.0.1:0", "BATON_READY=notify", "BATON_HANDOFF=steer", "BATON_LOG_LEVEL=debug"}},
		python(t), testdata("udpecho.py"))
	addr := b.Expect("listener opened").Str("addr")
	b.Expect("generation ready")
	old, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	ask := func(c net.Conn) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := ask(old); !strings.HasPrefix(got, "gen=1 ") {
		t.Fatalf("before the reload: %q", got)
	}
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 2)
	if got := ask(old); !strings.HasPrefix(got, "gen=2 ") {
		t.Fatalf("the same client socket after the swap: %q, want generation 2", got)
	}
	fresh, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got := ask(fresh); !strings.HasPrefix(got, "gen=2 ") {
		t.Fatalf("a new client after the swap: %q, want generation 2", got)
	}
	b.Expect("worker exited", "gen", 1) // generation 1 retired once its queue was empty
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestSteerUnprivileged: steer mode needs no privilege: no CAP_NET_ADMIN,
// no CAP_BPF (the reuseport program is classic BPF), and it does not rely
// on net.ipv4.tcp_migrate_req. baton runs as uid 65534 of the host (root
// only of a user namespace that owns nothing of the network namespace)
// in a fresh network namespace, with workers that drain badly.
func TestSteerUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to map a user namespace onto uid 65534")
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("net.ipv4.tcp_migrate_req is %s here: the test would not show that steer mode does without it", strings.TrimSpace(string(b)))
	}
	b := StartBaton(t, Opt{
		Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_WORKERS=2", "BATON_READY=notify", "BATON_HANDOFF=steer", "HELLO_DRAIN=0"},
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWPID | unix.CLONE_NEWUSER,
			Setpgid:     true,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
			// setuid(0) in the new namespace: the process then is host uid
			// 65534; without it, it would keep root's.
			Credential: &syscall.Credential{Uid: 0, Gid: 0},
		},
	}, "--", batonBin, "hello")
	addr := b.Expect("listener opened").Str("addr")
	b.Expect("generation ready")
	if uid := procStatus(b.PID(), "Uid"); uid != 65534 {
		t.Fatalf("baton runs as host uid %d, want 65534", uid)
	}
	stop := load(t, addr, 32)
	for gen := 2; gen <= 11; gen++ {
		b.Signal(unix.SIGHUP)
		b.Expect("swap complete", "gen", gen)
	}
	waitGenerationServes(t, addr, "11")
	r := stop()
	t.Logf("%d requests, %d failed %v (%d on reused connections)", r.Requests, r.Failures, r.ByKind, r.Reused)
	if hard := r.Failures - r.Reused; hard != 0 {
		t.Errorf("%d hard failures, want 0", hard)
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestSteerLateHandshake: clients whose handshake begins before a swap and
// ends late, their SYN-ACKs lost meanwhile (here nftables drops them until
// the test lifts the rule), lose nothing (docs/choices.md, "Steer mode and
// distant clients"):
//   - "while the old worker drains": the handshake ends after the old
//     generation was told to stop, into its queue, where no worker accepts
//     any more. baton relays the connection to the current generation once
//     the old worker is gone, instead of closing it with the socket.
//   - "after the old socket is gone": the client's next SYN, with nothing
//     of the old generation left, reaches the current generation.
func TestSteerLateHandshake(t *testing.T) {
	if os.Getenv("TEST_NETNS_CHILD") == "" {
		t.Skip("needs root and a network namespace of its own (it adds an nftables rule)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (test/run installs nftables as root)")
	}
	for _, c := range []struct {
		name      string
		heldAlive bool // an idle connection keeps the old worker draining
	}{
		{"while the old worker drains", true},
		{"after the old socket is gone", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			// HELLO_DRAIN: the old worker serves its open connections this
			// long after SIGTERM, and exits once none is left.
			b, addr := serve(t, []string{"BATON_WORKERS=1", "BATON_READY=notify", "BATON_HANDOFF=steer",
				"BATON_STOP_TIMEOUT=60s", "HELLO_DRAIN=60s", "BATON_LOG_LEVEL=debug"}, batonBin, "hello")
			var idle net.Conn
			if c.heldAlive {
				var err error
				if idle, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				defer idle.Close()
				if gen := generationOn(t, idle, "keep-alive"); gen != "1" {
					t.Fatalf("the idle connection was answered by generation %s, want 1", gen)
				}
			}
			conn := lateClient(t, addr, func() {
				b.Signal(unix.SIGHUP)
				b.Expect("swap complete", "gen", 2)
				b.Expect("worker retiring", "gen", 1)
				if !c.heldAlive {
					b.Expect("old generation left", "gen", 1)
					return
				}
				// hello says so once its listener is closed: it accepts no more.
				b.Err.waitFor(t, "generation 1's drain", deadline, func(all []string, _ []Event) bool {
					return slices.ContainsFunc(all, func(l string) bool {
						return strings.Contains(l, "generation 1 worker 0") && strings.Contains(l, "draining on SIGTERM")
					})
				})
			})
			if c.heldAlive {
				idle.Close() // generation 1's worker has nothing left to serve: it exits
			}
			if gen := generationOn(t, conn, "close"); gen != "2" {
				t.Fatalf("the late connection was answered by generation %s, want 2", gen)
			}
			relayed := 0
			if c.heldAlive {
				relayed = b.Expect("queued connections relayed", "gen", 1).Int("connections")
			}
			b.Signal(unix.SIGTERM)
			b.Wait()
			if !c.heldAlive {
				relayed = relayedSoFar(b)
			}
			if want := map[bool]int{true: 1, false: 0}[c.heldAlive]; relayed != want {
				t.Fatalf("%d connections relayed, want %d", relayed, want)
			}
		})
	}
}

// relayedSoFar sums the connections baton has logged relaying so far
// ("queued connections relayed").
func relayedSoFar(b *Baton) int {
	n := 0
	for _, ev := range b.Events() {
		if ev.Msg() == "queued connections relayed" {
			n += ev.Int("connections")
		}
	}
	return n
}

// lateClient connects to addr with its SYN-ACKs dropped until swap has
// run, and returns the connection once the handshake has completed.
func lateClient(t *testing.T, addr string, swap func()) net.Conn {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "late client")
	defer f.Close() // conn holds a dup
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	table := fmt.Sprintf("batonlate%d", sa.(*unix.SockaddrInet4).Port)
	nft(t, "add table inet "+table)
	t.Cleanup(func() { _ = exec.Command("nft", "delete", "table", "inet", table).Run() })
	nft(t, "add chain inet "+table+" in { type filter hook input priority 0 ; }")
	nft(t, fmt.Sprintf("add rule inet %s in tcp dport %d tcp flags & (syn | ack) == syn | ack drop", table, sa.(*unix.SockaddrInet4).Port))
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ap.IP.To4())}); err != unix.EINPROGRESS {
		t.Fatalf("connect: %v, want EINPROGRESS", err)
	}
	swap()
	nft(t, "delete table inet "+table)
	// A retransmitted SYN or SYN-ACK (1 s, 3 s, ... after the first) ends
	// the handshake.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, int(deadline/time.Millisecond)); n != 1 || err != nil {
		t.Fatalf("the late handshake did not complete: poll %d %v", n, err)
	}
	if errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
		t.Fatalf("the late handshake failed: %v %v", unix.Errno(errno), err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
	conn, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// nft runs one nft command (words split on spaces) or fails the test.
func nft(t *testing.T, cmd string) {
	t.Helper()
	if out, err := exec.Command("nft", strings.Fields(cmd)...).CombinedOutput(); err != nil {
		t.Fatalf("nft %s: %v: %s", cmd, err, out)
	}
}

// generationOn sends one GET / on c with the given Connection header and
// returns the generation that answered (X-Baton-Generation).
func generationOn(t *testing.T, c net.Conn, connection string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(deadline))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: baton\r\nConnection: %s\r\n\r\n", connection); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Baton-Generation")
}
