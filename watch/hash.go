package watch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/baton-init/baton/internal/clip"
)

// limits bound one hash pass, so that whoever can write in a watched directory (a worker, often)
// cannot make baton read without end. See docs/configuration.md.
type limits struct {
	// fileBytes is how much of one file is read. A longer file is hashed by its size, its
	// modification time and its first fileBytes.
	fileBytes int64
	// passBytes is how much is read in one pass over all files. Files met once it is spent are
	// hashed by size and modification time only.
	passBytes int64
	// passTime bounds a pass's wall time, and entries the directory entries it looks at: a pass
	// over either is abandoned and decides nothing.
	passTime time.Duration
	entries  int
}

var defaultLimits = limits{fileBytes: 1 << 20, passBytes: 16 << 20, passTime: 2 * time.Second, entries: 100_000}

const (
	// readChunk is how much is read between two checks of the stop channel and the deadline.
	readChunk = 64 << 10
	// maxErrs bounds the errors one pass keeps for reporting; the rest are counted.
	maxErrs = 8
)

// digest is a content hash: FNV-1a, 128 bits. It detects edits, it is not
// a security boundary (whoever can write the watched files can trigger a
// reload anyway), and unlike crypto/sha256 it costs baton nothing at start.
type digest = [16]byte

func newHash() hash.Hash { return fnv.New128a() }

// snapshot is the result of hashing every watched path once.
type snapshot struct {
	// sum covers names and contents of every regular file reachable from the watched paths,
	// plus the presence/kind of each watched path itself. Nothing else (no mtimes, modes or
	// inode numbers, except for files too large to read whole): a touch must not look like a
	// change.
	sum digest
	// dirs are the symlink-free directories whose entries the sum depended on: where an inotify
	// watch must sit so that any change to sum produces an event.
	dirs map[string]struct{}
	// errs are to be reported: the unexpected errors met (permission denied, I/O errors), which
	// are folded into sum as well, so an error that appears or goes away counts as a change; and
	// notes (links not followed, files too large, an abandoned pass), which are not.
	errs []error
	// incomplete is why the pass was abandoned (too long, too many entries), nil if it was not.
	// An abandoned pass's sum means nothing.
	incomplete error
	// fresh: something the pass looked at (a file it read, a directory in dirs) changed at or
	// after passConfig.since, so the content it saw may be newer than that time. See
	// baseline.go.
	fresh bool
}

// passConfig is what one pass needs besides the paths.
type passConfig struct {
	stop <-chan struct{} // closed: stop at once; may be nil
	lim  limits
	// beforeRead, if set, is called before a file's content is read (tests: a read that hangs).
	beforeRead func(rel string)
	// now, if set, replaces time.Now for the pass's time bound (tests: a slow disk whose reads
	// move a clock of the test's own).
	now func() time.Time
	// since, if set, asks whether anything changed at or after it (snapshot.fresh).
	since time.Time
}

func (pc passConfig) clock() time.Time {
	if pc.now != nil {
		return pc.now()
	}
	return time.Now()
}

// hasher walks the watched paths. It reads regular files only, inside the watched trees: links
// are followed while they stay inside (the key links of a ConfigMap, `..data`), never out of
// them, and nothing that is not a regular file or a directory is opened, so a FIFO or device in
// a watched directory cannot block it.
type hasher struct {
	passConfig
	h         hash.Hash
	dirs      map[string]struct{}
	errs      []error
	notes     []error
	dropped   int
	stopped   bool
	deadline  time.Time
	read      int64 // bytes read this pass
	entries   int
	ancestors map[fileID]bool
	buf       []byte
	// Of the current watched path: how errors name it, and the first entry of each kind of note.
	name            string
	outside, pseudo string
	big, stat       string
	nbig, nstat     int
	incomplete      error
	fresh           bool
}

