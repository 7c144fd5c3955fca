package test

// Steer mode: a rolled-back generation leaves the kernel's reuseport group
// the way a leaving one does, only once no process of it holds its
// sockets. The kernel's rules: a UDP socket leaves the group only at its
// last close; a TCP listener leaves at shutdown(SHUT_RD), and a later
// listen() on it puts it back, at the end.

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rollbackEnv is a steer-mode baton whose generation 2 (rolledback.py) is
// rolled back after 1 s and lingers, ignoring SIGTERM, until it is killed
// after 3 s.
var rollbackEnv = []string{"BATON_READY=notify", "BATON_HANDOFF=steer", "BATON_READY_TIMEOUT=1s",
	"BATON_STOP_TIMEOUT=3s", "BATON_LOG_LEVEL=debug"}

// TestSteerRollbackUDP: a rolled-back generation whose worker ignores
// SIGTERM for a while still holds its UDP socket, which stays in the group
// until that worker is gone: no datagram reaches it, before or after the
// next generation is steered to, and none is lost.
func TestSteerRollbackUDP(t *testing.T) {
	b := StartBaton(t, Opt{Env: append([]string{"BATON_LISTEN=udp://127.0.0.1:0"}, rollbackEnv...)},
		python(t), testdata("rolledback.py"), "udp")
	addr := b.Expect("listener opened").Str("addr")
	b.Expect("generation ready")
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One datagram at a time, a millisecond apart, each answered within
	// 3 s or counted lost (on loopback, with a reader, nothing is lost).
	type answer struct {
		gen  string
		lost bool
	}
	answers := make(chan answer, 1024)
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		buf := make([]byte, 256)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			msg := fmt.Sprintf("n=%d", i)
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				answers <- answer{lost: true}
				continue
			}
			for {
				n, err := c.Read(buf)
				if err != nil {
					answers <- answer{lost: true}
					break
				}
				// "gen=G pid=P n=I"; an answer to an earlier, lost datagram is skipped.
				if f := strings.Fields(string(buf[:n])); len(f) == 3 && f[2] == msg {
					answers <- answer{gen: strings.TrimPrefix(f[0], "gen=")}
					break
				}
			}
		}
	}()
	seen := map[string]int{}
	lost := 0
	record := func(a answer) {
		if a.lost {
			lost++
		} else {
			seen[a.gen]++
		}
	}
	take := func(until func(answer) bool) {
		t.Helper()
		end := time.After(deadline)
		for {
			select {
			case a := <-answers:
				record(a)
				if until(a) {
					return
				}
			case <-end:
				t.Fatalf("datagrams answered %v, %d lost: the awaited answer never came", seen, lost)
			}
		}
	}
	take(func(a answer) bool { return a.gen == "1" })
	b.Signal(unix.SIGHUP)
	b.Expect("swap aborted", "gen", 2)
	b.ExpectOut(0, "term") // it got SIGTERM, ignored it, and still reads
	b.Signal(unix.SIGHUP)
	b.Expect("swap complete", "gen", 3)
	b.Expect("old generation left", "gen", 1)
	// Generation 3 serves alone now: 20 more answers after its first.
	take(func(a answer) bool { return a.gen == "3" })
	for range 20 {
		take(func(answer) bool { return true })
	}
	close(stop)
	for done := false; !done; {
		select {
		case a := <-answers:
			record(a)
		case <-pinged:
			done = true
		}
	}
	for len(answers) > 0 {
		record(<-answers)
	}
	t.Logf("datagrams answered %v, %d lost", seen, lost)
	if seen["2"] != 0 {
		t.Errorf("the rolled-back generation answered %d datagrams", seen["2"])
	}
	if lost != 0 {
		t.Errorf("%d datagrams lost", lost)
	}
	if seen["3"] == 0 {
		t.Error("generation 3 answered nothing")
	}
	b.Signal(unix.SIGTERM)
	b.Wait()
}

// TestSteerRollbackTCPListen: a rolled-back generation whose worker, once
// told to stop, calls listen() on its inherited listener (asyncio, uvicorn,
// Node's listen({fd}) and gunicorn all call listen()) gets no connection,
// whether it accepts them or not, and no connection fails.
func TestSteerRollbackTCPListen(t *testing.T) {
	for _, mode := range []string{"tcp-accept", "tcp-listen"} {
		t.Run(mode, func(t *testing.T) {
			b, addr := serve(t, append([]string{"BATON_WORKERS=2"}, rollbackEnv...),
				python(t), testdata("rolledback.py"), mode, batonBin, "hello")
			stop := load(t, addr, 16)
			waitGenerationServes(t, addr, "1")
			b.Signal(unix.SIGHUP)
			b.Expect("swap aborted", "gen", 2)
			// Both workers of generation 2 ignored SIGTERM and called
			// listen() again.
			_, i := b.ExpectOut(0, "relistened")
			b.ExpectOut(i+1, "relistened")
			b.Signal(unix.SIGHUP)
			b.Expect("swap complete", "gen", 3)
			b.Expect("old generation left", "gen", 1)
			waitGenerationServes(t, addr, "3")
			r := stop()
			if r.Generations["2"] != 0 {
				t.Errorf("the rolled-back generation answered %d requests", r.Generations["2"])
			}
			checkNoFailures(t, r)
			settle(t, b, 2)
			b.Signal(unix.SIGTERM)
			b.Wait()
		})
	}
}
