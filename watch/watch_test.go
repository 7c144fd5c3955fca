package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// deadline bounds every wait for the watcher; nothing here sleeps to "give it time".
const deadline = 10 * time.Second

// testDebounce is long enough that the few syscalls of one test step (e.g. os.WriteFile's
// truncate then write) land in one debounce window even under -race.
const testDebounce = 100 * time.Millisecond

type result struct {
	start   time.Time
	sum     digest
	changed bool
}

// harness runs a watcher with a hook that records every hash comparison in order. That order is
// the oracle: "exactly one change" means the next reported change carries the hash of the final
// content, with no other change reported before it.
type harness struct {
	t       *testing.T
	w       *Watcher
	results chan result
}

// start runs a watcher and waits for its baseline, which must not be reported as a change:
// the test wrote its files before New.
func start(t *testing.T, paths []string, opt Options, h hooks) *harness {
	t.Helper()
	hn := launch(t, paths, opt, h)
	select {
	case r := <-hn.results:
		if r.changed {
			t.Fatal("the baseline was reported as a change, yet nothing changed after New was called")
		}
	case <-time.After(deadline):
		t.Fatalf("no baseline within %s", deadline)
	}
	return hn
}

// launch runs a watcher, without waiting for its baseline.
func launch(t *testing.T, paths []string, opt Options, h hooks) *harness {
	t.Helper()
	hn := &harness{t: t, results: make(chan result, 1<<14)}
	h.rehashed = func(start time.Time, sum digest, changed bool) {
		select {
		case hn.results <- result{start, sum, changed}:
		default:
			t.Error("test hook buffer full; results lost")
		}
	}
	w, err := newWatcher(paths, opt, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hn.w = w
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return hn
}

// expectChange waits for the next reported change and checks that it is the change to want (the
// hash of the content now on disk), i.e. that no spurious or intermediate change came first, and
// that it was delivered on Changes.
func (hn *harness) expectChange(want digest) {
	hn.t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case r := <-hn.results:
			if !r.changed {
				continue
			}
			if r.sum != want {
				hn.t.Fatalf("a change was reported for content other than the expected one (spurious or intermediate notification)")
			}
			select {
			case <-hn.w.Changes():
			default:
				hn.t.Fatalf("change detected but nothing delivered on Changes()")
			}
			return
		case <-timeout:
			hn.t.Fatalf("no change reported within %s", deadline)
		}
	}
}

// expectNoChangeAfter waits until the watcher has hashed the content at least once after ts and
// fails if it reported a change meanwhile. The hook, not a sleep, says when it has looked.
func (hn *harness) expectNoChangeAfter(ts time.Time) {
	hn.t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case r := <-hn.results:
			if r.changed {
				hn.t.Fatalf("a change was reported although content did not change")
			}
			if r.start.After(ts) {
				select {
				case <-hn.w.Changes():
					hn.t.Fatalf("a notification is pending although content did not change")
				default:
				}
				return
			}
		case <-timeout:
			hn.t.Fatalf("watcher did not look at the content within %s", deadline)
		}
	}
}

func hashOf(t *testing.T, paths ...string) digest {
	t.Helper()
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		abs[i] = a
	}
	s, _ := hashPaths(abs, passConfig{lim: defaultLimits})
	return s.sum
}

func write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces name by rename, like editors and config-management tools do.
func writeAtomic(t *testing.T, name, content string) {
	t.Helper()
	tmp := name + ".tmp"
	write(t, tmp, content)
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// touch changes times (and re-sets the mode) without changing content.
func touch(t *testing.T, name string) time.Time {
	t.Helper()
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(name, future, future); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, 0o644); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

func TestPathsDecode(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "/etc/app.conf", want: []string{"/etc/app.conf"}},
		{in: " /a , b/c,/d ", want: []string{"/a", "b/c", "/d"}},
		{in: "", want: nil},
		{in: "   ", want: nil},
		{in: "/a,,/b", wantErr: true},
		{in: "/a,", wantErr: true},
		{in: ", /a", wantErr: true},
		{in: "/a, ,/b", wantErr: true},
	} {
		var p Paths
		err := p.Decode(tc.in)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "empty") {
				t.Errorf("Decode(%q) = %v, %v; want an 'empty element' error", tc.in, p, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Decode(%q): %v", tc.in, err)
			continue
		}
		if strings.Join(p, "|") != strings.Join(tc.want, "|") || len(p) != len(tc.want) {
			t.Errorf("Decode(%q) = %q, want %q", tc.in, p, tc.want)
		}
	}
	p := Paths{"/a", "/b"}
	if p.String() != "/a,/b" {
		t.Errorf("String() = %q", p.String())
	}
}

