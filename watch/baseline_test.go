package watch

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// prompt bounds New and Close while a pass is blocked: neither may wait on it. New may wait for
// one tick of the kernel's coarse clock (a few ms, see tick.go); the rest is slack for a loaded
// machine. A watcher that waits for the pass takes seconds here (the hooks block that long).
const prompt = 250 * time.Millisecond

// blockFor is how long a blocking hook waits at most for the test to release it: long enough
// that a New or Close waiting for the pass is caught, short enough that such a build fails the
// test instead of hanging it.
const blockFor = 3 * time.Second

// gate blocks the hook that waits on it until the test opens it, or blockFor.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// wait reports whether the gate was opened (false: blockFor elapsed).
func (g *gate) wait() bool {
	select {
	case <-g.ch:
		return true
	case <-time.After(blockFor):
		return false
	}
}

// TestNewDoesNotWaitForBaseline: New returns at once while the first pass is blocked in a read,
// and that pass goes on to be the baseline once the read returns.
func TestNewDoesNotWaitForBaseline(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a1")
	release := newGate()
	defer release.open()
	entered := make(chan struct{}, 1)
	var first atomic.Bool
	block := func(string) {
		if first.CompareAndSwap(false, true) {
			entered <- struct{}{}
			release.wait()
		}
	}
	t0 := time.Now()
	hn := launch(t, []string{dir}, Options{Debounce: testDebounce}, hooks{beforeRead: block})
	if el := time.Since(t0); el > prompt {
		t.Errorf("New took %v while the first pass was blocked in a read", el)
	}
	select {
	case <-entered:
	case <-time.After(deadline):
		t.Fatal("the first pass never read a file")
	}
	release.open()
	// The baseline is the content, not a change; the next change is reported exactly.
	select {
	case r := <-hn.results:
		if r.changed {
			t.Fatal("the baseline was reported as a change")
		}
	case <-time.After(deadline):
		t.Fatal("no baseline")
	}
	write(t, filepath.Join(dir, "a"), "a2")
	hn.expectChange(hashOf(t, dir))
}

// TestChangeDuringBaseline: a change made while the first pass runs, after New returned (so
// possibly after the worker read its configuration), is reported as exactly one change, whether
// the pass reads the changed file after the change or had read it before.
func TestChangeDuringBaseline(t *testing.T) {
	for _, tc := range []struct{ at, edit string }{
		{"a", "a"}, // the file about to be read
		{"b", "a"}, // a file already read
		{"a", "c"}, // a new file
	} {
		t.Run(fmt.Sprintf("at-%s-edit-%s", tc.at, tc.edit), func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "a"), "a1")
			write(t, filepath.Join(dir, "b"), "b1")
			returned := newGate()
			defer returned.open()
			edited := make(chan struct{})
			var done atomic.Bool
			edit := func(rel string) {
				if rel != tc.at || done.Swap(true) {
					return
				}
				defer close(edited)
				if !returned.wait() {
					t.Error("New did not return while its first pass ran")
				}
				if err := os.WriteFile(filepath.Join(dir, tc.edit), []byte("edited"), 0o644); err != nil {
					t.Error(err)
				}
			}
			hn := launch(t, []string{dir}, Options{Debounce: testDebounce}, hooks{beforeRead: edit})
			returned.open()
			select {
			case <-edited:
			case <-time.After(deadline):
				t.Fatal("the first pass never read the file")
			}
			hn.expectChange(hashOf(t, dir))
			// Barrier: the next change reported is this one, so there was no second one for the
			// edit above.
			write(t, filepath.Join(dir, "b"), "b2")
			hn.expectChange(hashOf(t, dir))
		})
	}
}

// TestQuietBaseline: a tree written just before New (in the same tick of the kernel clock) and
// not touched while the first, slow pass runs reports no change, and the next real change is
// reported exactly. Repeated, since a rule that confused "just before" with "during" would
// fail only when both fall in one tick.
func TestQuietBaseline(t *testing.T) {
	// A slow disk: each read waits for the kernel's coarse clock to tick, so the pass spans ticks.
	slow := func(string) { coarseAfter(coarseNow()) }
	for i := range 5 {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b", "sub/c"} {
			write(t, filepath.Join(dir, n), n)
		}
		// start fails if the baseline is reported as a change.
		hn := start(t, []string{dir}, Options{Debounce: testDebounce}, hooks{beforeRead: slow})
		write(t, filepath.Join(dir, "sub", "c"), fmt.Sprint("c", i))
		hn.expectChange(hashOf(t, dir))
		if err := hn.w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseDoesNotWait: Close returns at once while a pass is blocked in a read, and the
// watcher goroutine ends as soon as the read returns.
func TestCloseDoesNotWait(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a1")
	release := newGate()
	defer release.open()
	entered := make(chan struct{}, 1)
	var armed atomic.Bool
	block := func(string) {
		if armed.CompareAndSwap(true, false) {
			entered <- struct{}{}
			release.wait()
		}
	}
	w, err := newWatcher([]string{dir}, Options{Debounce: time.Millisecond}, hooks{beforeRead: block})
	if err != nil {
		t.Fatal(err)
	}
	// Whichever pass reads next blocks: the first one, or the one this edit causes.
	armed.Store(true)
	write(t, filepath.Join(dir, "a"), "a2")
	select {
	case <-entered:
	case <-time.After(deadline):
		t.Fatal("no read began")
	}
	t0 := time.Now()
	err = w.Close()
	if el := time.Since(t0); el > prompt {
		t.Errorf("Close took %v while a pass was blocked in a read", el)
	}
	if err != nil {
		t.Errorf("Close: %v", err)
	}
	release.open()
	select {
	case <-w.done:
	case <-time.After(deadline):
		t.Fatal("the watcher goroutine did not end after Close once the read returned")
	}
}
