// Command reloadbench is the measuring helper behind bench/reload/run. It is
// not part of baton.
//
//	reloadbench reloads   -design D [flags]   one run of one design under load; a JSON result
//	reloadbench report    -dir DIR [-tsv F]   Markdown tables (and TSV medians) from DIR's results
//	reloadbench canary    -out DIR [flags]     canary and bake against a plain steer reload (bench/canary/run)
//	reloadbench canary-report -dir DIR [-tsv F]
//
// Designs (reloads -design): baton (baton -- baton hello, 2 workers, one
// shared socket), express (test/testdata/unchanged_express.js, unchanged,
// under BATON_BIND=intercept), seed (bench/reload/seed/master.js: a Node 20 cluster
// master), reuseport (bench/reload/reuseport: every worker binds its own
// SO_REUSEPORT socket; the worker is baton hello). The load is demo.Load: 64
// clients, half keep-alive, never retrying (POST with a body that cannot be
// rewound, see demo.Load). All traffic is on 127.0.0.1.
//
// See docs/benchmarks.md for the method and caveats.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/bench/internal/harness"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	// The servers under test run in process groups of their own, so a
	// Ctrl-C reaches only us: stop the one running, then give up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "reloadbench: %v: stopping the server under test\n", sig)
		harness.StopAll(10 * time.Second)
		os.Exit(130)
	}()
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "reloads":
		err = cmdReloads(args)
	case "report":
		err = cmdReport(args)
	case "canary":
		os.Exit(cmdCanary(args))
	case "canary-report":
		os.Exit(cmdCanaryReport(args))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "reloadbench %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: reloadbench reloads -design baton|seed|reuseport [flags]
       reloadbench report -dir DIR [-tsv FILE]
       reloadbench canary -out DIR [flags]
       reloadbench canary-report -dir DIR [-tsv FILE]
(each takes -h)
`)
	os.Exit(2)
}