func TestFileRewrite(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	write(t, f, "v1")
	hn := start(t, []string{f}, Options{Debounce: testDebounce}, hooks{})

	write(t, f, "v2")
	hn.expectChange(hashOf(t, f))
	write(t, f, "v3 longer")
	hn.expectChange(hashOf(t, f))
}

func TestFileAtomicRename(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	write(t, f, "v1")
	hn := start(t, []string{f}, Options{Debounce: testDebounce}, hooks{})

	writeAtomic(t, f, "v2")
	hn.expectChange(hashOf(t, f))
	// The file's inode was replaced: the watcher must still see the next change.
	writeAtomic(t, f, "v3")
	hn.expectChange(hashOf(t, f))
}

func TestTouchIsNotAChange(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	write(t, f, "v1")
	hn := start(t, []string{f}, Options{Debounce: testDebounce}, hooks{})

	ts := touch(t, f)
	write(t, f, "v1") // same bytes rewritten
	hn.expectNoChangeAfter(ts)
	// Barriers: the next change reported must be this real one, then the next one exactly.
	write(t, f, "v2")
	hn.expectChange(hashOf(t, f))
	writeAtomic(t, f, "v3")
	hn.expectChange(hashOf(t, f))
}

func TestTouchInDirectoryIsNotAChange(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a1")
	write(t, filepath.Join(dir, "b"), "b1")
	hn := start(t, []string{dir}, Options{Debounce: testDebounce}, hooks{})

	ts := touch(t, filepath.Join(dir, "a"))
	touch(t, dir)
	// Neither an empty subdirectory nor a non-regular file is content.
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	hn.expectNoChangeAfter(ts)
	write(t, filepath.Join(dir, "b"), "b2")
	hn.expectChange(hashOf(t, dir))
	write(t, filepath.Join(dir, "c"), "c1")
	hn.expectChange(hashOf(t, dir))
}

// configMap reproduces what the kubelet's AtomicWriter does on a ConfigMap volume: the data
// lives in a timestamped directory, `..data` points to it, and each key is a symlink through
// `..data`. An update writes a new timestamped directory, points `..data_tmp` at it, renames
// `..data_tmp` over `..data` (the one atomic step), then removes the old directory.
type configMap struct {
	t   *testing.T
	dir string
	gen int
	cur string
}

