package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Result lines on the worker's stdout (which the init passes through).
const (
	resultPrefix = "BENCHINIT-RESULT " // JSON result (trickle mode)
	contPrefix   = "BENCHINIT-CONT "   // backlog mode: all orphans are zombies, continue the init
	startLine    = "BENCHINIT-START"   // trickle mode: about to fork (the harness reads the init's CPU time)
)

// Package variables used by the forked children, so that they touch no heap
// and need no fresh stack.
var (
	gts  syscall.Timespec
	gbuf [8]byte
)

// monoNS is CLOCK_MONOTONIC in nanoseconds, made with a raw system call so
// that forked children can use it too. (The clock is shared by all PID
// namespaces: no time namespace is involved.)
func monoNS() int64 {
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&gts)), 0)
	return gts.Sec*1e9 + gts.Nsec
}

// rawFork is fork(2) without the Go runtime's involvement. The child has a
// single thread (the caller's) and makes only raw system calls until it exits.
func rawFork() (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	return int(r), e
}

func rawExit(code int) {
	for {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, uintptr(code), 0, 0)
	}
}

// spawnOrphan forks a child that forks a grandchild and exits at once, so the
// grandchild is reparented to PID 1 (the init under test). The grandchild
// exits at once too. If stampFD >= 0, both write their CLOCK_MONOTONIC time
// to stampFD just before they exit; both keep stampFD open until they exit, so
// EOF on the read end means every one has closed its files in exit(2). The
// latest stamp is when the last orphan exited, or (if an orphan exited first)
// when the last one became an orphan.
func spawnOrphan(stampFD int) (int, error) {
	pid, e := rawFork()
	if e != 0 {
		return 0, e
	}
	if pid != 0 {
		return pid, nil
	}
	// Intermediate child.
	gpid, e := rawFork()
	if e != 0 {
		rawExit(3)
	}
	if gpid != 0 {
		stamp(stampFD)
		rawExit(0)
	}
	// Grandchild: an orphan of PID 1 once the intermediate child has exited.
	stamp(stampFD)
	rawExit(0)
	return 0, nil
}

// stamp writes CLOCK_MONOTONIC (8 bytes, little endian) to fd, if fd >= 0.
func stamp(fd int) {
	if fd >= 0 {
		binary.LittleEndian.PutUint64(gbuf[:], uint64(monoNS()))
		syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&gbuf[0])), 8)
	}
}

// unreaped lists the children of PID 1 other than the worker itself and the
// ones present before the run: orphans that exited or are exiting but have
// not been reaped yet.
func unreaped(self int, baseline map[int]bool) ([]int, error) {
	kids, err := children("/proc", 1)
	if err != nil {
		return nil, err
	}
	out := kids[:0]
	for _, k := range kids {
		if k != self && !baseline[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// procState returns the state letter from /proc/PID/stat (0 if gone).
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2]
	}
	return 0
}

// zombiesInNS scans the namespace's /proc for Z-state processes (slow; used
// only as a final cross-check).
func zombiesInNS() int {
	ents, _ := os.ReadDir("/proc")
	z := 0
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && procState(pid) == 'Z' {
			z++
		}
	}
	return z
}

// spawnSibling makes a child of PID 1 directly (clone with CLONE_PARENT; the
// worker is PID 1's child) that exits at once. To PID 1 it is the same as an
// orphan: a child it did not spawn that it must reap.
func spawnSibling() error {
	r, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.CLONE_PARENT|syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	if r == 0 {
		rawExit(0)
	}
	return nil
}

// makeOrphans forks n orphans and reaps every intermediate child (with
// siblings: makes n children of PID 1 with CLONE_PARENT instead, half the
// forks). It returns the read end of a pipe every orphan holds open until it
// exits.
func makeOrphans(n int, stamps, siblings bool) (int, error) {
	var done [2]int
	if err := syscall.Pipe2(done[:], syscall.O_CLOEXEC); err != nil {
		return -1, err
	}
	stampFD := -1
	if stamps {
		// Room for every stamp, so no orphan ever blocks in write(2).
		size := max(1<<16, 16*n+4096)
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(done[1]), syscall.F_SETPIPE_SZ, uintptr(size)); e != 0 {
			return -1, fmt.Errorf("F_SETPIPE_SZ %d: %w", size, e)
		}
		stampFD = done[1]
	}
	for i := 0; siblings && i < n; i++ {
		if err := spawnSibling(); err != nil {
			return -1, fmt.Errorf("clone %d: %w", i, err)
		}
	}
	// Intermediate children are reaped as they come (wait4(-1)), with at most
	// maxInFlight outstanding, so forking overlaps with their exits.
	const maxInFlight = 32
	inFlight := 0
	reap := func(flags int) (bool, error) {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, flags, nil)
		switch {
		case err == syscall.EINTR:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("wait4: %w", err)
		case pid == 0:
			return false, nil
		case ws.ExitStatus() != 0:
			return false, fmt.Errorf("intermediate child %d failed (status %v)", pid, ws)
		}
		inFlight--
		return true, nil
	}
	for i := 0; !siblings && i < n; i++ {
		for inFlight >= maxInFlight {
			if _, err := reap(0); err != nil {
				return -1, err
			}
		}
		if _, err := spawnOrphan(stampFD); err != nil {
			return -1, fmt.Errorf("fork %d: %w", i, err)
		}
		inFlight++
		for inFlight > 0 {
			if ok, err := reap(syscall.WNOHANG); err != nil {
				return -1, err
			} else if !ok {
				break
			}
		}
	}
	for inFlight > 0 {
		if _, err := reap(0); err != nil {
			return -1, err
		}
	}
	syscall.Close(done[1])
	return done[0], nil
}

