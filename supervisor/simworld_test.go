//go:build linux

package supervisor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/reaper"
	"golang.org/x/sys/unix"
)

// The simulated world behind the loop's seams (see sim_test.go for the
// scheduler and the invariants): processes with pids the kernel hands out
// again, process groups, exits and reaping; a virtual clock whose timers
// fire only when the scheduler says; and the kernel's reuseport group.
// Nothing in it is a real process, socket or sleep.

// simMaxPID is the top of the simulated pid space: small, so that pids
// come round again within one schedule, as the pid reuse hazard needs.
const simMaxPID = 40

type procKind int

const (
	kWorker procKind = iota
	kCheck
	kHelper // a child a worker left in its process group
)

type simProc struct {
	pid, pgid int
	epoch     int // which group pgid names: a reused id is a new epoch
	kind      procKind
	gen, idx  int
	exited    bool // exited: a zombie until reaped
	reaped    bool
	code      int
	inShim    bool
	execCh    chan struct{} // closed when it leaves the shim or exits
	// behaviour
	ignoreStop bool // ignores the stop signal (SIGKILL takes it)
	shutRD     bool // on the stop signal, shuts its TCP sockets down (SHUT_RD)
	relisten   bool // and later calls listen() on them again
	stopped    bool // got the stop signal and will exit once drained
	aborted    bool // got SIGABRT
	told       bool // got the stop signal
	readySent  bool
	checkHang  bool // a check that never ends by itself
	checkCode  int
	lines      chan string // a check's output channel, as the loop sees it
	lineSent   bool
	socks      []*simSock
	sigs       []unix.Signal
}

func (p *simProc) alive() bool { return !p.exited }

// simWorker is what Start and Check hand the loop.
type simWorker struct {
	w *simWorld
	p *simProc
}

func (sw *simWorker) PID() int { return sw.p.pid }

func (sw *simWorker) Signal(sig unix.Signal) error {
	return sw.w.signalGroupOf(sw.p, sig)
}

// simShimWorker is a worker started in baton's shim.
type simShimWorker struct{ *simWorker }

func (sw simShimWorker) InShim() bool { return sw.p.inShim }
func (sw simShimWorker) WaitExec()    { <-sw.p.execCh }

// simSock is one socket of a reuseport group in the kernel.
type simSock struct {
	id      int
	gen     int
	udp     bool
	holders int  // descriptors open on it: baton's and workers'
	baton   bool // baton holds its descriptor
	shut    bool // taken out by shutdown(SHUT_RD)
	closed  bool
	l       *simListener
}

// simListener is one TCP or UDP listener: the kernel's group, in the
// kernel's order, and baton's copy of it as handoff.Steering keeps one.
type simListener struct {
	udp    bool
	kernel []*simSock
	// baton's mirror (handoff.Steering's algorithm)
	members      []*simSock
	current      int
	splitTo      int
	splitPercent int
}

// kernelRemove takes s out of the group as the kernel does: its last
// member moves into the gap.
func (l *simListener) kernelRemove(s *simSock) {
	i := slices.Index(l.kernel, s)
	if i < 0 {
		return
	}
	last := len(l.kernel) - 1
	l.kernel[i] = l.kernel[last]
	l.kernel = l.kernel[:last]
}

func (l *simListener) index(gen int) int {
	for i, m := range l.members {
		if m.gen == gen {
			return i
		}
	}
	return -1
}

// simWorld is the kernel and the workers, as the loop sees them through
// its seams.
type simWorld struct {
	rng     *rand.Rand
	s       *Supervisor
	now     time.Time
	epoch   int
	lastPID int
	procs   []*simProc // every process ever, in start order
	byPID   map[int]*simProc
	timers  []*simTimer
	seq     int
	// pending messages the loop has not taken yet
	sigchld  bool
	execMsgs []*worker
	// steer mode
	steer     bool
	listeners []*simListener
	fds       map[int]*simSock
	nextFD    int
	closedAll bool
	failStart float64 // chance a Start fails
	checkFail float64
	checkHang float64
	stubborn  float64 // chance a worker ignores the stop signal
	shimP     float64
	helperP   float64
	shutRDP   float64
	rss       int64
	// violations found during a step (by a seam)
	viol []string
	// trace
	trace []string
	// first non-zero exit of a current worker once shutdown began
	shutdownCodes map[int]bool
	// stepExits are the worker exits reaped in this step after SIGTERM;
	// mustFail: one of them was non-zero, of the generation current
	// before and after the step, so baton's status cannot be 0.
	stepExits []simExit
	mustFail  bool
	// hungBefore are the workers the watchdog had found hung before this
	// step.
	hungBefore map[*worker]bool
	termSent   bool
}