func newConfigMap(t *testing.T, data map[string]string) *configMap {
	cm := &configMap{t: t, dir: filepath.Join(t.TempDir(), "config")}
	if err := os.Mkdir(cm.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cm.update(data)
	return cm
}

func (cm *configMap) update(data map[string]string) {
	t := cm.t
	cm.gen++
	ts := "..2026_11_25_10_00_0" + string(rune('0'+cm.gen)) + ".12345678" + string(rune('0'+cm.gen))
	if err := os.Mkdir(filepath.Join(cm.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		write(t, filepath.Join(cm.dir, ts, k), v)
	}
	tmp := filepath.Join(cm.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cm.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for k := range data {
		link := filepath.Join(cm.dir, k)
		if _, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cm.cur != "" {
		if err := os.RemoveAll(filepath.Join(cm.dir, cm.cur)); err != nil {
			t.Fatal(err)
		}
	}
	cm.cur = ts
}

func TestConfigMapDirectory(t *testing.T) {
	cm := newConfigMap(t, map[string]string{"app.yaml": "a: 1\n", "log.yaml": "level: info\n"})
	before := hashOf(t, cm.dir)
	hn := start(t, []string{cm.dir}, Options{Debounce: testDebounce}, hooks{})

	cm.update(map[string]string{"app.yaml": "a: 2\n", "log.yaml": "level: info\n"})
	after := hashOf(t, cm.dir)
	if after == before {
		t.Fatal("hash did not change through ..data")
	}
	hn.expectChange(after)
	// Barrier: exactly one change for the update above, then exactly this one.
	cm.update(map[string]string{"app.yaml": "a: 3\n", "log.yaml": "level: info\n"})
	hn.expectChange(hashOf(t, cm.dir))
	// An update with identical data (new timestamped dir, same content) is not a change.
	ts := time.Now()
	cm.update(map[string]string{"app.yaml": "a: 3\n", "log.yaml": "level: info\n"})
	hn.expectNoChangeAfter(ts)
	cm.update(map[string]string{"app.yaml": "a: 4\n", "log.yaml": "level: debug\n"})
	hn.expectChange(hashOf(t, cm.dir))
}

func TestConfigMapKeyFile(t *testing.T) {
	cm := newConfigMap(t, map[string]string{"app.yaml": "a: 1\n", "other": "x"})
	key := filepath.Join(cm.dir, "app.yaml")
	hn := start(t, []string{key}, Options{Debounce: testDebounce}, hooks{})

	cm.update(map[string]string{"app.yaml": "a: 2\n", "other": "x"})
	hn.expectChange(hashOf(t, key))
	// Only the watched key counts: changing the other key is not a change of this path.
	ts := time.Now()
	cm.update(map[string]string{"app.yaml": "a: 2\n", "other": "y"})
	hn.expectNoChangeAfter(ts)
	cm.update(map[string]string{"app.yaml": "a: 3\n", "other": "y"})
	hn.expectChange(hashOf(t, key))
}

func TestCreateAndDelete(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "later.conf")
	sub := filepath.Join(dir, "later.d")
	hn := start(t, []string{f, sub}, Options{Debounce: testDebounce}, hooks{})

	writeAtomic(t, f, "x")
	hn.expectChange(hashOf(t, f, sub))
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	hn.expectChange(hashOf(t, f, sub))
	// Creating a watched directory, even empty, is a change; files appearing in it are too.
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	hn.expectChange(hashOf(t, f, sub))
	writeAtomic(t, filepath.Join(sub, "a.conf"), "a")
	hn.expectChange(hashOf(t, f, sub))
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	hn.expectChange(hashOf(t, f, sub))
}

func TestNestedDirectories(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub", "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "sub", "deep", "f"), "1")
	hn := start(t, []string{dir}, Options{Debounce: testDebounce}, hooks{})

	// In-place write two levels down: only seen if subdirectories are watched too.
	write(t, filepath.Join(dir, "sub", "deep", "f"), "2")
	hn.expectChange(hashOf(t, dir))
	// A directory created after start gets a watch of its own, even while it is empty (an
	// empty directory is not content, so this is not a change).
	ts := time.Now()
	if err := os.Mkdir(filepath.Join(dir, "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	hn.expectNoChangeAfter(ts)
	write(t, filepath.Join(dir, "new", "g"), "1")
	hn.expectChange(hashOf(t, dir))
	write(t, filepath.Join(dir, "new", "g"), "2")
	hn.expectChange(hashOf(t, dir))
}

func TestChangeWhileAddingWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a")
	newDir := filepath.Join(dir, "new")
	g := filepath.Join(newDir, "g")
	final := make(chan digest, 1)
	// Runs on the watcher goroutine after the hash that first sees newDir and before newDir is
	// watched: this write produces no event anywhere the watcher listens, so only re-hashing
	// after adding the watch can see it.
	beforeSync := func(dirs map[string]struct{}) {
		if _, ok := dirs[newDir]; ok && len(final) == 0 {
			if err := os.WriteFile(g, []byte("2"), 0o644); err != nil {
				t.Error(err)
			}
			s, _ := hashPaths([]string{dir}, passConfig{lim: defaultLimits})
			final <- s.sum
		}
	}
	hn := start(t, []string{dir}, Options{Debounce: testDebounce}, hooks{beforeSync: beforeSync})

	if err := os.Mkdir(newDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, g, "1")
	select {
	case want := <-final:
		// The reported content must include the write made in the window, not stop at "1".
		hn.expectChange(want)
	case <-time.After(deadline):
		t.Fatal("watcher never hashed the new directory")
	}
}

func TestSymlinkSwapOutsideWatchedDir(t *testing.T) {
	// The "current -> v2" release layout: the watched name's directory is itself a symlink,
	// swapped atomically, one level above anything named in BATON_WATCH.
	base := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		if err := os.Mkdir(filepath.Join(base, v), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(base, v, "app.conf"), v)
	}
	if err := os.Symlink("v1", filepath.Join(base, "current")); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(base, "current", "app.conf")
	hn := start(t, []string{f}, Options{Debounce: testDebounce}, hooks{})

	if err := os.Symlink("v2", filepath.Join(base, "current.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(base, "current.tmp"), filepath.Join(base, "current")); err != nil {
		t.Fatal(err)
	}
	hn.expectChange(hashOf(t, f))
	// The new target directory is watched now.
	write(t, filepath.Join(base, "v2", "app.conf"), "v2 edited")
	hn.expectChange(hashOf(t, f))
}

func TestPolling(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	write(t, f, "v1")
	hn := start(t, []string{dir}, Options{Debounce: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond, ForcePoll: true}, hooks{})
	if hn.w.fs != nil {
		t.Fatal("ForcePoll must not use inotify")
	}

	ts := touch(t, f)
	hn.expectNoChangeAfter(ts)
	writeAtomic(t, f, "v2")
	hn.expectChange(hashOf(t, dir))
	writeAtomic(t, f, "v3")
	hn.expectChange(hashOf(t, dir))
}

func expectFallbackError(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case err := <-w.Errors():
		if !strings.Contains(err.Error(), "falling back to polling") {
			t.Fatalf("unexpected error %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("fallback not reported on Errors()")
	}
}

func TestFallbackWhenInotifyUnavailable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	write(t, f, "v1")
	noInotify := func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }
	hn := start(t, []string{f}, Options{Debounce: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond},
		hooks{newFS: noInotify})
	expectFallbackError(t, hn.w)

	writeAtomic(t, f, "v2")
	hn.expectChange(hashOf(t, f))
}

func TestFallbackWhenAddFails(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	write(t, f, "v1")
	// A closed fsnotify watcher fails every Add, like one that hit max_user_watches.
	brokenAdd := func() (*fsnotify.Watcher, error) {
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			return nil, err
		}
		fw.Close()
		return fw, nil
	}
	hn := start(t, []string{f}, Options{Debounce: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond},
		hooks{newFS: brokenAdd})
	expectFallbackError(t, hn.w)

	writeAtomic(t, f, "v2")
	hn.expectChange(hashOf(t, f))
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", "app.conf")
	_, err := New([]string{filepath.Join(dir, "ok.conf"), missing}, Options{})
	// Errors name a path by its place in the list and at most its first
	// 16 characters: BATON_* values can be secrets.
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "path 2 \""+missing[:16]+"…\"") || strings.Contains(err.Error(), missing) {
		t.Fatalf("New with a missing parent: %v; want an error naming path 2 by its first 16 characters", err)
	}
	write(t, filepath.Join(dir, "file"), "")
	under := filepath.Join(dir, "file", "app.conf")
	if _, err := New([]string{under}, Options{}); err == nil || !strings.Contains(err.Error(), "path 1 ") || strings.Contains(err.Error(), under) {
		t.Fatalf("New under a regular file: %v; want an error naming path 1, clipped", err)
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("New without paths must fail")
	}
	if _, err := New([]string{""}, Options{}); err == nil {
		t.Fatal("New with an empty path must fail")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	goroutines := func() string {
		buf := make([]byte, 1<<20)
		return string(buf[:runtime.Stack(buf, true)])
	}
	// Close does not wait, but the watcher goroutine and fsnotify's reader must end soon after
	// it, so neither may be left. (Counting goroutines instead would be racy: the testing
	// package's own come and go.)
	for _, opt := range []Options{
		{Debounce: time.Millisecond},
		{Debounce: time.Millisecond, PollInterval: time.Millisecond, ForcePoll: true},
	} {
		ours := []string{"watch.(*Watcher).run"}
		if !opt.ForcePoll {
			ours = append(ours, "fsnotify.(*inotify).readEvents")
		}
		dir := t.TempDir()
		w, err := New([]string{dir}, opt)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close() // only matters if the test fails early
		// A delivered change proves both goroutines have run, so the stack check below can
		// see them at all.
		write(t, filepath.Join(dir, "f"), "x")
		select {
		case <-w.Changes():
		case <-time.After(deadline):
			t.Fatal("no change reported")
		}
		for _, fn := range ours {
			if !strings.Contains(goroutines(), fn) {
				t.Fatalf("%s not found while the watcher runs", fn)
			}
		}
		write(t, filepath.Join(dir, "f"), "y") // something in flight while closing
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		// Close returns before the watcher goroutine has seen the stop, and
		// fsnotify's reader signals its Close as done before its last deferred
		// closes (of its Events and Errors channels) have run (1 run in 8 under
		// -race). So each goroutine must be gone soon, not at once.
		for _, fn := range ours {
			end := time.Now().Add(deadline)
			for stacks := goroutines(); strings.Contains(stacks, fn); stacks = goroutines() {
				if time.Now().After(end) {
					t.Fatalf("%s still running %v after Close:\n%s", fn, deadline, stacks)
				}
				runtime.Gosched()
			}
		}
	}
}

