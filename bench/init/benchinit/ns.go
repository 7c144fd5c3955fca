package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-init/baton/bench/internal/procfs"
)

// startPID1 starts argv as PID 1 of a new PID namespace. With mountProc it also
// gets a private mount namespace, and argv is started through "benchinit
// pid1shim", which mounts a /proc for the new PID namespace and then execs
// argv (same pid, so argv is still PID 1).
func startPID1(argv []string, mountProc bool) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("no init command given")
	}
	flags := uintptr(syscall.CLONE_NEWPID)
	if mountProc {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		argv = append([]string{self, "pid1shim"}, argv...)
		flags |= syscall.CLONE_NEWNS
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Stdin: nil, Stderr: os.Stderr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// cmdPID1Shim runs as PID 1 of the new namespaces: it makes the mount tree
// private (so nothing propagates back to the host), mounts a /proc that shows
// the new PID namespace, and execs the init under test.
func cmdPID1Shim(args []string) error {
	if len(args) == 0 {
		return errors.New("no command")
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, args, os.Environ())
}

// children returns the children of process pid: the union of
// /proc/PID/task/*/children. (Each thread's file lists only the children that
// thread forked, and a Go init forks from any of its threads.)
func children(proc string, pid int) ([]int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("%s/%d/task", proc, pid))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("%s/%d/task/%s/children", proc, pid, t.Name()))
		if err != nil {
			if len(tasks) == 1 {
				return nil, err
			}
			continue // the thread may have exited
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// hasChildBesides reports whether process pid has a child other than except.
// It reads only the first bytes of each /proc/PID/task/*/children, which the
// kernel generates lazily, so it stays cheap with thousands of children.
func hasChildBesides(proc string, pid, except int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("%s/%d/task", proc, pid))
	if err != nil {
		return false
	}
	buf := make([]byte, 64)
	for _, t := range tasks {
		f, err := os.Open(fmt.Sprintf("%s/%d/task/%s/children", proc, pid, t.Name()))
		if err != nil {
			continue
		}
		n, _ := f.Read(buf)
		f.Close()
		for _, fld := range strings.Fields(string(buf[:n])) {
			if k, err := strconv.Atoi(fld); err != nil || k != except {
				return true // another pid (or a pid cut short by the 64 bytes)
			}
		}
	}
	return false
}

// cpuNS is the CPU time (ns) a process has used so far (procfs.SchedNS);
// -1 if unreadable.
func cpuNS(pid int) int64 {
	if ns, ok := procfs.SchedNS(pid); ok {
		return ns
	}
	return -1
}

func statusKB(pid int, keys ...string) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !want[k] {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) > 0 {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			out[k] = n
		}
	}
	return out, sc.Err()
}