type simExit struct {
	gen  *generation
	code int
}

type simTimer struct {
	due time.Time
	seq int
	ev  timerEvent
}

func (w *simWorld) violate(format string, a ...any) {
	w.viol = append(w.viol, fmt.Sprintf(format, a...))
}

func (w *simWorld) tracef(format string, a ...any) {
	if w.trace != nil {
		w.trace = append(w.trace, fmt.Sprintf("%8.3fs ", w.elapsed().Seconds())+fmt.Sprintf(format, a...))
	}
}

var simEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func (w *simWorld) elapsed() time.Duration { return w.now.Sub(simEpoch) }

// pidInUse: a pid is not handed out while a process has it, or while a
// process group or session of that id has a member.
func (w *simWorld) pidInUse(pid int) bool {
	if p := w.byPID[pid]; p != nil && !p.reaped {
		return true
	}
	for _, p := range w.procs {
		if !p.reaped && p.pgid == pid {
			return true
		}
	}
	return false
}

// allocPID hands out pids as the kernel does: the next free one after the
// last, round the pid space.
func (w *simWorld) allocPID() int {
	for range simMaxPID {
		w.lastPID++
		if w.lastPID > simMaxPID {
			w.lastPID = 2
		}
		if !w.pidInUse(w.lastPID) {
			return w.lastPID
		}
	}
	return 0
}

func (w *simWorld) spawn(kind procKind, gen, idx, pgid int) *simProc {
	pid := w.allocPID()
	if pid == 0 {
		return nil
	}
	p := &simProc{pid: pid, pgid: pgid, kind: kind, gen: gen, idx: idx}
	if pgid == 0 {
		w.epoch++
		p.pgid, p.epoch = pid, w.epoch
	} else {
		p.epoch = w.byPID[pgid].epoch
	}
	w.procs = append(w.procs, p)
	w.byPID[pid] = p
	return p
}

// leader is the process that leads p's group (p itself for a leader).
func (w *simWorld) leader(p *simProc) *simProc {
	for _, q := range w.procs {
		if q.pid == p.pgid && q.pgid == p.pgid && q.epoch == p.epoch {
			return q
		}
	}
	return p
}

// members are the unreaped processes of the group p leads (or is in).
func (w *simWorld) members(pgid, epoch int) []*simProc {
	var m []*simProc
	for _, q := range w.procs {
		if !q.reaped && q.pgid == pgid && q.epoch == epoch {
			m = append(m, q)
		}
	}
	return m
}

// groupNamed is the live group the id pgid names now: its epoch, or 0.
func (w *simWorld) groupNamed(pgid int) int {
	for _, q := range w.procs {
		if !q.reaped && q.pgid == pgid {
			return q.epoch
		}
	}
	return 0
}

// start is the Start seam.
func (w *simWorld) start(gen, idx int, fds []int, _ bool) (Worker, error) {
	if w.rng.Float64() < w.failStart {
		w.tracef("start gen %d worker %d fails", gen, idx)
		return nil, fmt.Errorf("simulated start failure")
	}
	p := w.spawn(kWorker, gen, idx, 0)
	if p == nil {
		return nil, fmt.Errorf("pid space exhausted")
	}
	p.ignoreStop = w.rng.Float64() < w.stubborn
	p.shutRD = w.steer && w.rng.Float64() < w.shutRDP
	p.relisten = p.shutRD && w.rng.IntN(2) == 0
	for _, fd := range fds {
		if s := w.fds[fd]; s != nil {
			s.holders++
			p.socks = append(p.socks, s)
		}
	}
	sw := &simWorker{w: w, p: p}
	w.tracef("start gen %d worker %d: pid %d%s", gen, idx, p.pid, flags(p))
	if w.rng.Float64() < w.shimP {
		p.inShim = true
		p.execCh = make(chan struct{})
		return simShimWorker{sw}, nil
	}
	if w.rng.Float64() < w.helperP {
		if h := w.spawn(kHelper, gen, idx, p.pid); h != nil {
			h.ignoreStop = w.rng.IntN(2) == 0
			w.tracef("  pid %d leaves helper pid %d in its group", p.pid, h.pid)
		}
	}
	return sw, nil
}

