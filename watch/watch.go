// Package watch owns BATON_WATCH: it decides when the content of a set of files or directories
// has really changed, so that the supervisor can swap to a new worker generation.
//
// It owns the whole question "did the content change?" and nothing else: it does not reload,
// log, or know about workers. It delivers one notification per real change:
//
//   - Filesystem events (inotify via fsnotify) only trigger a re-hash; the decision is made by
//     comparing a content hash (file names + contents, following symlinks that stay inside the
//     watched trees), so a touch, a chmod or a rewrite with identical bytes is not a change.
//   - Whoever can write in a watched directory (often a worker) cannot make the watcher read
//     without end: each file and each pass is bounded in bytes and time (limits), passes take at
//     most a quarter of a CPU (dutyFactor), and New and Close never wait on a hash: the
//     baseline is taken on the watcher goroutine (baseline.go says how a change made meanwhile
//     is still reported), and Close only tells that goroutine to stop.
//   - Events are debounced: a burst of events (an editor's save, a Kubernetes ConfigMap update)
//     is hashed once after the burst is quiet.
//   - Watches sit on directories, never on files: the parent of a watched file, the watched
//     directory and its subdirectories, every directory in which a symlink on the way was read
//     (`..data` of a ConfigMap, a `current -> v2` link). An atomic rename-over or a symlink swap
//     replaces the inode, which a watch on the file itself would lose.
//   - If inotify cannot be used (instance or watch limits, unsupported filesystem) or ForcePoll
//     is set, it re-hashes every PollInterval instead.
package watch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/baton-init/baton/internal/clip"
	"github.com/fsnotify/fsnotify"
)

const (
	// DefaultDebounce is used when Options.Debounce is zero. Long enough to cover an editor's
	// write+rename or a kubelet ConfigMap update (a few ms), short enough that a reload feels
	// immediate.
	DefaultDebounce = 250 * time.Millisecond
	// DefaultPollInterval is used when Options.PollInterval is zero. Polling re-reads every
	// watched file, so it should not be too eager; ConfigMap propagation itself takes seconds
	// to a minute, so 2s adds little.
	DefaultPollInterval = 2 * time.Second

	// maxWaitFactor caps the debounce: when events never stop (a log file written continuously
	// next to the watched config), content is still re-hashed every maxWaitFactor*Debounce
	// instead of never.
	maxWaitFactor = 4
	// resyncRounds bounds how often a re-hash is repeated at once because new directories had
	// to be watched; see rehashWatching.
	resyncRounds = 4
	// errorBuffer is the capacity of the Errors channel; further errors are dropped.
	errorBuffer = 16
	// dutyFactor spaces passes: after a pass that took d, the next starts d*dutyFactor later at
	// the earliest, so hashing takes at most 1/(1+dutyFactor) of a CPU whatever the events.
	dutyFactor = 3
)

// Options tunes a Watcher. The zero value is usable.
type Options struct {
	// Debounce is the quiet period after the last filesystem event before content is
	// re-hashed. Zero means DefaultDebounce. In polling mode a change must also be stable for
	// Debounce before it is reported, so a file caught half-written is not reported twice.
	Debounce time.Duration
	// PollInterval is how often content is re-hashed when inotify is unavailable or ForcePoll
	// is set. Zero means DefaultPollInterval. The fallback is always available: a watcher that
	// silently stops watching would be worse than one that polls.
	PollInterval time.Duration
	// ForcePoll skips inotify entirely, for filesystems where inotify does not see changes
	// made elsewhere (NFS, some FUSE / 9p / virtiofs host mounts).
	ForcePoll bool
}

// hooks lets the tests observe and fault-inject the watcher; the zero value is production.
type hooks struct {
	// newFS replaces fsnotify.NewWatcher.
	newFS func() (*fsnotify.Watcher, error)
	// rehashed is called from the watcher goroutine after every comparison of a fresh hash
	// with the last reported one, and after the baseline (changed if it was fresh); start is
	// when the hash began, changed whether it was reported. It must not block.
	rehashed func(start time.Time, sum digest, changed bool)
	// beforeSync is called between hashing and adjusting the watches, the window in which
	// a change in a not-yet-watched directory would be missed.
	beforeSync func(dirs map[string]struct{})
	// lim replaces defaultLimits field by field where non-zero.
	lim limits
	// beforeRead is called before a file's content is read.
	beforeRead func(rel string)
	// now replaces time.Now for a pass's time bound.
	now func() time.Time
}

