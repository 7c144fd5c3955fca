// Command sim runs the loop's deterministic simulation (supervisor's
// TestSim, supervisor/sim_test.go) for a long campaign, or replays one
// seed with its event trace:
//
//	go run ./test/sim -seeds 1000000        # seeds 1..1000000
//	go run ./test/sim -seed 23              # replay seed 23, trace printed
//	go run ./test/sim -seeds 100000 -list   # every failing seed, not only the first
//
// The simulation needs the loop's unexported state, so it lives in the
// supervisor package's tests; this runs them through go test. It exits
// with go test's status: 0 when no seed broke an invariant.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

func main() {
	seeds := flag.Int("seeds", 0, "how many seeds to run (0 with -seed: that one seed, traced)")
	seed := flag.Uint64("seed", 1, "the first seed")
	list := flag.Bool("list", false, "list every failing seed and its violation")
	shutrd := flag.Bool("shutrd", false, "workers may shut their sockets down (SHUT_RD) while alive (an open defect)")
	flag.Parse()
	if flag.NArg() > 0 || *seeds < 0 {
		fmt.Fprintln(os.Stderr, "usage: sim [-seeds N] [-seed S] [-list] [-shutrd]")
		os.Exit(2)
	}
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(strings.TrimSpace(string(root))) == 0 {
		fmt.Fprintln(os.Stderr, "sim: run it inside the baton module:", err)
		os.Exit(2)
	}
	dir := strings.TrimSuffix(strings.TrimSpace(string(root)), "/go.mod")
	args := []string{"test", "./supervisor", "-run", "^TestSim$", "-count=1", "-v", "-timeout", "0",
		"-sim.seed", fmt.Sprint(*seed)}
	if *seeds == 0 {
		args = append(args, "-sim.seeds", "1", "-sim.trace")
	} else {
		args = append(args, "-sim.seeds", fmt.Sprint(*seeds))
	}
	if *list {
		args = append(args, "-sim.list")
	}
	if *shutrd {
		args = append(args, "-sim.shutrd")
	}
	cmd := exec.Command("go", args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if e, ok := err.(*exec.ExitError); ok {
			os.Exit(e.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(2)
	}
}
