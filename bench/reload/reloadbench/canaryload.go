package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// request is one request of the load: when its connection began, which
// generation answered (0: none), and how it failed ("" if it did not).
type request struct {
	at   time.Time
	gen  int
	fail string
}

// rateLoad is a light, steady load: clients that each send rate requests a
// second, every one on a fresh connection ("Connection: close"), so each
// request is steered anew by the kernel and none stays with a generation
// after the cutover. No retries.
type rateLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []request
}

func startLoad(addr string, clients int, rate float64) *rateLoad {
	l := &rateLoad{stop: make(chan struct{})}
	every := time.Duration(float64(time.Second) / rate)
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// Spread the clients over the interval.
			t := time.NewTimer(every * time.Duration(i) / time.Duration(clients))
			defer t.Stop()
			var mine []request
			for {
				select {
				case <-l.stop:
					l.mu.Lock()
					l.reqs = append(l.reqs, mine...)
					l.mu.Unlock()
					return
				case <-t.C:
				}
				start := time.Now()
				mine = append(mine, get(addr, start))
				// A fixed rate, not a closed loop: the next one is due
				// `every` after this one began (or at once if late).
				t.Reset(max(time.Until(start.Add(every)), 0))
			}
		}()
	}
	return l
}

func (l *rateLoad) finish() []request {
	close(l.stop)
	l.wg.Wait()
	return l.reqs
}

const getReq = "GET / HTTP/1.1\r\nHost: reloadbench\r\nConnection: close\r\n\r\n"

func get(addr string, start time.Time) (r request) {
	r.at = start
	err := func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(start.Add(5 * time.Second))
		if _, err := io.WriteString(c, getReq); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			r.fail = "status"
		}
		r.gen, _ = strconv.Atoi(resp.Header.Get("X-Baton-Generation"))
		return nil
	}()
	if err != nil {
		r.fail = classify(err)
	}
	return r
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}
