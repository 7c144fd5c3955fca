package logread

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type event struct {
	Message string `json:"message"`
	N       int    `json:"n"`
	seen    time.Time
}

// start reads a real pipe into a Log that keeps 3 tail lines; it returns the
// Log, the pipe's write end, the lines each saw, and the events parse saw.
func start(t *testing.T) (*Log[event], *os.File, func() []string, func() []event) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	var mu sync.Mutex
	var lines []string
	var parsed []event
	l := New[event](3)
	parse := func(line string, seen time.Time) (ev event, ok bool) {
		if !JSON(line, &ev) || ev.Message == "" {
			return ev, false
		}
		ev.seen = seen
		mu.Lock()
		parsed = append(parsed, ev)
		mu.Unlock()
		return ev, true
	}
	each := func(line string, _ time.Time) {
		mu.Lock()
		lines = append(lines, line)
		mu.Unlock()
	}
	go l.Read(r, parse, each)
	get := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), lines...) }
	got := func() []event { mu.Lock(); defer mu.Unlock(); return append([]event(nil), parsed...) }
	return l, w, get, got
}

func write(t *testing.T, w io.Writer, lines ...string) {
	t.Helper()
	for _, line := range lines {
		if _, err := fmt.Fprintln(w, line); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAwaitEventsTailEOF(t *testing.T) {
	l, w, lines, parsed := start(t)
	before := time.Now()
	write(t, w, "one", `{"message":"a","n":1}`, "two", "{not json", `{"n":9}`, "three",
		`{"message":"b","n":2}`, "four", `{"message":"a","n":3}`)

	cur := 0
	ev, err := l.Await(&cur, 10*time.Second, nil, func(ev event) (bool, error) {
		// parse ran, in the reader, before any waiter saw the event.
		if p := parsed(); len(p) == 0 || p[len(p)-1].N < ev.N {
			t.Errorf("event %d seen by a waiter before parse returned it", ev.N)
		}
		return ev.Message == "a" && ev.N > 1, nil
	})
	if err != nil || ev.N != 3 || cur != 3 {
		t.Fatalf("Await = %+v, %v (cursor %d); want n=3, nil (cursor 3)", ev, err, cur)
	}
	if ev.seen.Before(before) || ev.seen.After(time.Now()) {
		t.Errorf("seen = %v, not when it was read", ev.seen)
	}
	if got := len(lines()); got != 9 {
		t.Errorf("each saw %d lines, want 9", got)
	}
	var ns []int
	for _, e := range l.Snapshot() {
		ns = append(ns, e.N)
	}
	if fmt.Sprint(ns) != "[1 2 3]" {
		t.Errorf("Snapshot: n = %v, want [1 2 3]", ns)
	}
	// The last 3 lines that were not events, in order.
	if got, want := l.TailText("; tail:\n  "), "; tail:\n  {\"n\":9}\n  three\n  four"; got != want {
		t.Errorf("TailText = %q, want %q", got, want)
	}

	// match's error ends the wait with the event.
	errBad := errors.New("bad")
	write(t, w, `{"message":"bad","n":4}`)
	ev, err = l.Await(&cur, 10*time.Second, nil, func(ev event) (bool, error) {
		return ev.Message == "bad", errBad
	})
	if err != errBad || ev.N != 4 {
		t.Fatalf("Await = %+v, %v; want n=4, %v", ev, err, errBad)
	}

	// The output ends: what did not come ends the wait with ErrEnded.
	write(t, w, `{"message":"c","n":5}`)
	w.Close()
	ev, err = l.Await(&cur, 10*time.Second, nil, func(ev event) (bool, error) { return ev.Message == "never", nil })
	if err != ErrEnded || ev.Message != "" || cur != 5 {
		t.Fatalf("Await = %+v, %v (cursor %d); want zero, ErrEnded (cursor 5)", ev, err, cur)
	}
}

func TestTimeoutAndExited(t *testing.T) {
	l, w, _, _ := start(t)
	if got := l.TailText("x"); got != "" {
		t.Errorf("TailText of nothing = %q", got)
	}
	cur := 0
	never := func(ev event) (bool, error) { return false, nil }
	if _, err := l.Await(&cur, 20*time.Millisecond, nil, never); err != ErrTimeout {
		t.Fatalf("Await with nothing written = %v, want ErrTimeout", err)
	}
	exited := make(chan struct{})
	close(exited)
	// The pipe stays open (as when workers hold it): the exit ends the wait.
	if _, err := l.Await(&cur, 10*time.Second, exited, never); err != ErrExited {
		t.Fatalf("Await after the exit = %v, want ErrExited", err)
	}
	// What is already read is still found after the exit.
	write(t, w, `{"message":"late"}`)
	err := l.Wait(10*time.Second, nil, func(events []event) (bool, error) { return len(events) == 1, nil })
	if err != nil {
		t.Fatal(err)
	}
	cur = 0
	ev, err := l.Await(&cur, 10*time.Second, exited, func(ev event) (bool, error) { return ev.Message == "late", nil })
	if err != nil || ev.Message != "late" {
		t.Fatalf("Await = %+v, %v; want late, nil", ev, err)
	}
	if strings.Contains(l.TailText(""), "late") {
		t.Error("an event in the tail")
	}
}
