// Command benchinit is the measuring helper behind bench/init/run.
//
// It is not part of baton. It runs an init under test as PID 1 of a fresh PID
// namespace and measures its memory from outside, and it turns the results
// of a bench/init/run into tables; see docs/benchmarks.md for the method.
//
//	benchinit rss    [-window D] -- INIT ARGS...   one JSON line: the init's VmRSS
//	benchinit report -dir DIR [-tsv FILE]          Markdown tables (and TSV) from DIR's results
//
// Linux only; rss needs root (CLONE_NEWPID).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-init/baton/bench/internal/procfs"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "rss":
		err = cmdRSS(args)
	case "report":
		err = cmdReport(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchinit %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchinit rss|report ... (see bench/init/run)")
	os.Exit(2)
}

// statusKB reads the named fields (kB, or counts) of /proc/PID/status.
func statusKB(pid int, keys ...string) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		if fs := strings.Fields(v); len(fs) > 0 && strings.Contains(" "+strings.Join(keys, " ")+" ", " "+k+" ") {
			out[k], _ = strconv.ParseInt(fs[0], 10, 64)
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
	if fs.NArg() == 0 {
		return errors.New("no init command given")
	}
	path, err := exec.LookPath(fs.Arg(0))
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{Path: path, Args: fs.Args(), Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}}
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
		for _, p := range procfs.Descendants(pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID))
			if err == nil && p.PPID == pid && strings.TrimSpace(string(b)) == *comm {
				childAt = time.Since(start)
			}
		}
		time.Sleep(time.Millisecond)
	}
	// 2. Sample for the window.
	var last map[string]int64
	var peak int64
	samples := 0
	for end := time.Now().Add(*window); time.Now().Before(end); {
		time.Sleep(*interval)
		cur, err := statusKB(pid, "VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads")
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
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"vmrss_kb": last["VmRSS"], "peak_vmrss_kb": peak, "rss_anon_kb": last["RssAnon"], "rss_file_kb": last["RssFile"],
		"rss_shmem_kb": last["RssShmem"], "threads": last["Threads"],
		"child_after_ms": float64(childAt.Microseconds()) / 1000, "samples": samples,
	})
}