// hashPaths hashes paths, which must be absolute and clean. It returns ok=false only if stop was
// closed while it ran.
func hashPaths(paths []string, pc passConfig) (snapshot, bool) {
	hs := &hasher{
		passConfig: pc,
		h:          newHash(),
		dirs:       make(map[string]struct{}),
		deadline:   pc.clock().Add(pc.lim.passTime),
		ancestors:  make(map[fileID]bool),
	}
	for i, p := range paths {
		hs.top(i, p)
		if hs.stopped {
			return snapshot{}, false
		}
		if hs.incomplete != nil {
			break
		}
	}
	var s snapshot
	hs.h.Sum(s.sum[:0])
	s.dirs = hs.dirs
	s.errs = hs.errs
	if hs.dropped > 0 {
		s.errs = append(s.errs, fmt.Errorf("and %d more errors", hs.dropped))
	}
	s.errs = append(s.errs, hs.notes...)
	if hs.incomplete != nil {
		s.incomplete = hs.incomplete
		s.errs = append(s.errs, hs.incomplete)
	} else {
		s.fresh = hs.sawDirs()
	}
	return s, true
}

// sawDirs reports whether the pass is fresh, looking last at the directories it depended on:
// a change of their entries that the pass saw (a file created, renamed or removed) happened
// before this lstat, so it is in the directory's ctime. One that vanished changed during the
// pass.
func (hs *hasher) sawDirs() bool {
	if hs.since.IsZero() {
		return false
	}
	for dir := range hs.dirs {
		if hs.fresh {
			break
		}
		fi, err := os.Lstat(dir)
		switch {
		case err == nil:
			hs.saw(fi)
		case absent(err):
			hs.fresh = true
		}
	}
	return hs.fresh
}

// record writes one NUL-framed record; names cannot contain NUL, so records cannot be confused.
func (hs *hasher) record(kind, rel string, data []byte) {
	io.WriteString(hs.h, kind)
	hs.h.Write([]byte{0})
	io.WriteString(hs.h, rel)
	hs.h.Write([]byte{0})
	hs.h.Write(data)
}

// named names rel (an entry of the current watched path, "" for the path itself) in an error,
// clipped: names come from whoever writes in the watched directories.
func (hs *hasher) named(rel string, err error) error {
	if rel == "" {
		return fmt.Errorf("%s: %w", hs.name, err)
	}
	return fmt.Errorf("%s entry %q: %w", hs.name, clip.N(rel, 48), err)
}

// fail folds err into the hash (by its errno text only, so the same failure hashes the same
// every time) and keeps it for reporting.
func (hs *hasher) fail(rel string, err error) {
	err = bare(err)
	hs.record("error", rel, []byte(err.Error()))
	if len(hs.errs) < maxErrs {
		hs.errs = append(hs.errs, hs.named(rel, err))
	} else {
		hs.dropped++
	}
}

// halted reports whether the pass must end now: stop was closed (stopped), or the pass is
// over its time (incomplete).
func (hs *hasher) halted() bool {
	if hs.stopped || hs.incomplete != nil {
		return true
	}
	select {
	case <-hs.stop:
		hs.stopped = true
		return true
	default:
	}
	if hs.clock().After(hs.deadline) {
		hs.incomplete = fmt.Errorf("a pass took longer than %v and was abandoned: changes are not seen until one completes", hs.lim.passTime)
	}
	return hs.incomplete != nil
}