func flags(p *simProc) string {
	f := ""
	if p.ignoreStop {
		f += " ignores-stop"
	}
	if p.shutRD {
		f += " shut-rd"
	}
	if p.relisten {
		f += " relisten"
	}
	return f
}

// check is the Check and CanaryCheck seam.
func (w *simWorld) check(gen int) (Worker, <-chan string, error) {
	p := w.spawn(kCheck, gen, -1, 0)
	if p == nil {
		return nil, nil, fmt.Errorf("pid space exhausted")
	}
	switch r := w.rng.Float64(); {
	case r < w.checkHang:
		p.checkHang = true
	case r < w.checkHang+w.checkFail:
		p.checkCode = 1
	}
	p.lines = make(chan string)
	w.tracef("check for gen %d: pid %d (hang %v, code %d)", gen, p.pid, p.checkHang, p.checkCode)
	return &simWorker{w: w, p: p}, p.lines, nil
}

// exit makes p exit with code: a zombie until baton reaps it.
func (w *simWorld) exit(p *simProc, code int) {
	if p.exited {
		return
	}
	p.exited, p.code = true, code
	w.sigchld = true
	for _, s := range p.socks {
		w.closeFD(s)
	}
	p.socks = nil
	if p.inShim {
		p.inShim = false
		w.leaveShim(p)
	}
}

// leaveShim: the worker runs its command now (or is gone); the loop's
// goroutine waiting in WaitExec sends the worker on execs, which the world
// takes at once and hands the loop later, as a pending message.
func (w *simWorld) leaveShim(p *simProc) {
	close(p.execCh)
	lw := <-w.s.execs
	w.execMsgs = append(w.execMsgs, lw)
}

// deliver applies sig to p as the process would take it.
func (w *simWorld) deliver(p *simProc, sig unix.Signal) {
	if p.exited {
		if sig == w.s.opts.StopSignal {
			p.told = true // a zombie leader: its group was told
		}
		return
	}
	lw := w.s.byPID[p.pgid]
	judged := (lw != nil && (lw.retiring || w.hungBefore[lw])) || w.leader(p).told
	if w.s.parked != nil && p.gen == w.s.parked.num && p.kind != kCheck && !judged &&
		(sig == w.s.opts.StopSignal || sig == unix.SIGKILL || sig == unix.SIGABRT) {
		// (A worker retired before its generation was parked, a recycled
		// one, is killed after its stop timeout as any retired one; one
		// the watchdog found hung before, held in the shim, gets its
		// SIGABRT as it leaves it.)
		w.violate("%s to pid %d of generation %d, parked during a bake", unix.SignalName(sig), p.pid, p.gen)
	}
	if p.inShim && sig != unix.SIGKILL {
		w.violate("%s reached pid %d in baton's shim", unix.SignalName(sig), p.pid)
	}
	p.sigs = append(p.sigs, sig)
	if sig == w.s.opts.StopSignal {
		p.told = true
	}
	switch {
	case sig == unix.SIGKILL:
		w.exit(p, 128+int(unix.SIGKILL))
	case sig == unix.SIGABRT:
		p.aborted = true
	case sig == w.s.opts.StopSignal || sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT:
		if p.kind == kCheck {
			w.exit(p, 128+int(sig))
			return
		}
		if !p.ignoreStop {
			p.stopped = true
		}
		if p.shutRD {
			// A worker of a generation that no longer gets new
			// connections may take its socket out of the group
			// (shutdown(SHUT_RD)) as it stops accepting. (One of the
			// generation steered to would take that generation's
			// socket out from under its other workers: not modelled.)
			for _, s := range p.socks {
				if !s.udp && !s.shut && s.gen != s.l.current && s.gen != s.l.splitTo {
					s.shut = true
					w.listenerOf(s).kernelRemove(s)
				}
			}
		}
	}
}

