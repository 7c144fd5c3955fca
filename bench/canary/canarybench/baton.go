//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/baton-init/baton/bench/internal/logread"
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
// inherit it) is read line by line; the JSON lines are its events, the
// last 20 others (worker output) are kept for diagnosis.
type baton struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *logread.Log[event]
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

// startBaton starts baton. hook, when not nil, runs in the reader for every
// event as it is read, before any waiter sees it (for measurements that must
// be taken at that moment). rawPath, when not "", gets every line read, for
// --keep.
func startBaton(argv, env []string, rawPath string, hook func(event)) (*baton, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	b := &baton{exited: make(chan struct{}), log: logread.New[event](20)}
	var raw *os.File
	if rawPath != "" {
		if raw, err = os.Create(rawPath); err != nil {
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
	parse := func(line string, seen time.Time) (ev event, ok bool) {
		if !logread.JSON(line, &ev) || ev.Message == "" {
			return ev, false
		}
		ev.seen = seen
		if hook != nil {
			hook(ev)
		}
		return ev, true
	}
	var each func(string, time.Time)
	if raw != nil {
		each = func(line string, seen time.Time) {
			fmt.Fprintf(raw, "%s %s\n", seen.Format("15:04:05.000000"), line)
		}
	}
	go func() {
		b.log.Read(r, parse, each)
		if raw != nil {
			raw.Close()
		}
	}()
	return b, nil
}

func (b *baton) pid() int { return b.cmd.Process.Pid }

// errFailed: baton logged that the reload did not go through (a rollback,
// an aborted canary, a revert).
var errFailed = errors.New("reload failed")

// failure names the events that end a reload without its swap.
var failure = map[string]bool{"swap aborted": true, "canary aborted": true, "swap reverted": true, "swap halted": true, "reload refused": true}

// await returns the first event at index >= *cursor that ok accepts,
// advancing *cursor past it. A failure event, baton's exit, or the
// deadline end the wait with an error.
func (b *baton) await(cursor *int, what string, timeout time.Duration, ok func(event) bool) (event, error) {
	ev, err := b.log.Await(cursor, timeout, b.exited, func(ev event) (bool, error) {
		if failure[ev.Message] {
			return true, fmt.Errorf("%w: %s (gen %d): %s", errFailed, ev.Message, ev.Gen, ev.Reason)
		}
		return ok(ev), nil
	})
	switch err {
	case logread.ErrEnded:
		err = fmt.Errorf("baton's output ended while waiting for %s%s", what, b.log.TailText(tailPrefix))
	case logread.ErrExited:
		err = fmt.Errorf("baton exited while waiting for %s%s", what, b.log.TailText(tailPrefix))
	case logread.ErrTimeout:
		err = fmt.Errorf("no %s within %v%s", what, timeout, b.log.TailText(tailPrefix))
	}
	return ev, err
}

const tailPrefix = "; last worker output:\n  "

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
