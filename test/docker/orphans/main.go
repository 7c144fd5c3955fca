// Command orphans makes orphaned grandchildren without a shell or libc, for
// the FROM scratch image of test/docker_test.go (built static on the host).
//
//	orphans N
//
// It re-executes itself as a middle process that starts N grandchildren
// (os.StartProcess, itself again) and exits at once without waiting for
// them, so every grandchild is reparented to the nearest subreaper (baton)
// or to PID 1. The middle process prints "orphan PID" for each grandchild
// on stdout before it exits. A grandchild blocks reading its stdin, a pipe
// whose only writer is the middle process, so it is still alive when it is
// orphaned; at EOF (the middle process is gone) it exits with status 7.
// Once the middle process has been waited for, orphans prints "done N" and
// waits for SIGTERM (exit 0), SIGINT or SIGQUIT.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
)

// grandchildCode is the status every grandchild exits with, so whoever reaps
// it can tell it apart from a worker.
const grandchildCode = 7

func main() {
	if len(os.Args) == 2 && os.Args[1] == "grandchild" {
		_, _ = io.Copy(io.Discard, os.Stdin) // until the middle process is gone
		os.Exit(grandchildCode)
	}
	if len(os.Args) == 3 && os.Args[1] == "middle" {
		os.Exit(middle(os.Args[2]))
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: orphans N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "orphans: want a positive count, got %q\n", os.Args[1])
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)

	p, err := os.StartProcess("/proc/self/exe", []string{os.Args[0], "middle", os.Args[1]},
		&os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "orphans:", err)
		os.Exit(1)
	}
	st, err := p.Wait()
	if err != nil || !st.Success() {
		fmt.Fprintf(os.Stderr, "orphans: middle process: %v %v\n", st, err)
		os.Exit(1)
	}
	fmt.Printf("done %d\n", n)
	<-sigs
}

// middle starts n grandchildren and returns without waiting for them.
func middle(count string) int {
	n, _ := strconv.Atoi(count)
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orphans:", err)
		return 1
	}
	for range n {
		p, err := os.StartProcess("/proc/self/exe", []string{os.Args[0], "grandchild"},
			&os.ProcAttr{Files: []*os.File{r, os.Stdout, os.Stderr}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "orphans:", err)
			return 1
		}
		fmt.Printf("orphan %d\n", p.Pid)
		_ = p.Release() // never waited for: that is the point
	}
	// w (close-on-exec, so no grandchild holds it) closes when we exit:
	// the grandchildren then read EOF, already orphaned.
	runtime.KeepAlive(w)
	return 0
}
