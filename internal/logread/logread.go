// Package logread reads the log of a process under test, line by line, as
// the benchmark programs under bench/ do: the lines that parse as events are
// kept (stamped with the time they were read), the last lines that do not
// are kept for diagnosis, and callers wait, with a timeout, for an event.
package logread

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"time"
)

// The errors Wait and Await end with when what they wait for did not come.
var (
	ErrEnded   = errors.New("output ended")
	ErrExited  = errors.New("process exited")
	ErrTimeout = errors.New("timed out")
)

// exitGrace is how long Wait lets the reader catch up after the process
// exited, before it gives up.
const exitGrace = 100 * time.Millisecond

// Log is what Read has read so far. Its methods are safe for concurrent use.
type Log[E any] struct {
	mu     sync.Mutex
	events []E
	tail   []string // the last lines that are not events
	keep   int      // how many of them
	more   chan struct{}
	eof    bool
}

// New returns an empty Log that keeps the last tail lines that are not
// events.
func New[E any](tail int) *Log[E] {
	return &Log[E]{keep: tail, more: make(chan struct{}, 1)}
}

// Read reads r line by line until it ends (or a line is longer than 1 MiB),
// then closes it; run it in a goroutine. For each line it takes the time,
// calls each (when not nil), then parse, both in the reading goroutine, and
// only then lets waiters see the event parse returned, if it returned true.
func (l *Log[E]) Read(r io.ReadCloser, parse func(line string, seen time.Time) (E, bool), each func(line string, seen time.Time)) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		if each != nil {
			each(line, now)
		}
		ev, ok := parse(line, now)
		l.mu.Lock()
		if ok {
			l.events = append(l.events, ev)
		} else {
			l.tail = append(l.tail, line)
			if len(l.tail) > l.keep {
				l.tail = l.tail[1:]
			}
		}
		l.mu.Unlock()
		l.notify()
	}
	l.mu.Lock()
	l.eof = true
	l.mu.Unlock()
	l.notify()
}

func (l *Log[E]) notify() {
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// JSON reports whether line is a JSON object that decodes into v: the test
// for a log line that may be an event.
func JSON(line string, v any) bool {
	return strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), v) == nil
}

// From returns the events read so far from index i on, without copying
// (events are only ever appended), for a reader that takes them in order
// without Wait: it waits on More between calls.
func (l *Log[E]) From(i int) []E {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= len(l.events) {
		return nil
	}
	return l.events[i:len(l.events):len(l.events)]
}

// More receives when something was read since it last did, or the output
// ended. It is the channel Wait waits on: use one or the other.
func (l *Log[E]) More() <-chan struct{} { return l.more }

// Snapshot returns a copy of the events read so far.
func (l *Log[E]) Snapshot() []E {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]E(nil), l.events...)
}

// TailText returns prefix and the last lines that were not events, one per
// line indented by two spaces, or "" when there are none.
func (l *Log[E]) TailText(prefix string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.tail) == 0 {
		return ""
	}
	return prefix + strings.Join(l.tail, "\n  ")
}

// Wait calls check with the events read so far, at once and again each time
// a line is read, until check returns true; Wait then returns check's error.
// check must not modify the events; it runs without the Log's lock held.
// When the output ends and check, called with every event, still returns
// false, Wait returns ErrEnded; when timeout passes first, ErrTimeout. When
// exited is closed (the process is gone, but what inherited its output may
// hold it open), Wait lets the reader catch up for 100 ms and then returns
// ErrExited. exited may be nil.
func (l *Log[E]) Wait(timeout time.Duration, exited <-chan struct{}, check func(events []E) (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var grace <-chan time.Time
	for {
		l.mu.Lock()
		// Events are only ever appended: the slice, capped, stays as it is.
		events, eof := l.events[:len(l.events):len(l.events)], l.eof
		l.mu.Unlock()
		if done, err := check(events); done {
			return err
		}
		if eof {
			return ErrEnded
		}
		select {
		case <-l.more:
		case <-exited:
			exited = nil // once
			t := time.NewTimer(exitGrace)
			defer t.Stop()
			grace = t.C
		case <-grace:
			return ErrExited
		case <-deadline.C:
			return ErrTimeout
		}
	}
}

// Await returns the first event at index >= *cursor for which match returns
// true, and match's error, advancing *cursor past each event it looks at. It
// waits for it as Wait does, and ends with Wait's errors (and a zero E) when
// none came.
func (l *Log[E]) Await(cursor *int, timeout time.Duration, exited <-chan struct{}, match func(E) (bool, error)) (E, error) {
	var found E
	err := l.Wait(timeout, exited, func(events []E) (bool, error) {
		for *cursor < len(events) {
			ev := events[*cursor]
			*cursor++
			if ok, err := match(ev); ok {
				found = ev
				return true, err
			}
		}
		return false, nil
	})
	return found, err
}
