package watch

import (
	"fmt"
	"os"
	"sort"
)

// rehashWatching hashes the content and makes the inotify watches match the directories the hash
// depended on. A directory that had to be newly watched may have changed between the hash and
// the watch, unseen; so the hash is repeated until no new watch was needed, and the caller is
// told (again=true) to look once more later if that did not settle within resyncRounds. If
// inotify fails, it falls back to polling (w.fs becomes nil) and the snapshot is still valid.
// ok is false only if the watcher is being closed. An abandoned pass (s.incomplete) only adds
// watches: it saw part of the directories.
func (w *Watcher) rehashWatching() (s snapshot, again, ok bool) {
	for range resyncRounds {
		s, ok = w.hash()
		if !ok {
			return s, false, false
		}
		if w.hooks.beforeSync != nil {
			w.hooks.beforeSync(s.dirs)
		}
		added, err := w.sync(s.dirs, s.incomplete == nil)
		if err != nil {
			w.fallback(err)
			return s, false, true
		}
		if !added || s.incomplete != nil {
			return s, false, true
		}
	}
	return s, true, true
}

// sync adds and removes inotify watches so that exactly the directories in want are watched
// (with prune false, it only adds). It reports whether any watch was (re)added. A directory that vanished in the meantime is skipped
// (its removal is itself an event in a watched parent); any other failure, such as the inotify
// watch limit, is returned so the caller can fall back to polling.
func (w *Watcher) sync(want map[string]struct{}, prune bool) (added bool, err error) {
	have := make(map[string]bool)
	for _, p := range w.fs.WatchList() {
		have[p] = true
	}
	seen := make(map[fileID]bool, len(want))
	keep := make(map[string]bool, len(want))
	for _, dir := range sortedDirs(want) {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			added = true // it changed under us: look again
			continue
		}
		id, _ := idOf(fi)
		// Two names for one directory (bind mounts) share one inotify watch, which fsnotify
		// lists under the first name only; watching the second would look new every time.
		if seen[id] {
			continue
		}
		seen[id] = true
		keep[dir] = true
		// Re-add when the directory at this path is not the one we watch: inotify watches an
		// inode, and the path may now name a new directory (deleted and recreated).
		if have[dir] && w.ids[dir] == id {
			continue
		}
		if err := w.fs.Add(dir); err != nil {
			if absent(err) {
				added = true
				continue
			}
			return added, fmt.Errorf("watch: inotify on %s: %w", dir, err)
		}
		w.ids[dir] = id
		added = true
	}
	for p := range have {
		if prune && !keep[p] {
			// May fail if the kernel already dropped the watch (directory deleted): fine.
			_ = w.fs.Remove(p)
			delete(w.ids, p)
		}
	}
	return added, nil
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
