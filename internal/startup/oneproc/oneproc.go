// Package oneproc runs baton on one P (GOMAXPROCS=1) from the start of the
// program. main imports it for that side effect alone.
//
// baton's own work is small and serial (one event loop, a few helpers), so
// one P is all it needs, like tini's single thread. Set this early it also
// keeps the runtime from starting threads for idle Ps while the other
// packages initialise, which shortens every start by about 0.05-0.1 ms on
// a 2-CPU VM (bench/init). Go initialises, among the packages whose imports
// are done, the one first in import-path order: importing nothing but
// runtime makes this one of the very first.
//
// The GOMAXPROCS environment variable is left alone: it is the workers'
// (they inherit it). Subcommands that serve requests themselves (baton
// hello, baton demo) call Restore with it.
package oneproc

import "runtime"

func init() { runtime.GOMAXPROCS(1) }

// Restore sets GOMAXPROCS to n, or when n < 1 to the runtime's default
// (CPUs and cgroup limit). It imports no strconv on purpose: see above.
func Restore(n int) {
	if n > 0 {
		runtime.GOMAXPROCS(n)
		return
	}
	runtime.SetDefaultGOMAXPROCS()
}
