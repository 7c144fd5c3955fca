//go:build linux

// Package netns runs a test binary's tests in a network namespace of their
// own, with only the loopback interface up, as bench/reload/run does with
// `unshare --net`.
//
// The load-heavy tests (demo's, and the swaps under load of test/) open
// thousands of loopback connections a second. In the host's namespace they
// share its conntrack table (loaded by docker; it keeps every closed
// connection 120 s) and its TIME_WAIT sockets and ports with everything else
// on the machine. Repeated runs filled it: `go test -count=20 ./demo/` failed
// 8 tests, clients timing out in connect() while the kernel logged
// "nf_conntrack: table full, dropping packet". A fresh namespace has no
// conntrack and nothing else in it, and it goes away with the tests.
//
// Only test code imports this package; baton never does.
package netns

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// childEnv marks the re-executed test binary. Not BATON_*: baton reports
// unknown BATON_* variables and strips its own from workers.
const childEnv = "TEST_NETNS_CHILD"

// Main runs m's tests and returns the status for os.Exit.
//
// As root it runs them in a new network namespace: it re-executes the test
// binary with the same arguments and CLONE_NEWNET, and the child brings lo up
// and runs them. env is added to the child's environment.
//
// host, when not empty, names a top-level test that must stay in the host's
// namespace (the Docker test publishes a container port on the host's
// 127.0.0.1). The child skips it, and this process runs it after the child,
// under the user's -run and -skip; the status is then the worse of the two.
//
// Without root, with -test.list, when fuzzing or writing a profile (which
// two processes would each write), the tests run here on the host's
// loopback, as they did before. So they do where the kernel refuses a new
// namespace (a container without CAP_SYS_ADMIN), with a warning.
func Main(m *testing.M, host string, env ...string) int {
	if os.Getenv(childEnv) != "" {
		if err := loopbackUp(); err != nil {
			fmt.Fprintf(os.Stderr, "netns: bring lo up in the tests' network namespace: %v\n", err)
			return 1
		}
		return m.Run()
	}
	// m.Run would parse them too; the flags decide whether to re-execute.
	flag.Parse()
	if os.Geteuid() != 0 || flagValue("test.list") != "" || flagValue("test.fuzz") != "" || flagValue("test.fuzzworker") == "true" {
		return m.Run()
	}
	if f := profileFlag(); f != "" {
		fmt.Fprintf(os.Stderr, "netns: -%s: the tests run on the host's loopback\n", f)
		return m.Run()
	}

	args := os.Args[1:]
	if host != "" {
		// The last -test.skip wins; top-level alternatives ('|') are
		// matched one by one, each split on '/' (testing's splitRegexp), so
		// prefixing the user's pattern keeps it intact.
		skip := "^" + regexp.QuoteMeta(host) + "$"
		if user := flagValue("test.skip"); user != "" {
			skip += "|" + user
		}
		args = append(args[:len(args):len(args)], "-test.skip="+skip)
	}
	code, err := runChild(args, env)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netns: %v: the tests run on the host's loopback\n", err)
		return m.Run()
	}
	if host == "" || (code != 0 && flagValue("test.failfast") == "true") {
		return code
	}
	run, ok := hostRun(flagValue("test.run"), flagValue("test.skip"), host)
	if !ok {
		return code // the user's -run or -skip leaves the host's test out
	}
	// Benchmarks ran in the child; only the host's test runs here.
	if err := errors.Join(flag.Set("test.run", run), flag.Set("test.bench", "")); err != nil {
		fmt.Fprintf(os.Stderr, "netns: %v\n", err)
		return 1
	}
	return max(code, m.Run())
}

// profileFlag returns the first flag set that names a file the tests write
// at the end: two processes would each write it, the second over the first.
func profileFlag() string {
	for _, f := range []string{"test.coverprofile", "test.cpuprofile", "test.memprofile", "test.blockprofile", "test.mutexprofile", "test.trace"} {
		if flagValue(f) != "" {
			return f
		}
	}
	return ""
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// runChild re-executes the test binary in a new network namespace and
// returns its exit status. An error means no child ran.
func runChild(args, env []string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find the test binary: %w", err)
	}
	cmd := exec.Command(self, args...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Pdeathsig: if go test kills this process (its -timeout), the child
	// must not run on. The kernel sends it when the thread that forked
	// exits, so that thread stays this goroutine's until the child is done.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET, Pdeathsig: unix.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the tests in a new network namespace: %w", err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(os.Stderr, "netns: the tests were killed by %v\n", ws.Signal())
			return 1, nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, fmt.Errorf("wait for the tests in a new network namespace: %w", err)
	}
	return 0, nil
}

// loopbackUp sets IFF_UP on lo, as `ip link set lo up` does: a new network
// namespace starts with lo down, so 127.0.0.1 and ::1 refuse everything.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// hostRun returns the -test.run pattern that selects, of the tests the
// user's patterns run and skip select, only the top-level test host and its
// subtests; ok is false when they select none of them (m.Run would then
// print "no tests to run", and go test would say so of the whole package).
// Each top-level alternative of run whose first element matches host keeps
// its subtest elements, with that element replaced by ^host$.
func hostRun(run, skip, host string) (string, bool) {
	if skip != "" {
		for _, alt := range splitRegexp(skip) {
			if ok, _ := regexp.MatchString(alt[0], host); ok && len(alt) == 1 {
				return "", false // host is skipped whole
			}
		}
	}
	exact := "^" + regexp.QuoteMeta(host) + "$"
	if run == "" {
		return exact, true
	}
	var keep []string
	for _, alt := range splitRegexp(run) {
		if ok, err := regexp.MatchString(alt[0], host); err != nil || !ok {
			continue // a bad pattern is reported by the child's m.Run
		}
		keep = append(keep, strings.Join(append([]string{exact}, alt[1:]...), "/"))
	}
	return strings.Join(keep, "|"), len(keep) > 0
}

// splitRegexp splits a -test.run or -test.skip pattern the way the testing
// package does (testing/match.go): into top-level alternatives on '|', each
// into per-level elements on '/', neither inside brackets or parentheses.
func splitRegexp(s string) [][]string {
	var alts [][]string
	var elems []string
	brackets, parens := 0, 0
	for i := 0; i < len(s); {
		switch s[i] {
		case '[':
			brackets++
		case ']':
			if brackets--; brackets < 0 { // an unmatched ']' is legal
				brackets = 0
			}
		case '(':
			if brackets == 0 {
				parens++
			}
		case ')':
			if brackets == 0 {
				parens--
			}
		case '\\':
			i++
		case '/', '|':
			if brackets == 0 && parens == 0 {
				elems = append(elems, s[:i])
				if s[i] == '|' {
					alts = append(alts, elems)
					elems = nil
				}
				s = s[i+1:]
				i = 0
				continue
			}
		}
		i++
	}
	return append(alts, append(elems, s))
}
