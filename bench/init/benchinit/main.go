// Command benchinit is the measuring helper behind bench/init/run.
//
// It is not part of baton. It runs an init under test as PID 1 of a fresh PID
// namespace and measures it from outside (RSS) or through a worker it starts
// under the init (orphan reaping). bench/init/run drives it; see
// docs/benchmarks.md for the method.
//
//	benchinit rss      [-window D] -- INIT ARGS...        one JSON line: the init's VmRSS
//	benchinit orphans  [-n N] [-backlog] -- INIT ARGS...  one JSON line: orphan reaping timing
//	benchinit report   -dir DIR                            Markdown tables from DIR's results
//	benchinit pid1shim INIT ARGS...                        (internal) mount /proc, exec INIT
//	benchinit worker   [-n N] [-backlog]                   (internal) the orphan factory
//
// Linux only; the rss and orphans subcommands need root (CLONE_NEWPID, mounts).
package main

import (
	"fmt"
	"os"
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
	case "orphans":
		err = cmdOrphans(args)
	case "report":
		err = cmdReport(args)
	case "pid1shim":
		err = cmdPID1Shim(args)
	case "worker":
		err = cmdWorker(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchinit %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchinit rss|orphans|report|pid1shim|worker ... (see bench/init/run)")
	os.Exit(2)
}
