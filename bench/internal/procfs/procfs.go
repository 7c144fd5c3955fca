// Package procfs reads what the benchmark programs under bench/ measure in
// /proc.
package procfs

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// SchedNS is the CPU time (ns) process pid has used so far: the sum of the
// first field of /proc/PID/task/*/schedstat, every thread's run time
// (threads that already exited are not counted). ok is false when the
// process is gone.
func SchedNS(pid int) (ns int64, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			ns += n
		}
	}
	return ns, true
}

// Proc is one line of /proc/PID/stat, the fields used here.
type Proc struct {
	PID, PPID, PGID int
}

// ReadStat parses /proc/PID/stat; ok is false for a process that is gone.
func ReadStat(pid int) (Proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, false
	}
	// comm may hold spaces and parentheses: the fields start after the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, pgid 5.
	if len(f) < 3 {
		return Proc{}, false
	}
	p := Proc{PID: pid}
	p.PPID, _ = strconv.Atoi(f[1])
	p.PGID, _ = strconv.Atoi(f[2])
	return p, true
}

// allProcs reads every process's stat.
func allProcs() []Proc {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	out := make([]Proc, 0, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if p, ok := ReadStat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// Descendants returns the processes below root (root excluded).
func Descendants(root int) []Proc {
	all := allProcs()
	kids := map[int][]int{}
	byPID := map[int]Proc{}
	for _, p := range all {
		kids[p.PPID] = append(kids[p.PPID], p.PID)
		byPID[p.PID] = p
	}
	var out []Proc
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

// Rollup reads Rss and Pss (kB) from /proc/PID/smaps_rollup; ok is false
// for a process that is gone.
func Rollup(pid int) (rss, pss int64, ok bool) {
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