// drain reads fd until EOF and returns what was read.
func drain(fd int) ([]byte, error) {
	var all []byte
	buf := make([]byte, 1<<16)
	for {
		k, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if k == 0 {
			return all, nil
		}
		all = append(all, buf[:k]...)
	}
}

func msNS(ns int64) float64 { return float64(ns) / 1e6 }

// cmdWorker runs under the init under test, which is PID 1 of its own PID
// namespace with /proc mounted for it. It makes N orphans.
//
// Trickle mode (default): the orphans exit as they are made (double fork, up
// to 32 intermediate children in flight); each orphan and each intermediate
// stamps its exit time. After the last one has exited (EOF), the worker polls
// /proc/1/task/*/children until no unreaped orphan is left and prints
// last stamp → zero.
//
// Backlog mode (-backlog): the harness has stopped PID 1 with SIGSTOP (from the
// parent namespace, the only place that can). The worker waits for that, makes
// N children of PID 1 (CLONE_PARENT: while PID 1 is stopped, how they became
// its children makes no difference) that exit at once and stay zombies, waits until all N are zombies,
// prints a BENCHINIT-CONT line and sleeps; the harness then sends SIGCONT and
// times the drain from outside.
func cmdWorker(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	n := fs.Int("n", 10000, "orphans")
	backlog := fs.Bool("backlog", false, "backlog mode (see the harness)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up waiting after this long")
	fs.Parse(args)

	self := os.Getpid()
	if os.Getppid() != 1 {
		return fmt.Errorf("worker's parent is %d, not 1: the init under test must be PID 1 and the worker's parent", os.Getppid())
	}
	kids, err := children("/proc", 1)
	if err != nil {
		return fmt.Errorf("cannot read /proc/1/task/*/children (is /proc mounted for the namespace?): %w", err)
	}
	base := map[int]bool{}
	for _, k := range kids {
		if k != self {
			base[k] = true
		}
	}

	if *backlog {
		return backlogWorker(*n, self, base, *timeout)
	}

	fmt.Println(startLine)
	time.Sleep(20 * time.Millisecond)
	t0 := monoNS()
	fd, err := makeOrphans(*n, true, false)
	if err != nil {
		return err
	}
	tForked := monoNS()
	stamps, err := drain(fd)
	if err != nil {
		return fmt.Errorf("read stamps: %w", err)
	}
	tEOF := monoNS()
	if len(stamps) != 16**n {
		return fmt.Errorf("got %d exit stamps, want %d", len(stamps)/8, 2**n)
	}
	var last int64
	for i := 0; i < len(stamps); i += 8 {
		last = max(last, int64(binary.LittleEndian.Uint64(stamps[i:])))
	}
	rem, err := unreaped(self, base)
	if err != nil {
		return err
	}
	atEOF := len(rem)
	polls := 1
	for len(rem) > 0 && monoNS()-tEOF < timeout.Nanoseconds() {
		if rem, err = unreaped(self, base); err != nil {
			return err
		}
		polls++
	}
	tZero := monoNS()
	fmt.Printf("%s{\"mode\":\"trickle\",\"orphans\":%d,\"fork_ms\":%.3f,\"last_exit_to_zero_ms\":%.4f,"+
		"\"last_exit_to_eof_ms\":%.4f,\"total_ms\":%.3f,\"unreaped_at_eof\":%d,\"remaining\":%d,\"polls\":%d,\"zombies_after\":%d}\n",
		resultPrefix, *n, msNS(tForked-t0), msNS(tZero-last), msNS(tEOF-last), msNS(tZero-t0),
		atEOF, len(rem), polls, zombiesInNS())
	// Linger so that the harness can read the init's CPU time before the
	// init sees its child exit.
	time.Sleep(100 * time.Millisecond)
	return nil
}

func backlogWorker(n, self int, base map[int]bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for procState(1) != 'T' {
		if time.Now().After(deadline) {
			return errors.New("PID 1 was not stopped by the harness")
		}
		time.Sleep(time.Millisecond)
	}
	t0 := monoNS()
	fd, err := makeOrphans(n, false, true)
	if err != nil {
		return err
	}
	if _, err := drain(fd); err != nil {
		return err
	}
	tForked := monoNS()
	// EOF means every orphan is inside exit(2); wait until all are zombies.
	var zombies int
	for {
		rem, err := unreaped(self, base)
		if err != nil {
			return err
		}
		zombies = 0
		for _, p := range rem {
			if procState(p) == 'Z' {
				zombies++
			}
		}
		if zombies >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if procState(1) != 'T' {
		return errors.New("PID 1 was continued too early")
	}
	fmt.Printf("%s{\"mode\":\"backlog\",\"orphans\":%d,\"fork_ms\":%.3f,\"zombies_before_cont\":%d}\n",
		contPrefix, n, msNS(tForked-t0), zombies)
	// Stay alive (an init exits when its main child does); the harness
	// kills the namespace when it is done.
	for {
		time.Sleep(time.Hour)
	}
}