// top hashes one watched path. Unlike entries found inside a directory, a watched path that is
// missing is recorded as "absent", so that its creation and deletion are changes.
//
// The directories on the way to it are the operator's: links there are followed wherever they
// go (a `current -> releases/v2` swap). The path's own name may be a link only within its
// directory (a ConfigMap key through `..data`), and links inside a watched directory only
// within that directory.
func (hs *hasher) top(i int, p string) {
	hs.name = fmt.Sprintf("path %d %q", i+1, clip.Value(p))
	hs.outside, hs.pseudo, hs.big, hs.stat, hs.nbig, hs.nstat = "", "", "", "", 0, 0
	defer hs.topNotes()
	hs.record("path", p, nil)
	if hs.halted() {
		return
	}
	real, fi, err := resolve("/", filepath.Dir(p), "/", hs.dirs)
	if err == nil {
		if fi.IsDir() {
			real, fi, err = resolve(real, filepath.Base(p), real, hs.dirs)
		} else {
			err = &fs.PathError{Op: "resolve", Path: p, Err: syscall.ENOTDIR}
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, errOutside):
			hs.outside = "."
			hs.record("absent", "", nil)
		case absent(err):
			hs.record("absent", "", nil)
		default:
			hs.fail("", err)
		}
		return
	}
	// The parent is watched even for a directory: deleting, recreating or renaming something
	// over the directory itself is only visible there.
	hs.dirs[filepath.Dir(real)] = struct{}{}
	switch {
	case fi.IsDir():
		hs.record("dir", "", nil)
		hs.walk(real, "", fi, real)
	case fi.Mode().IsRegular():
		if hs.file(real, "", fi) {
			hs.record("absent", "", nil)
		}
	default:
		hs.record("other", "", []byte(fi.Mode().Type().String()))
	}
}

// topNotes turns what the current watched path's walk skipped into at most one note of each
// kind, so a directory full of them costs one log line each, not one a file.
func (hs *hasher) topNotes() {
	note := func(first string, n int, format string, args ...any) {
		if first == "" {
			return
		}
		msg := fmt.Sprintf(format, args...)
		switch {
		case first == ".":
		case n > 1:
			msg += fmt.Sprintf(" (%d, the first %q)", n, clip.N(first, 48))
		default:
			msg += fmt.Sprintf(" (%q)", clip.N(first, 48))
		}
		hs.notes = append(hs.notes, fmt.Errorf("%s: %s", hs.name, msg))
	}
	note(hs.outside, 0, "%v: not followed", errOutside)
	note(hs.pseudo, 0, "on a kernel pseudo-filesystem (proc, sysfs…): not read")
	note(hs.big, hs.nbig, "larger than %s: hashed by size, modification time and the first %s", size(hs.lim.fileBytes), size(hs.lim.fileBytes))
	note(hs.stat, hs.nstat, "more than %s to read in one pass: files past it hashed by size and modification time only", size(hs.lim.passBytes))
}

// walk hashes the regular files below the symlink-free directory dir, itself inside root (the
// watched directory). Only regular files count: creating an empty subdirectory, a socket or a
// FIFO is not a content change. fi is what lstat said of dir.
func (hs *hasher) walk(dir, rel string, fi fs.FileInfo, root string) {
	if id, ok := idOf(fi); ok {
		if hs.ancestors[id] {
			return // a symlink back to an ancestor: its files are already counted
		}
		hs.ancestors[id] = true
		defer delete(hs.ancestors, id)
	}
	hs.dirs[dir] = struct{}{}
	names, err := hs.readDir(dir, rel, fi)
	if err != nil {
		if !absent(err) && !errors.Is(err, errChanged) { // vanished or replaced: an event of its own
			hs.fail(rel, err)
		}
		return
	}
	for _, name := range names {
		if hs.halted() {
			return
		}
		// Kubernetes keeps the real files in `..<timestamp>` directories reached through the
		// `..data` symlink, and the top-level names are symlinks into `..data`. Counting the
		// `..` names would count every file twice (and the timestamped name itself would make
		// two updates with identical content differ). The top-level symlinks are still resolved
		// through `..data`, so a swap of `..data` changes the hash through them.
		if strings.HasPrefix(name, "..") {
			continue
		}
		crel := path.Join(rel, name)
		real, cfi, err := resolve(dir, name, root, hs.dirs)
		switch {
		case errors.Is(err, errOutside):
			if hs.outside == "" {
				hs.outside = crel
			}
		case err != nil:
			if !absent(err) { // absent: dangling symlink, e.g. a key removed from a ConfigMap
				hs.fail(crel, err)
			}
		case cfi.IsDir():
			hs.walk(real, crel, cfi, root)
		case cfi.Mode().IsRegular():
			hs.dirs[filepath.Dir(real)] = struct{}{}
			hs.file(real, crel, cfi)
		}
	}
}

