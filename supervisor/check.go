//go:build linux

package supervisor

import (
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// check is a reload's pre-flight check (BATON_RELOAD_CHECK) in progress.
type check struct {
	w        Worker
	why      string
	replies  []chan<- Outcome
	started  time.Time
	exited   bool
	code     int
	lineDone bool
	line     string
	timedOut bool
	// killed: its group got SIGKILL (timed out, or its canary aborted):
	// nothing of it is left to stop at its exit.
	killed bool
	// gone: reaped, its exit not yet handled.
	gone bool
	// canary: the check at the end of a canary step (BATON_CANARY_CHECK),
	// not a reload's.
	canary bool
}

// checkOutputGrace bounds how long the loop waits, after a check exits,
// for the end of its output: a child it left behind may hold the output
// open for as long as it lives, and the outcome is the check's exit
// status, not the end of its output.
const checkOutputGrace = 250 * time.Millisecond

// outputEnder is a check whose output can be made to end (main's
// startCheck): see Supervisor.Check.
type outputEnder interface{ EndOutput(grace time.Duration) }

// maxCheckLine bounds the check's last line of output in logs and in
// baton reload's answer.
const maxCheckLine = 200

// beginCheck makes c the check in progress, its last line of output to
// come on lines, and bounds it by BATON_READY_TIMEOUT.
func (s *Supervisor) beginCheck(c *check, lines <-chan string) {
	c.started = s.Now()
	s.checking, s.checkLines = c, lines
	s.after(s.opts.ReadyTimeout, timerEvent{kind: evCheckTimeout, pgid: c.w.PID()})
}

func (s *Supervisor) onCheckLine(line string) {
	if c := s.checking; c != nil {
		c.line, c.lineDone = line, true
		s.checkLines = nil
		s.finishCheck()
	}
}

// onCheckExit: the check's exit status is its outcome, decided once its
// last line is in, which is within checkOutputGrace. Whatever it left in
// its process group is noted now (right after the reap, its group id
// cannot name anyone else yet) and stopped once the outcome is decided.
func (s *Supervisor) onCheckExit(code int) {
	c := s.checking
	c.exited, c.code = true, code
	if pid := c.w.PID(); !c.killed && s.groupAlive(pid) {
		s.left[pid] = leftGroup{check: true}
	}
	if e, ok := c.w.(outputEnder); ok {
		e.EndOutput(checkOutputGrace)
	}
	s.finishCheck()
}

// stopCheckLeft sends SIGTERM to what check c left in its process group,
// and arms SIGKILL after the stop timeout.
func (s *Supervisor) stopCheckLeft(c *check, name string) {
	pid := c.w.PID()
	if !s.left[pid].check {
		return
	}
	s.Log.Warn().Int("pid", pid).Str("check", name).Msg("reload check left processes")
	s.sent(s.KillGroup(pid, unix.SIGTERM), pid, unix.SIGTERM, "reload check not killed")
	s.after(s.opts.StopTimeout, timerEvent{kind: evCheckKill, pgid: pid})
}

// onCheckKill: the stop timeout after a check's leftovers got SIGTERM.
func (s *Supervisor) onCheckKill(pgid int) {
	if !s.left[pgid].check {
		return // the group emptied (or baton's stop timeout killed it)
	}
	delete(s.left, pgid)
	if err := s.KillGroup(pgid, unix.SIGKILL); err == nil {
		s.Log.Warn().Int("pid", pgid).Dur("elapsed", s.opts.StopTimeout).Msg("reload check leftovers killed")
	} else {
		s.sent(err, pgid, unix.SIGKILL, "kill failed")
	}
}

func (s *Supervisor) onCheckTimeout(pid int) {
	c := s.checking
	if c == nil || c.w.PID() != pid || c.exited {
		return
	}
	// Its group goes; the exit and the end of its output follow.
	c.timedOut, c.killed = true, true
	s.Log.Warn().Int("pid", pid).Dur("timeout", s.opts.ReadyTimeout).Msg("reload check timed out")
	s.sent(c.w.Signal(unix.SIGKILL), pid, unix.SIGKILL, "reload check not killed")
}

// finishCheck decides once the check has exited and its output ended.
func (s *Supervisor) finishCheck() {
	c := s.checking
	if c == nil || !c.exited || !c.lineDone {
		return
	}
	s.checking, s.checkLines = nil, nil
	elapsed := s.Now().Sub(c.started)
	line := strings.TrimSpace(c.line)
	if len(line) > maxCheckLine {
		line = line[:maxCheckLine] + "…"
	}
	name := "BATON_RELOAD_CHECK"
	if c.canary {
		name = "BATON_CANARY_CHECK"
	}
	s.stopCheckLeft(c, name)
	if s.phase >= phaseDraining {
		// Once the stop signal went out, failWaiters answered them; a
		// check that ends during BATON_SHUTDOWN_DELAY, before that, takes
		// its waiters with it unless they are answered here.
		answerAll(&c.replies, Outcome{Gen: s.current.num, Reason: "baton is stopping"})
		return
	}
	reason := ""
	switch {
	case c.timedOut:
		reason = name + " did not finish within BATON_READY_TIMEOUT"
	case c.code != 0:
		reason = name + " exited " + strconv.Itoa(c.code)
		if line != "" {
			reason += ": " + line
		}
		s.Log.Warn().Int("code", c.code).Str("output", line).Dur("elapsed", elapsed).Str("check", name).Msg("reload check failed")
	default:
		s.Log.Info().Dur("elapsed", elapsed).Str("check", name).Msg("reload check passed")
	}
	switch {
	case c.canary:
		s.canaryChecked(reason)
	case reason != "":
		s.refuse(c.why, c.replies, reason)
	default:
		s.beginSwap(c.why, c.replies)
	}
}
