//go:build linux

package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// proc is one line of /proc/PID/stat, the fields used here.
type proc struct {
	pid, ppid, pgid int
	ticks           int64 // utime + stime, clock ticks (USER_HZ)
}

// readStat parses /proc/PID/stat; ok is false for a process that is gone.
func readStat(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	// comm may hold spaces and parentheses: the fields start after the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, pgid 5, utime 14, stime 15.
	if len(f) < 13 {
		return proc{}, false
	}
	p := proc{pid: pid}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgid, _ = strconv.Atoi(f[2])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	p.ticks = ut + st
	return p, true
}

// allProcs reads every process's stat.
func allProcs() []proc {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	out := make([]proc, 0, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if p, ok := readStat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// descendants returns the processes below root (root excluded).
func descendants(root int) []proc {
	all := allProcs()
	kids := map[int][]int{}
	byPID := map[int]proc{}
	for _, p := range all {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
		byPID[p.pid] = p
	}
	var out []proc
	queue := append([]int(nil), kids[root]...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if p, ok := byPID[pid]; ok {
			out = append(out, p)
		}
		queue = append(queue, kids[pid]...)
	}
	return out
}

// rollup reads Rss and Pss (kB) from /proc/PID/smaps_rollup; ok is false
// for a process that is gone.
func rollup(pid int) (rss, pss int64, ok bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	seen := 0
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "Rss:"):
			dst = &rss
		case strings.HasPrefix(line, "Pss:"):
			dst = &pss
		default:
			continue
		}
		fs := strings.Fields(line)
		if len(fs) >= 2 {
			*dst, _ = strconv.ParseInt(fs[1], 10, 64)
			seen++
		}
	}
	return rss, pss, seen == 2
}