// readDir returns the sorted names in the directory dir, which must still be the one lstat
// described as fi, so the hash is deterministic. It stops early (returning nil) when the pass
// must end.
func (hs *hasher) readDir(dir, rel string, fi fs.FileInfo) ([]string, error) {
	f, err := openVetted(dir, fi, syscall.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if pseudoFS(f) {
		if hs.pseudo == "" {
			hs.pseudo = orDot(rel)
		}
		return nil, nil
	}
	var names []string
	for !hs.halted() {
		batch, err := f.Readdirnames(1024)
		names = append(names, batch...)
		hs.entries += len(batch)
		if hs.entries > hs.lim.entries {
			hs.incomplete = fmt.Errorf("more than %d directory entries in one pass: abandoned, changes are not seen until one completes", hs.lim.entries)
			return nil, nil
		}
		if err == io.EOF {
			sort.Strings(names)
			return names, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// file records the name and content digest of a regular file, which lstat described as fi. It
// reports whether the file turned out to be missing (removed or replaced since), which the
// caller may record.
func (hs *hasher) file(real, rel string, fi fs.FileInfo) (missing bool) {
	hs.saw(fi) // a file that cannot be opened is hashed by this lstat
	f, err := openVetted(real, fi, 0)
	if err != nil {
		if absent(err) || errors.Is(err, errChanged) {
			return true
		}
		hs.fail(rel, err)
		return false
	}
	defer f.Close()
	// Once the file is read: a write that the read saw is in the ctime by then.
	defer func() {
		if !hs.since.IsZero() && !hs.fresh {
			if fi, err := f.Stat(); err == nil {
				hs.saw(fi)
			}
		}
	}()
	if pseudoFS(f) {
		if hs.pseudo == "" {
			hs.pseudo = orDot(rel)
		}
		return false
	}
	if fi, err = f.Stat(); err != nil {
		hs.fail(rel, err)
		return false
	}
	var meta [16]byte
	binary.LittleEndian.PutUint64(meta[:8], uint64(fi.Size()))
	binary.LittleEndian.PutUint64(meta[8:], uint64(fi.ModTime().UnixNano()))
	budget := min(hs.lim.fileBytes, hs.lim.passBytes-hs.read)
	if budget <= 0 {
		hs.nstat++
		if hs.stat == "" {
			hs.stat = orDot(rel)
		}
		hs.record("stat", rel, meta[:])
		return false
	}
	if hs.beforeRead != nil {
		hs.beforeRead(rel)
	}
	fh := newHash()
	n, more, err := hs.copy(fh, f, budget)
	hs.read += n
	if err != nil {
		hs.fail(rel, err)
		return false
	}
	if hs.halted() {
		return false
	}
	if !more {
		hs.record("file", rel, fh.Sum(nil))
		return false
	}
	if n == hs.lim.fileBytes {
		hs.nbig++
		if hs.big == "" {
			hs.big = orDot(rel)
		}
	} else {
		hs.nstat++
		if hs.stat == "" {
			hs.stat = orDot(rel)
		}
	}
	hs.record("large", rel, append(fh.Sum(nil), meta[:]...))
	return false
}

// copy writes at most limit bytes of f to w, checking between chunks whether the pass must
// end. more reports whether f had more than limit bytes.
func (hs *hasher) copy(w io.Writer, f *os.File, limit int64) (n int64, more bool, err error) {
	if hs.buf == nil {
		hs.buf = make([]byte, readChunk)
	}
	for !hs.halted() {
		// One byte past the limit tells whether there is more.
		want := min(int64(len(hs.buf)), limit+1-n)
		m, err := f.Read(hs.buf[:want])
		if int64(m) > limit-n {
			w.Write(hs.buf[:limit-n])
			return limit, true, nil
		}
		w.Write(hs.buf[:m])
		n += int64(m)
		if err == io.EOF {
			return n, false, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// size writes a byte count the way the documentation does: 1 MiB, 16 MiB.
func size(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
