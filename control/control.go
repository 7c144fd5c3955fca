//go:build linux

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/baton-init/baton/handoff"
)

// controlTimeout bounds one control request end to end.
const controlTimeout = 2 * time.Second

// ControlAddr is the abstract unix socket on which the baton of pid's PID
// namespace answers `baton health`. Abstract sockets need no filesystem
// (FROM scratch, read-only root) and are private to the network namespace;
// the PID namespace's inode in the name keeps two batons sharing a network
// namespace (docker --network host, the test suite) apart.
func ControlAddr(pid string) string {
	ns, err := os.Readlink("/proc/" + pid + "/ns/pid")
	if err != nil {
		return "@baton/ctl"
	}
	// "pid:[4026531836]" -> "4026531836"
	return "@baton/ctl/" + strings.Trim(strings.TrimPrefix(ns, "pid:"), "[]")
}

// ServeControl answers status requests until the listener is closed. It
// owns nothing: each request is a Query to the loop.
func ServeControl(s *handoff.Supervisor, addr string) (net.Listener, error) {
	l, err := net.Listen("unix", "\x00"+strings.TrimPrefix(addr, "@"))
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", addr, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			go answer(s, c)
		}
	}()
	return l, nil
}

func answer(s *handoff.Supervisor, c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(controlTimeout)) // a failed deadline only risks a slow client
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "status" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	st, err := s.Query(ctx)
	if err != nil {
		return
	}
	_ = json.NewEncoder(c).Encode(st) // the client treats no answer as not ready
}

// AskStatus asks the baton behind addr for its status.
func AskStatus(addr string) (handoff.Status, error) {
	var st handoff.Status
	c, err := net.DialTimeout("unix", "\x00"+strings.TrimPrefix(addr, "@"), controlTimeout)
	if err != nil {
		return st, fmt.Errorf("no baton answers on %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(controlTimeout))
	if _, err := c.Write([]byte("status\n")); err != nil {
		return st, fmt.Errorf("control %s: %w", addr, err)
	}
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		return st, fmt.Errorf("control %s: %w", addr, err)
	}
	return st, nil
}
