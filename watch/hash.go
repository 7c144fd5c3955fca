package watch

import (
	"errors"
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
)

// maxSymlinks bounds symlink resolution like the kernel's ELOOP limit does, so a link cycle
// cannot hang the watcher.
const maxSymlinks = 40

// digest is a content hash: FNV-1a, 128 bits. It detects edits, it is not
// a security boundary (whoever can write the watched files can trigger a
// reload anyway), and unlike crypto/sha256 it costs baton nothing at start.
type digest = [16]byte

func newHash() hash.Hash { return fnv.New128a() }

// snapshot is the result of hashing every watched path once.
type snapshot struct {
	// sum covers names and contents of every regular file reachable from the watched paths,
	// plus the presence/kind of each watched path itself. Nothing else (no mtimes, modes or
	// inode numbers): a touch must not look like a change.
	sum digest
	// dirs are the symlink-free directories whose entries the sum depended on: where an inotify
	// watch must sit so that any change to sum produces an event.
	dirs map[string]struct{}
	// errs are the unexpected errors met (permission denied, I/O errors). They are folded into
	// sum as well, so an error that appears or goes away counts as a change.
	errs []error
}

// fileID identifies a directory across names, to stop a walk that comes back to an ancestor
// through a symlink.
type fileID struct{ dev, ino uint64 }

// hasher walks the watched paths. It reads files through the symlinks (ConfigMap keys are
// symlinks) but never opens anything that is not a regular file, so a FIFO or device in a
// watched directory cannot block it.
type hasher struct {
	h         hash.Hash
	dirs      map[string]struct{}
	errs      []error
	stop      <-chan struct{}
	stopped   bool
	ancestors map[fileID]bool
}

// hashPaths hashes paths, which must be absolute and clean. It returns ok=false only if stop was
// closed while it ran; stop may be nil.
func hashPaths(paths []string, stop <-chan struct{}) (snapshot, bool) {
	hs := &hasher{
		h:         newHash(),
		dirs:      make(map[string]struct{}),
		stop:      stop,
		ancestors: make(map[fileID]bool),
	}
	for _, p := range paths {
		hs.top(p)
		if hs.stopped {
			return snapshot{}, false
		}
	}
	var s snapshot
	hs.h.Sum(s.sum[:0])
	s.dirs = hs.dirs
	s.errs = hs.errs
	return s, true
}

// record writes one NUL-framed record; names cannot contain NUL, so records cannot be confused.
func (hs *hasher) record(kind, rel string, data []byte) {
	io.WriteString(hs.h, kind)
	hs.h.Write([]byte{0})
	io.WriteString(hs.h, rel)
	hs.h.Write([]byte{0})
	hs.h.Write(data)
}

// fail folds err into the hash (by its errno text only, so the same failure hashes the same
// every time) and keeps it for reporting.
func (hs *hasher) fail(rel string, err error) {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	hs.record("error", rel, []byte(msg))
	hs.errs = append(hs.errs, err)
}

func (hs *hasher) isStopped() bool {
	if hs.stopped {
		return true
	}
	select {
	case <-hs.stop:
		hs.stopped = true
	default:
	}
	return hs.stopped
}

// top hashes one watched path. Unlike entries found inside a directory, a watched path that is
// missing is recorded as "absent", so that its creation and deletion are changes.
func (hs *hasher) top(p string) {
	hs.record("path", p, nil)
	real, err := resolve("/", p, hs.dirs)
	if err != nil {
		if absent(err) {
			hs.record("absent", "", nil)
		} else {
			hs.fail("", err)
		}
		return
	}
	// The parent is watched even for a directory: deleting, recreating or renaming something
	// over the directory itself is only visible there.
	hs.dirs[filepath.Dir(real)] = struct{}{}
	fi, err := os.Stat(real)
	switch {
	case err != nil && absent(err):
		hs.record("absent", "", nil)
	case err != nil:
		hs.fail("", err)
	case fi.IsDir():
		hs.record("dir", "", nil)
		hs.walk(real, "", fi)
	case fi.Mode().IsRegular():
		if hs.file(real, "") {
			hs.record("absent", "", nil)
		}
	default:
		hs.record("other", "", []byte(fi.Mode().Type().String()))
	}
}