// Watcher reports content changes of a set of files/directories.
//
// All filesystem work happens on one goroutine started by New, which owns the last group of
// fields; Close only tells it to stop.
type Watcher struct {
	paths    []string // absolute and clean
	debounce time.Duration
	maxWait  time.Duration
	poll     time.Duration
	hooks    hooks
	lim      limits

	t0        time.Time // a change at or after t0 may be unknown to the worker (baseline.go)
	changes   chan struct{}
	errs      chan error
	stop      chan struct{}
	done      chan struct{} // closed when the goroutine has ended (tests)
	closeOnce sync.Once

	// Owned by the run goroutine (or by New before it starts).
	fs       *fsnotify.Watcher // nil when polling
	ids      map[string]fileID // identity of each watched directory when its watch was added
	sum      digest            // hash of the content last reported (or the baseline)
	haveSum  bool              // sum is set: false until a pass completed
	next     time.Time         // no pass starts before (dutyFactor)
	lastErrs map[string]bool   // errors reported by the previous hash, to report each once
}

// New starts watching paths with opt (its Debounce, PollInterval and ForcePoll; zero fields mean
// DefaultDebounce and DefaultPollInterval; the polling fallback is always enabled). Errors name
// the path.
//
// Relative paths are taken relative to the current directory. A watched path need not exist
// (its creation is a change), but its parent directory must: a missing parent at startup is
// almost always a typo in BATON_WATCH, and failing loudly beats watching nothing. (At run time
// the watcher copes with the parent disappearing and coming back.)
//
// The initial content is the baseline: it is not reported as a change, unless it changed after
// New was called (see baseline.go). New does not wait for it: the first pass runs on the watcher
// goroutine; if it is abandoned, the first one that completes becomes the baseline. New waits
// only for the kernel's coarse clock to pass the time it was called (about a tick: 1 to 10 ms by
// CONFIG_HZ), to tell changes made before it from changes made after it.
func New(paths []string, opt Options) (*Watcher, error) {
	return newWatcher(paths, opt, hooks{})
}

func newWatcher(paths []string, opt Options, h hooks) (*Watcher, error) {
	called := time.Now()
	if len(paths) == 0 {
		return nil, errors.New("watch: no paths given")
	}
	abs := make([]string, 0, len(paths))
	for i, p := range paths {
		if p == "" {
			return nil, errors.New("watch: empty path")
		}
		// Errors name the path by its place in the list and its first
		// characters only (clip).
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("watch path %d %q: %w", i+1, clip.Value(p), bare(err))
		}
		parent := filepath.Dir(a)
		fi, err := os.Stat(parent)
		if err != nil {
			return nil, fmt.Errorf("watch path %d %q: parent directory: %w", i+1, clip.Value(p), bare(err))
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("watch path %d %q: its parent is not a directory", i+1, clip.Value(p))
		}
		abs = append(abs, a)
	}
	w := &Watcher{
		paths:    abs,
		debounce: opt.Debounce,
		poll:     opt.PollInterval,
		hooks:    h,
		changes:  make(chan struct{}, 1),
		errs:     make(chan error, errorBuffer),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ids:      make(map[string]fileID),
	}
	if w.debounce <= 0 {
		w.debounce = DefaultDebounce
	}
	if w.poll <= 0 {
		w.poll = DefaultPollInterval
	}
	w.maxWait = maxWaitFactor * w.debounce
	w.lim = defaultLimits
	if h.lim.fileBytes > 0 {
		w.lim.fileBytes = h.lim.fileBytes
	}
	if h.lim.passBytes > 0 {
		w.lim.passBytes = h.lim.passBytes
	}
	if h.lim.passTime > 0 {
		w.lim.passTime = h.lim.passTime
	}
	if h.lim.entries > 0 {
		w.lim.entries = h.lim.entries
	}
	if h.newFS == nil {
		w.hooks.newFS = fsnotify.NewWatcher
	}

	if !opt.ForcePoll {
		fw, err := w.hooks.newFS()
		if err != nil {
			w.fallback(fmt.Errorf("watch: inotify unavailable: %w", err))
		} else {
			w.fs = fw
		}
	}
	w.t0 = coarseAfter(called)
	go w.run()
	return w, nil
}