// signalGroupOf is Signal on the Worker for p: kill(-pgid) of the group p
// leads. A group that is gone may have its id taken by now.
func (w *simWorld) signalGroupOf(p *simProc, sig unix.Signal) error {
	m := w.members(p.pgid, p.epoch)
	if len(m) == 0 {
		if e := w.groupNamed(p.pgid); e != 0 {
			w.violate("%s to group %d after it emptied: the id names another group now (pid reuse)", unix.SignalName(sig), p.pgid)
		} else {
			w.violate("%s to group %d after it emptied (its id may be reused)", unix.SignalName(sig), p.pgid)
		}
		return unix.ESRCH
	}
	w.tracef("  loop: %s to group %d", unix.SignalName(sig), p.pgid)
	for _, q := range m {
		w.deliver(q, sig)
	}
	return nil
}

// killGroup is the KillGroup seam.
func (w *simWorld) killGroup(pgid int, sig unix.Signal) error {
	e := w.groupNamed(pgid)
	if e == 0 {
		if sig != 0 {
			w.violate("%s to group %d, which has no member (its id may be reused)", unix.SignalName(sig), pgid)
		}
		return unix.ESRCH
	}
	if sig == 0 {
		return nil
	}
	w.tracef("  loop: %s to group %d (by id)", unix.SignalName(sig), pgid)
	for _, q := range w.members(pgid, e) {
		w.deliver(q, sig)
	}
	return nil
}

// killAll is kill(-1, sig).
func (w *simWorld) killAll(sig unix.Signal) error {
	w.tracef("  loop: %s to every process", unix.SignalName(sig))
	any := false
	for _, p := range w.procs {
		if !p.reaped {
			any = true
			w.deliver(p, sig)
		}
	}
	if !any {
		return unix.ESRCH
	}
	return nil
}

// reap is wait4(-1, WNOHANG) until nothing is left to reap.
func (w *simWorld) reap() ([]reaper.Exit, error) {
	var out []reaper.Exit
	for _, p := range w.procs {
		if p.exited && !p.reaped {
			p.reaped = true
			st := unix.WaitStatus(p.code << 8)
			if p.code > 128 {
				st = unix.WaitStatus(p.code - 128)
			}
			out = append(out, reaper.Exit{PID: p.pid, Status: st})
			w.tracef("  loop reaps pid %d: %d", p.pid, p.code)
			s := w.s
			// Which generation is current is decided exit by exit (one
			// may revert a bake): the status may be any of these.
			if lw := s.byPID[p.pid]; lw != nil && s.phase >= phaseDraining && p.code != 0 && w.termSent {
				if w.shutdownCodes == nil {
					w.shutdownCodes = map[int]bool{}
				}
				w.shutdownCodes[p.code] = true
				w.stepExits = append(w.stepExits, simExit{lw.gen, p.code})
			}
		}
	}
	return out, nil
}

func (w *simWorld) hasChildren() bool {
	for _, p := range w.procs {
		if !p.reaped {
			return true
		}
	}
	return false
}

// arm is the loop's timer hook: the timer fires when the scheduler says.
func (w *simWorld) arm(d time.Duration, ev timerEvent) {
	w.seq++
	w.timers = append(w.timers, &simTimer{due: w.now.Add(d), seq: w.seq, ev: ev})
}

// --- sockets (handoff.Sockets), steer mode ---

func (w *simWorld) listenerOf(s *simSock) *simListener { return s.l }

func (w *simWorld) closeFD(s *simSock) {
	s.holders--
	if s.holders > 0 {
		return
	}
	s.closed = true
	w.listenerOf(s).kernelRemove(s) // a socket leaves its group at its last close
}

type simSockets struct{ w *simWorld }

func (ss simSockets) Open(gen int) ([]int, error) {
	w := ss.w
	var fds []int
	for _, l := range w.listeners {
		if i := l.index(gen); i >= 0 {
			fds = append(fds, l.members[i].id)
			continue
		}
		w.nextFD++
		s := &simSock{id: w.nextFD, gen: gen, udp: l.udp, holders: 1, baton: true, l: l}
		w.fds[s.id] = s
		l.kernel = append(l.kernel, s) // bind + listen: joins the group at its end
		l.members = append(l.members, s)
		fds = append(fds, s.id)
	}
	return fds, nil
}