func TestHashFollowsSymlinksSafely(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "f"), "x")
	// None of these may hang or crash the hash: a loop back to an ancestor, a self-loop, a
	// dangling link, a FIFO without a writer.
	for _, l := range [][2]string{{".", "loop"}, {"self", "self"}, {"missing", "dangling"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo", filepath.Join(dir, "tofifo")); err != nil {
		t.Fatal(err)
	}
	s, ok := hashPaths([]string{dir}, passConfig{lim: defaultLimits})
	if !ok {
		t.Fatal("hash stopped")
	}
	if len(s.errs) != 1 || !errors.Is(s.errs[0], syscall.ELOOP) {
		t.Fatalf("errors = %v, want one ELOOP for the self-loop", s.errs)
	}
	// The dangling link does not count, and becomes content when its target appears.
	write(t, filepath.Join(dir, "missing"), "m")
	s2, _ := hashPaths([]string{dir}, passConfig{lim: defaultLimits})
	if s2.sum == s.sum {
		t.Fatal("target of a dangling link appeared but hash did not change")
	}
}

// TestHashStaysInsideTree: links that lead out of a watched directory, or out of a watched
// file's directory, are not followed, whether absolute, relative or through a chain of links,
// so what they point to is never read; links inside are.
func TestHashStaysInsideTree(t *testing.T) {
	base := t.TempDir()
	dir, out := filepath.Join(base, "conf"), filepath.Join(base, "out")
	for _, d := range []string{dir, out, filepath.Join(dir, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(out, "secret")
	write(t, secret, "s1")
	write(t, filepath.Join(dir, "app.conf"), "a")
	write(t, filepath.Join(dir, "sub", "inner"), "i1")
	for _, l := range [][2]string{
		{secret, "abs"},                     // absolute, out
		{"../out/secret", "rel"},            // relative, out
		{"hop", "chain"},                    // in, then out
		{"../out/secret", "hop"},            //
		{"sub/../../conf/app.conf", "back"}, // out on the way, even though it comes back
		{"../out", "outdir"},                // a directory out
		{"sub/inner", "in"},                 // inside: followed
	} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(dir, "key")
	if err := os.Symlink(secret, key); err != nil {
		t.Fatal(err)
	}
	before := hashOf(t, dir)
	beforeKey := hashOf(t, key)
	write(t, secret, "s2")
	if hashOf(t, dir) != before {
		t.Error("a file outside the watched directory was read through a link")
	}
	if hashOf(t, key) != beforeKey {
		t.Error("a watched name that links out of its directory was followed")
	}
	write(t, filepath.Join(dir, "sub", "inner"), "i2")
	if hashOf(t, dir) == before {
		t.Error("a link inside the watched directory was not followed")
	}
}

// TestHashBounds: a file over the per-file bound is hashed by size, modification time and its
// first bytes; files past the per-pass bound by size and modification time; each costs one
// short note; files on kernel pseudo-filesystems are not read.
func TestHashBounds(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "a-big")
	write(t, big, strings.Repeat("x", 3000))
	for _, n := range []string{"b", "c", "d", "e", "f"} {
		write(t, filepath.Join(dir, n), strings.Repeat(n, 500))
	}
	lim := limits{fileBytes: 1000, passBytes: 2500, passTime: deadline, entries: 100}
	hash := func() snapshot {
		t.Helper()
		s, ok := hashPaths([]string{dir}, passConfig{lim: lim})
		if !ok || s.incomplete != nil {
			t.Fatalf("pass stopped: %v", s.incomplete)
		}
		return s
	}
	s := hash()
	var notes []string
	for _, err := range s.errs {
		notes = append(notes, err.Error())
	}
	if len(notes) != 2 || !strings.Contains(notes[0], `larger than 1000 bytes`) ||
		!strings.Contains(notes[1], `more than 2500 bytes to read in one pass`) || !strings.Contains(notes[1], `(2, the first "e")`) {
		t.Fatalf("notes %q: want one for the large file and one for the two files past the pass budget", notes)
	}
	// Past the first 1000 bytes of the large file, only its size and time count.
	mtime := time.Now().Add(-time.Hour)
	os.Chtimes(big, mtime, mtime)
	s = hash()
	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("y"), 2000)
	f.Close()
	os.Chtimes(big, mtime, mtime)
	if hash().sum != s.sum {
		t.Error("bytes past the per-file bound were read")
	}
	if touch(t, big); hash().sum == s.sum {
		t.Error("a large file's new modification time is no change")
	}
	s = hash()
	if touch(t, filepath.Join(dir, "b")); hash().sum != s.sum {
		t.Error("a touch of a small file is a change")
	}
	write(t, filepath.Join(dir, "f"), strings.Repeat("g", 500))
	if hash().sum == s.sum {
		t.Error("an edit of a file past the pass budget is no change")
	}

	for _, p := range []string{"/proc/self/pagemap", "/proc/self"} {
		start := time.Now()
		s, _ := hashPaths([]string{p}, passConfig{lim: defaultLimits})
		if el := time.Since(start); len(s.errs) != 1 || !strings.Contains(s.errs[0].Error(), "pseudo-filesystem") || el > time.Second {
			t.Errorf("%s: %v in %v, want one note that it is not read", p, s.errs, el)
		}
	}
	// A missing watched name too long for the kernel is just absent.
	long := filepath.Join(dir, strings.Repeat("m", 64<<10))
	if s, _ := hashPaths([]string{long}, passConfig{lim: defaultLimits}); len(s.errs) != 0 {
		t.Errorf("a missing path with a long name: %.200v", s.errs)
	}
}