// Changes delivers one value per real content change (after debounce + hash comparison).
//
// The channel has a buffer of one and is never closed: if the receiver falls behind, further
// changes coalesce into the pending value (the receiver only needs to know "something changed
// since you last looked"), and a select on it after Close simply never fires.
func (w *Watcher) Changes() <-chan struct{} { return w.changes }

// Errors is optional reporting (never blocks the watcher; drop when full).
//
// It carries unreadable files (each distinct error once, until it goes away), inotify errors
// and the switch to polling. The channel is never closed.
func (w *Watcher) Errors() <-chan error { return w.errs }

// Close tells the watcher to stop and returns at once: it never waits on a hash. The watcher
// goroutine then ends, closing the inotify instance: at once if it is idle, at the next
// directory entry or read chunk of a pass in progress (which decides nothing), or when a system
// call stuck on a hung network filesystem returns. Nothing is reported on Changes or Errors
// once it has seen the stop. Close returns nil (it is an io.Closer) and may be called more
// than once.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() { close(w.stop) })
	return nil
}

// hash runs one pass over the watched paths and spaces the next one (dutyFactor). Until a
// baseline is set, the pass also notes whether the content is fresh (baseline.go).
func (w *Watcher) hash() (snapshot, bool) {
	start := time.Now()
	pc := passConfig{stop: w.stop, lim: w.lim, beforeRead: w.hooks.beforeRead, now: w.hooks.now}
	if !w.haveSum {
		pc.since = w.t0
	}
	s, ok := hashPaths(w.paths, pc)
	end := time.Now()
	w.next = end.Add(dutyFactor * end.Sub(start))
	return s, ok
}

// spaced is d, or longer if the next pass may not start that soon.
func (w *Watcher) spaced(d time.Duration) time.Duration {
	return max(d, time.Until(w.next))
}

