//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// event is one JSON line of baton's log (stderr), stamped when read.
type event struct {
	Message string `json:"message"`
	Gen     int    `json:"gen"`
	Worker  int    `json:"worker"`
	PID     int    `json:"pid"`
	Step    int    `json:"step"`
	Percent int    `json:"percent"`
	Parked  int    `json:"parked"`
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Signal  string `json:"signal"`
	Level   string `json:"level"`
	seen    time.Time
}

// baton is one baton under test. Its stderr (and its workers', which
// inherit it) is read line by line; the JSON lines are its events.
type baton struct {
	cmd    *exec.Cmd
	exited chan struct{}

	mu     sync.Mutex
	events []event
	tail   []string // last lines that are not baton's JSON (worker output)
	more   chan struct{}
	eof    bool
	// hook, when set, runs in the reader for every event as it is read,
	// before any waiter sees it (for measurements that must be taken at
	// that moment).
	hook func(ev event)
	raw  *os.File // every line read, for --keep
}

var (
	runningMu sync.Mutex
	running   = map[*baton]bool{}
)

// stopAll stops every baton still running (on a signal or a failure).
func stopAll() {
	runningMu.Lock()
	bs := make([]*baton, 0, len(running))
	for b := range running {
		bs = append(bs, b)
	}
	runningMu.Unlock()
	var wg sync.WaitGroup
	for _, b := range bs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = b.stop(10 * time.Second) }()
	}
	wg.Wait()
}

func startBaton(argv, env []string, rawPath string, hook func(event)) (*baton, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	b := &baton{exited: make(chan struct{}), more: make(chan struct{}, 1), hook: hook}
	if rawPath != "" {
		if b.raw, err = os.Create(rawPath); err != nil {
			return nil, err
		}
	}
	b.cmd = exec.Command(argv[0], argv[1:]...)
	b.cmd.Env = env
	b.cmd.Stdout = w
	b.cmd.Stderr = w
	// Its own process group (so a last-resort SIGKILL reaches what stayed
	// in it), and SIGTERM if this program dies first: baton then stops its
	// workers itself.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	err = b.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	runningMu.Lock()
	running[b] = true
	runningMu.Unlock()
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	go b.read(r)
	return b, nil
}

func (b *baton) pid() int { return b.cmd.Process.Pid }

func (b *baton) read(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		if b.raw != nil {
			fmt.Fprintf(b.raw, "%s %s\n", now.Format("15:04:05.000000"), line)
		}
		var ev event
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &ev) == nil && ev.Message != "" {
			ev.seen = now
			if b.hook != nil {
				b.hook(ev)
			}
			b.mu.Lock()
			b.events = append(b.events, ev)
		} else {
			b.mu.Lock()
			b.tail = append(b.tail, line)
			if len(b.tail) > 20 {
				b.tail = b.tail[1:]
			}
		}
		b.mu.Unlock()
		select {
		case b.more <- struct{}{}:
		default:
		}
	}
	b.mu.Lock()
	b.eof = true
	b.mu.Unlock()
	if b.raw != nil {
		b.raw.Close()
	}
	select {
	case b.more <- struct{}{}:
	default:
	}
}

// errFailed: baton logged that the reload did not go through (a rollback,
// an aborted canary, a revert).
var errFailed = errors.New("reload failed")

// failure names the events that end a reload without its swap.
var failure = map[string]bool{"swap aborted": true, "canary aborted": true, "swap reverted": true, "swap halted": true, "reload refused": true}

// await returns the first event at index >= *cursor that ok accepts,
// advancing *cursor past it. A failure event, baton's exit, or the
// deadline end the wait with an error.
func (b *baton) await(cursor *int, what string, timeout time.Duration, ok func(event) bool) (event, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		for *cursor < len(b.events) {
			ev := b.events[*cursor]
			*cursor++
			if failure[ev.Message] {
				b.mu.Unlock()
				return ev, fmt.Errorf("%w: %s (gen %d): %s", errFailed, ev.Message, ev.Gen, ev.Reason)
			}
			if ok(ev) {
				b.mu.Unlock()
				return ev, nil
			}
		}
		eof := b.eof
		b.mu.Unlock()
		if eof {
			return event{}, fmt.Errorf("baton's output ended while waiting for %s%s", what, b.tailText())
		}
		select {
		case <-b.more:
		case <-deadline.C:
			return event{}, fmt.Errorf("no %s within %v%s", what, timeout, b.tailText())
		}
	}
}

func (b *baton) snapshot() []event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]event(nil), b.events...)
}

func (b *baton) tailText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.tail) == 0 {
		return ""
	}
	return "; last worker output:\n  " + strings.Join(b.tail, "\n  ")
}

// stop sends baton SIGTERM (it stops its workers) and waits up to wait,
// then SIGKILLs baton's process group and every process left below it.
func (b *baton) stop(wait time.Duration) error {
	defer func() {
		runningMu.Lock()
		delete(running, b)
		runningMu.Unlock()
	}()
	select {
	case <-b.exited:
		return nil
	default:
	}
	left := descendants(b.pid())
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-b.exited:
		return nil
	case <-t.C:
		_ = syscall.Kill(-b.pid(), syscall.SIGKILL)
		for _, p := range left {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		<-b.exited
		return fmt.Errorf("baton did not exit within %v of SIGTERM: killed", wait)
	}
}