// walk hashes the regular files below the symlink-free directory dir. Only regular files count:
// creating an empty subdirectory, a socket or a FIFO is not a content change.
func (hs *hasher) walk(dir, rel string, fi fs.FileInfo) {
	if id, ok := idOf(fi); ok {
		if hs.ancestors[id] {
			return // a symlink back to an ancestor: its files are already counted
		}
		hs.ancestors[id] = true
		defer delete(hs.ancestors, id)
	}
	hs.dirs[dir] = struct{}{}
	entries, err := os.ReadDir(dir) // sorted by name, so the hash is deterministic
	if err != nil {
		if !absent(err) { // vanished while we walked: the removal is an event of its own
			hs.fail(rel, err)
		}
		return
	}
	for _, e := range entries {
		if hs.isStopped() {
			return
		}
		name := e.Name()
		// Kubernetes keeps the real files in `..<timestamp>` directories reached through the
		// `..data` symlink, and the top-level names are symlinks into `..data`. Counting the
		// `..` names would count every file twice (and the timestamped name itself would make
		// two updates with identical content differ). The top-level symlinks are still resolved
		// through `..data`, so a swap of `..data` changes the hash through them.
		if strings.HasPrefix(name, "..") {
			continue
		}
		crel := path.Join(rel, name)
		real, err := resolve(dir, name, hs.dirs)
		if err != nil {
			if !absent(err) { // absent: dangling symlink, e.g. a key removed from a ConfigMap
				hs.fail(crel, err)
			}
			continue
		}
		cfi, err := os.Stat(real)
		if err != nil {
			if !absent(err) {
				hs.fail(crel, err)
			}
			continue
		}
		switch {
		case cfi.IsDir():
			hs.walk(real, crel, cfi)
		case cfi.Mode().IsRegular():
			hs.dirs[filepath.Dir(real)] = struct{}{}
			hs.file(real, crel)
		}
	}
}

// file records the name and content digest of a regular file. It reports whether the file
// turned out to be missing (removed between stat and open), which the caller may record.
func (hs *hasher) file(real, rel string) (missing bool) {
	// O_NONBLOCK: if the file was swapped for a FIFO since we looked, open must not wait for a
	// writer; the Stat below then skips it.
	f, err := os.OpenFile(real, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if absent(err) {
			return true
		}
		hs.fail(rel, err)
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		hs.fail(rel, err)
		return false
	}
	if !fi.Mode().IsRegular() {
		return false
	}
	fh := newHash()
	if _, err := io.Copy(fh, f); err != nil {
		hs.fail(rel, err)
		return false
	}
	hs.record("file", rel, fh.Sum(nil))
	return false
}

// resolve follows every symlink in name, taken relative to the symlink-free directory base (or
// absolute), and returns the symlink-free path it designates. It adds to dirs every directory in
// which it read a symlink, and when resolution fails the deepest directory it reached: those are
// exactly the places where a change to what name designates shows up as an inotify event (a swap
// of `..data`, of a `current -> v2` link, or the creation of the missing component).
// filepath.EvalSymlinks cannot be used because it does not say where the links were.
func resolve(base, name string, dirs map[string]struct{}) (string, error) {
	cur := base
	if filepath.IsAbs(name) {
		cur = "/"
	}
	rest := name
	links := 0
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur has no symlinks, so lexical ".." is the real parent
			continue
		}
		next := filepath.Join(cur, comp)
		fi, err := os.Lstat(next)
		if err != nil {
			dirs[cur] = struct{}{}
			return next, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if !fi.IsDir() && strings.Trim(rest, "/") != "" {
				dirs[cur] = struct{}{}
				return next, &fs.PathError{Op: "lstat", Path: next + "/" + rest, Err: syscall.ENOTDIR}
			}
			cur = next
			continue
		}
		dirs[cur] = struct{}{}
		links++
		if links > maxSymlinks {
			return next, &fs.PathError{Op: "resolve", Path: next, Err: syscall.ELOOP}
		}
		target, err := os.Readlink(next)
		if err != nil {
			return next, err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		if rest == "" {
			rest = target
		} else {
			rest = target + "/" + rest
		}
	}
	return cur, nil
}

// absent reports whether err means "nothing is there": such paths hash as absent (or, inside a
// directory, are simply not listed) instead of being reported as errors.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func idOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}

// sortedDirs returns the keys of dirs sorted, so that parents come before their children.
func sortedDirs(dirs map[string]struct{}) []string {
	out := make([]string, 0, len(dirs))
	for d := range dirs {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