// run is the watcher goroutine: it takes the baseline, then turns filesystem events and poll
// ticks into hash comparisons.
func (w *Watcher) run() {
	defer close(w.done)
	defer func() {
		if w.fs != nil {
			_ = w.fs.Close()
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		pending   bool      // timer armed
		first     time.Time // first event of the current burst, for maxWait
		candidate digest    // polling: the new hash that must still be there when timer fires
		ticker    *time.Ticker
		tickC     <-chan time.Time
	)
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	// kick (re)arms the debounce timer for an event.
	kick := func() {
		now := time.Now()
		if !pending {
			pending = true
			first = now
		}
		d := w.debounce
		if left := first.Add(w.maxWait).Sub(now); left < d {
			d = max(left, 0)
		}
		timer.Reset(w.spaced(d))
	}
	// ensurePolling starts the ticker once the inotify instance is gone.
	ensurePolling := func() {
		if w.fs == nil && ticker == nil {
			ticker = time.NewTicker(w.poll)
			tickC = ticker.C
			pending = false
			timer.Stop()
		}
	}

	// The baseline. Its watches are in place before its last pass (rehashWatching), so a
	// change after that pass is an event, and one before it is in the ctimes it looked at.
	start := time.Now()
	var (
		s     snapshot
		again bool
		ok    bool
	)
	if w.fs != nil {
		s, again, ok = w.rehashWatching()
	} else {
		s, ok = w.hash()
	}
	if !ok {
		return // stopped
	}
	w.reportErrs(s.errs)
	if s.incomplete == nil {
		w.compare(start, s)
	}
	ensurePolling()
	if again && w.fs != nil {
		kick()
	}

	for {
		var (
			evC  <-chan fsnotify.Event
			errC <-chan error
		)
		if w.fs != nil {
			evC, errC = w.fs.Events, w.fs.Errors
		}
		select {
		case <-w.stop:
			return

		case _, ok := <-evC:
			if !ok {
				w.fallback(errors.New("watch: inotify stopped delivering events"))
				ensurePolling()
				continue
			}
			// Every event in a watched directory is a reason to look, whatever its name: in a
			// ConfigMap update the watched name `key` never changes, only `..data` does. The
			// hash comparison filters out the irrelevant ones.
			kick()

		case err, ok := <-errC:
			if !ok {
				w.fallback(errors.New("watch: inotify stopped delivering events"))
				ensurePolling()
				continue
			}
			// On a queue overflow events were lost, so look anyway; other errors may have
			// hidden events too, and looking is cheap.
			w.report(fmt.Errorf("watch: inotify: %w", err))
			kick()

		case <-timer.C:
			if w.fs != nil {
				pending = false
				start := time.Now()
				s, again, ok := w.rehashWatching()
				if !ok {
					continue // being closed: the next select sees stop and cleans up
				}
				w.reportErrs(s.errs)
				if s.incomplete == nil {
					w.compare(start, s)
				}
				if w.fs == nil {
					ensurePolling()
				} else if again {
					kick()
				}
				continue
			}
			// Polling: report the candidate only if the content stayed the same for a whole
			// debounce period, otherwise keep waiting for it to settle.
			start := time.Now()
			s, ok := w.hash()
			if !ok {
				continue
			}
			w.reportErrs(s.errs)
			switch {
			case s.incomplete != nil: // decides nothing; the next tick looks again
				pending = false
			case !w.haveSum || s.sum == w.sum: // the baseline, or changed back
				pending = false
				w.compare(start, s)
			case s.sum == candidate:
				pending = false
				w.compare(start, s)
			default:
				candidate = s.sum
				timer.Reset(w.spaced(w.debounce))
				w.rehashed(start, s.sum, false)
			}

		case <-tickC:
			if pending || time.Now().Before(w.next) {
				continue // a change is settling (the timer will look), or passes are spaced
			}
			start := time.Now()
			s, ok := w.hash()
			if !ok {
				continue
			}
			w.reportErrs(s.errs)
			switch {
			case s.incomplete != nil:
				continue
			case !w.haveSum:
				w.compare(start, s)
				continue
			case s.sum != w.sum:
				candidate = s.sum
				pending = true
				timer.Reset(w.spaced(w.debounce))
			}
			w.rehashed(start, s.sum, false)
		}
	}
}

// compare reports a change if the sum of s differs from the last reported content. The first
// complete pass is the baseline, reported as a change only if it is fresh: the content may have
// changed since the worker read it (baseline.go).
func (w *Watcher) compare(start time.Time, s snapshot) {
	var changed bool
	if !w.haveSum {
		w.haveSum, changed = true, s.fresh
	} else {
		changed = s.sum != w.sum
	}
	w.sum = s.sum
	if changed {
		select {
		case w.changes <- struct{}{}:
		default: // one is already pending; the receiver will see the latest content anyway
		}
	}
	w.rehashed(start, s.sum, changed)
}

func (w *Watcher) rehashed(start time.Time, sum digest, changed bool) {
	if w.hooks.rehashed != nil {
		w.hooks.rehashed(start, sum, changed)
	}
}

// fallback switches to polling for good: inotify limits do not go away by themselves, and
// flapping between modes would only add ways to miss a change.
func (w *Watcher) fallback(reason error) {
	if w.fs != nil {
		_ = w.fs.Close()
		w.fs = nil
	}
	w.report(fmt.Errorf("%w; falling back to polling every %s", reason, w.poll))
}

// reportErrs reports the errors of one hash that were not already reported by the previous one,
// so a permanently unreadable file is reported once, not on every event.
func (w *Watcher) reportErrs(errs []error) {
	cur := make(map[string]bool, len(errs))
	for _, err := range errs {
		msg := err.Error()
		cur[msg] = true
		if !w.lastErrs[msg] {
			w.report(fmt.Errorf("watch: %w", err))
		}
	}
	w.lastErrs = cur
}

// report never blocks: Errors is optional.
func (w *Watcher) report(err error) {
	select {
	case w.errs <- err:
	default:
	}
}