func (ss simSockets) Steer(gen int) error {
	w := ss.w
	w.tracef("  loop: steer to gen %d", gen)
	for _, l := range w.listeners {
		if l.index(gen) < 0 {
			return fmt.Errorf("generation %d has no socket", gen)
		}
		l.current, l.splitTo = gen, 0
		w.checkMirror(l, "steer")
	}
	return nil
}

func (ss simSockets) Split(from, to, percent int) error {
	w := ss.w
	w.tracef("  loop: split %d%% to gen %d from gen %d", percent, to, from)
	for _, l := range w.listeners {
		if l.index(from) < 0 || l.index(to) < 0 {
			return fmt.Errorf("generations %d and %d need sockets", from, to)
		}
		l.current, l.splitTo = from, 0
		if !l.udp {
			l.splitTo, l.splitPercent = to, percent
		}
		w.checkMirror(l, "split")
	}
	return nil
}

func (ss simSockets) Pending(int) int {
	if ss.w.rng.IntN(4) == 0 {
		return 1
	}
	return 0
}

func (ss simSockets) Relay(int, time.Duration, func(handoff.RelayEvent)) int { return 0 }

func (ss simSockets) Release(gen int) {
	w := ss.w
	w.tracef("  loop: release gen %d", gen)
	for _, l := range w.listeners {
		i := l.index(gen)
		if i < 0 || gen == l.current {
			continue
		}
		s := l.members[i]
		if !s.udp && !s.shut {
			s.shut = true
			l.kernelRemove(s)
		}
		s.baton = false
		w.closeFD(s)
		last := len(l.members) - 1
		l.members[i] = l.members[last]
		l.members = l.members[:last]
	}
}

func (ss simSockets) CloseAll() {
	w := ss.w
	w.closedAll = true
	for _, l := range w.listeners {
		for _, s := range l.members {
			if !s.udp && !s.shut {
				s.shut = true
				l.kernelRemove(s)
			}
			s.baton = false
			w.closeFD(s)
		}
		l.members = nil
	}
}

// relisten: a worker calls listen() again on a socket it shut down; the
// kernel puts it back, at the end of the group.
func (w *simWorld) relisten(p *simProc) {
	for _, s := range p.socks {
		if s.shut && !s.closed && !s.udp {
			s.shut = false
			l := w.listenerOf(s)
			l.kernel = append(l.kernel, s)
		}
	}
	p.relisten = false
}

// checkMirror: when baton computes a program from its copy of the group,
// its copy must be the kernel's group.
func (w *simWorld) checkMirror(l *simListener, what string) {
	if !slices.Equal(l.members, l.kernel) {
		w.violate("%s: baton's copy of the %s group %s differs from the kernel's %s", what, l.name(), gens(l.members), gens(l.kernel))
	}
}

func (l *simListener) name() string {
	if l.udp {
		return "udp"
	}
	return "tcp"
}

func gens(ss []*simSock) string {
	out := "["
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprint(s.gen)
	}
	return out + "]"
}

// checkSteered: the program baton attached picks, in the kernel's group,
// the generation baton steers to (and the split's); an index past the end
// is fine only while every member is that generation's.
func (w *simWorld) checkSteered() {
	if !w.steer || w.closedAll {
		return
	}
	for _, l := range w.listeners {
		check := func(gen int, role string) {
			k := l.index(gen)
			if k < 0 {
				w.violate("%s: steered generation %d has no socket in baton's copy", l.name(), gen)
				return
			}
			if k < len(l.kernel) {
				if l.kernel[k].gen != gen {
					w.violate("%s: the program picks index %d, in the kernel generation %d's socket, not %d's (%s); kernel %s, baton %s",
						l.name(), k, l.kernel[k].gen, gen, role, gens(l.kernel), gens(l.members))
				}
				return
			}
			for _, s := range l.kernel {
				if s.gen != gen {
					w.violate("%s: the program picks index %d, past the end of the kernel's group %s (%s)", l.name(), k, gens(l.kernel), role)
					return
				}
			}
		}
		check(l.current, "current")
		if l.splitTo != 0 {
			check(l.splitTo, "canary")
		}
	}
}
