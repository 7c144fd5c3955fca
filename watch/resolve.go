package watch

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxSymlinks bounds symlink resolution like the kernel's ELOOP limit does, so a link cycle
// cannot hang the watcher.
const maxSymlinks = 40

// errOutside is why a symlink is not followed: it leads out of the watched tree.
var errOutside = errors.New("symlink leads out of the watched tree")

// errChanged means a file or directory was replaced between its check and its opening; the
// replacement is an event of its own, so it is skipped like a missing one.
var errChanged = errors.New("replaced while being read")

// fileID identifies a directory across names, to stop a walk that comes back to an ancestor
// through a symlink.
type fileID struct{ dev, ino uint64 }

// openVetted opens p, which lstat described as want, without following a symlink in its last
// component and without blocking (a FIFO swapped in), and checks that it opened that very file:
// a directory on the way may have been swapped for a symlink out of the tree since.
func openVetted(p string, want fs.FileInfo, flags int) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|flags, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
			return nil, errChanged // a symlink (or not a directory) now
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !os.SameFile(fi, want) {
		f.Close()
		return nil, errChanged
	}
	return f, nil
}

// pseudoFS reports whether f is on a kernel pseudo-filesystem, whose files are no
// configuration and can be endless (/proc/self/pagemap) or consumed by reading (/proc/kmsg).
func pseudoFS(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var st unix.Statfs_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstatfs(int(fd), &st) }); err != nil || serr != nil {
		return false
	}
	switch int64(st.Type) {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.DEBUGFS_MAGIC, unix.TRACEFS_MAGIC,
		unix.SECURITYFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC, unix.BPF_FS_MAGIC:
		return true
	}
	return false
}

// resolve follows every symlink in name, taken relative to the symlink-free directory base (or
// absolute), and returns the symlink-free path it designates and what lstat says of it. Every
// step must stay inside the symlink-free directory root, which contains base: a step out of it
// (an absolute link, a `..` above it), even one that would come back, ends resolution with
// errOutside, as openat2's RESOLVE_BENEATH would. It adds to dirs every directory in which it
// read a symlink, and when resolution fails the deepest directory it reached: those are
// exactly the places where a change to what name designates shows up as an inotify event (a swap
// of `..data`, of a `current -> v2` link, or the creation of the missing component).
// filepath.EvalSymlinks cannot be used because it does not say where the links were.
func resolve(base, name, root string, dirs map[string]struct{}) (string, fs.FileInfo, error) {
	cur := base
	var fi fs.FileInfo // of cur, nil when not known
	rest := name
	if filepath.IsAbs(name) {
		cur = "/"
	}
	links := 0
	for {
		if !within(cur, root) {
			return cur, nil, errOutside
		}
		if rest == "" {
			break
		}
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			cur, fi = filepath.Dir(cur), nil // cur has no symlinks, so lexical ".." is the real parent
			continue
		}
		next := filepath.Join(cur, comp)
		lfi, err := os.Lstat(next)
		if err != nil {
			dirs[cur] = struct{}{}
			return next, nil, err
		}
		if lfi.Mode()&fs.ModeSymlink == 0 {
			if !lfi.IsDir() && strings.Trim(rest, "/") != "" {
				dirs[cur] = struct{}{}
				return next, nil, &fs.PathError{Op: "lstat", Path: next, Err: syscall.ENOTDIR}
			}
			cur, fi = next, lfi
			continue
		}
		dirs[cur] = struct{}{}
		links++
		if links > maxSymlinks {
			return next, nil, &fs.PathError{Op: "resolve", Path: next, Err: syscall.ELOOP}
		}
		target, err := os.Readlink(next)
		if err != nil {
			return next, nil, err
		}
		if filepath.IsAbs(target) {
			cur, fi = "/", nil
		}
		if rest == "" {
			rest = target
		} else {
			rest = target + "/" + rest
		}
	}
	if fi == nil {
		var err error
		if fi, err = os.Lstat(cur); err != nil {
			return cur, nil, err
		}
	}
	return cur, fi, nil
}

// within reports whether the clean path p is root or below it.
func within(p, root string) bool {
	return root == "/" || p == root || strings.HasPrefix(p, root+"/")
}

// absent reports whether err means "nothing is there": such paths hash as absent (or, inside a
// directory, are simply not listed) instead of being reported as errors. A name too long for
// the kernel cannot be there either.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ENAMETOOLONG)
}

func idOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}