// TestPassTimeBound: a pass over its time is abandoned; it decides nothing (no change, one
// error saying so). (TestNewDoesNotWaitForBaseline and TestCloseDoesNotWait check that New and
// Close do not wait for a pass.)
func TestPassTimeBound(t *testing.T) {
	dir := t.TempDir()
	for i := range 20 {
		write(t, filepath.Join(dir, fmt.Sprint("f", i)), "x")
	}
	// Each read of a slow disk takes 20 ms of the pass's clock; a pass may take 100 ms. The
	// clock is the test's own, so the 20 files' reads are over the bound whatever the machine.
	var late atomic.Int64
	slow := hooks{lim: limits{passTime: 100 * time.Millisecond},
		beforeRead: func(string) { late.Add(int64(20 * time.Millisecond)) },
		now:        func() time.Time { return time.Now().Add(time.Duration(late.Load())) }}
	hn := launch(t, []string{dir}, Options{Debounce: testDebounce}, slow)
	select {
	case err := <-hn.w.Errors():
		if !strings.Contains(err.Error(), "abandoned") {
			t.Errorf("error %q, want the abandoned pass", err)
		}
	case <-time.After(deadline):
		t.Fatal("abandoned pass not reported")
	}
	select {
	case r := <-hn.results:
		t.Fatalf("an abandoned pass was compared (changed %v)", r.changed)
	default:
	}
}