// cmdRSS starts INIT ARGS (normally "INIT -- sleep 1000") as PID 1 of a new
// PID namespace, waits until the init has a child whose comm is -comm (the
// command has been exec'd), then samples VmRSS every -interval for -window
// and prints the last sample and the peak.
func cmdRSS(args []string) error {
	fs := flag.NewFlagSet("rss", flag.ExitOnError)
	comm := fs.String("comm", "sleep", "comm of the supervised child to wait for")
	interval := fs.Duration("interval", 50*time.Millisecond, "sampling interval once the child exists")
	window := fs.Duration("window", 3*time.Second, "how long to sample after the child exists")
	timeout := fs.Duration("timeout", 10*time.Second, "give up waiting for the child after this long")
	fs.Parse(args)
	cmd, err := startPID1(fs.Args(), false)
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	defer func() {
		// Killing PID 1 of a namespace kills everything in it.
		cmd.Process.Kill()
		cmd.Wait()
	}()
	start := time.Now()
	// 1. Wait for the child to exist and to have exec'd the command.
	var childAt time.Duration
	for childAt == 0 {
		if time.Since(start) > *timeout {
			return fmt.Errorf("no child with comm %q under pid %d after %v", *comm, pid, *timeout)
		}
		kids, _ := children("/proc", pid)
		for _, k := range kids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k))
			if err == nil && strings.TrimSpace(string(b)) == *comm {
				childAt = time.Since(start)
			}
		}
		time.Sleep(time.Millisecond)
	}
	// 2. Sample for the window.
	keys := []string{"VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"}
	var last map[string]int64
	var peak int64
	samples := 0
	for end := time.Now().Add(*window); time.Now().Before(end); {
		time.Sleep(*interval)
		cur, err := statusKB(pid, keys...)
		if err != nil {
			return err
		}
		samples++
		peak = max(peak, cur["VmRSS"])
		last = cur
	}
	if last == nil {
		return errors.New("no sample")
	}
	out := map[string]any{
		"vmrss_kb": last["VmRSS"], "peak_vmrss_kb": peak, "rss_anon_kb": last["RssAnon"], "rss_file_kb": last["RssFile"],
		"rss_shmem_kb": last["RssShmem"], "threads": last["Threads"],
		"child_after_ms": float64(childAt.Microseconds()) / 1000, "samples": samples,
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// cmdOrphans runs "INIT ARGS... benchinit worker ..." as PID 1 of new PID
// and mount namespaces (with their own /proc) and prints one JSON line.
//
// Trickle mode: the worker measures (see cmdWorker) and this relays its line.
// Backlog mode: this stops the init with SIGSTOP as soon as the worker exists,
// lets the worker pile up N zombies, sends SIGCONT and times, from outside,
// how long the init takes to reap all of them.
func cmdOrphans(args []string) error {
	fs := flag.NewFlagSet("orphans", flag.ExitOnError)
	n := fs.Int("n", 10000, "orphans to create")
	backlog := fs.Bool("backlog", false, "backlog mode")
	timeout := fs.Duration("timeout", 60*time.Second, "kill the namespace after this long")
	pollGap := fs.Duration("poll-gap", 200*time.Microsecond, "backlog mode: pause between polls of the init's children lists")
	fs.Parse(args)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append([]string{}, fs.Args()...)
	argv = append(argv, self, "worker", "-n", strconv.Itoa(*n))
	if *backlog {
		argv = append(argv, "-backlog")
	}
	cmd, err := startPID1(argv, true)
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	initPID := cmd.Process.Pid
	timer := time.AfterFunc(*timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	finish := func() int {
		cmd.Process.Kill()
		cmd.Wait()
		return cmd.ProcessState.ExitCode()
	}

	var res map[string]any
	if !*backlog {
		cpu0 := int64(-1)
		for line := range lines {
			if line == startLine {
				cpu0 = cpuNS(initPID)
				continue
			}
			if rest, ok := strings.CutPrefix(line, resultPrefix); ok {
				// The worker lingers a moment after this line, so the init is still there.
				cpu := cpuNS(initPID)
				if err := json.Unmarshal([]byte(rest), &res); err != nil {
					return fmt.Errorf("bad worker line %q: %w", line, err)
				}
				if cpu >= 0 && cpu0 >= 0 {
					res["init_cpu_ms"] = msNS(cpu - cpu0)
				}
			} else {
				fmt.Fprintln(os.Stderr, line)
			}
		}
		werr := cmd.Wait()
		if res == nil {
			return fmt.Errorf("worker reported nothing (init: %v)", werr)
		}
		res["init_exit"] = cmd.ProcessState.ExitCode()
	} else {
		// 1. The worker exists (the init has a child that exec'd us): stop the init.
		var worker int
		for start := time.Now(); worker == 0; {
			if time.Since(start) > 10*time.Second {
				return fmt.Errorf("no worker under the init after 10s (init exit %d)", finish())
			}
			kids, _ := children("/proc", initPID)
			for _, k := range kids {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k)); err == nil &&
					bytes.Contains(b, []byte("\x00worker\x00")) {
					worker = k
				}
			}
			time.Sleep(time.Millisecond)
		}
		if err := syscall.Kill(initPID, syscall.SIGSTOP); err != nil {
			finish()
			return fmt.Errorf("SIGSTOP init: %w", err)
		}
		// 2. The worker piles up the zombies and says when.
		var cont map[string]any
		for line := range lines {
			if rest, ok := strings.CutPrefix(line, contPrefix); ok {
				if err := json.Unmarshal([]byte(rest), &cont); err != nil {
					finish()
					return fmt.Errorf("bad worker line %q: %w", line, err)
				}
				break
			}
			fmt.Fprintln(os.Stderr, line)
		}
		if cont == nil {
			return fmt.Errorf("worker never piled up the zombies (init exit %d)", finish())
		}
		// 3. Continue the init and time the drain.
		unreaped := func() int {
			kids, _ := children("/proc", initPID)
			c := 0
			for _, k := range kids {
				if k != worker {
					c++
				}
			}
			return c
		}
		before := unreaped()
		cpu0 := cpuNS(initPID)
		t0 := monoNS()
		syscall.Kill(initPID, syscall.SIGCONT)
		// Poll with hasChildBesides (reads only the head of each list: reading
		// all of a 10,000-entry list that shrinks under us takes milliseconds).
		polls := 0
		for hasChildBesides("/proc", initPID, worker) && monoNS()-t0 < 10e9 {
			if *pollGap > 0 {
				time.Sleep(*pollGap)
			}
			polls++
		}
		t1 := monoNS()
		rem := unreaped()
		cpu1 := cpuNS(initPID)
		res = cont
		if cpu0 >= 0 && cpu1 >= 0 {
			res["init_cpu_ms"] = msNS(cpu1 - cpu0)
		}
		res["unreaped_before_cont"] = before
		res["cont_to_zero_ms"] = msNS(t1 - t0)
		res["remaining"] = rem
		res["polls"] = polls
		res["init_exit"] = finish()
	}
	res["init"] = filepath.Base(fs.Arg(0))
	return json.NewEncoder(os.Stdout).Encode(res)
}
