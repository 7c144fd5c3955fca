//go:build linux

package supervisor

import (
	"time"
)

type timerKind int

const (
	evReadyDelay timerKind = iota
	evReadyTimeout
	evRestart
	evRetireKill
	evShutdownDelay
	evStopKill
	evRecycle
	evRecycleTimeout
	evHandover
	evCheckTimeout
	evWatchdog
	evWatchdogKill
	evCanaryStep
	evBakeEnd
	evCheckKill
	evGroupPoll
	evIdlePoll
)

// timerEvent is a timer that fired: its kind and what it is about.
type timerEvent struct {
	kind timerKind
	gen  int     // the generation it is about (evReadyTimeout, evRestart, evHandover, evCanaryStep, evBakeEnd, evIdlePoll)
	idx  int     // the slot (evRestart), the canary step (evCanaryStep), the generation baked (evBakeEnd)
	w    *worker // the worker it is about (evReadyDelay, evRetireKill, evWatchdog, evWatchdogKill, evRecycleTimeout)
	pgid int     // a check's process group (evCheckTimeout, evCheckKill)
}

// after arms ev to fire in d.
func (s *Supervisor) after(d time.Duration, ev timerEvent) {
	s.arm(d, ev)
}

// onTimer hands a timer that fired to the concept it is about.
func (s *Supervisor) onTimer(ev timerEvent) {
	switch ev.kind {
	case evReadyDelay:
		s.onReadyDelay(ev.w)
	case evReadyTimeout:
		s.onReadyTimeout(ev.gen)
	case evRestart:
		s.onRestart(ev.gen, ev.idx)
	case evRetireKill:
		s.onRetireKill(ev.w)
	case evShutdownDelay:
		s.stopAll()
	case evStopKill:
		s.onStopKill()
	case evHandover:
		s.onHandover(ev.gen)
	case evCheckTimeout:
		s.onCheckTimeout(ev.pgid)
	case evCheckKill:
		s.onCheckKill(ev.pgid)
	case evCanaryStep:
		s.onCanaryStep(ev.gen, ev.idx)
	case evBakeEnd:
		s.onBakeEnd(ev.gen, ev.idx)
	case evGroupPoll:
		s.onGroupPoll()
	case evIdlePoll:
		s.onIdlePoll(ev.gen)
	case evWatchdog:
		s.onWatchdogTimer(ev.w)
	case evWatchdogKill:
		s.onWatchdogKill(ev.w)
	case evRecycleTimeout:
		s.onRecycleTimeout(ev.w)
	case evRecycle:
		s.onRecycleTimer()
	}
}
