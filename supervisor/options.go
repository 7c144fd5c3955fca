//go:build linux

package supervisor

import (
	"time"

	"golang.org/x/sys/unix"
)

// Options is the supervisor's configuration, already validated.
type Options struct {
	Workers       int
	Ready         ReadyMode
	ReadyTimeout  time.Duration
	ReloadSignal  unix.Signal // 0: reloads by signal disabled
	StopSignal    unix.Signal
	StopSignalSet bool // BATON_STOP_SIGNAL given explicitly
	StopTimeout   time.Duration
	ShutdownDelay time.Duration
	SignalMap     SignalMap
	ExitMap       ExitMap // applied last, to the status Run returns
	Restart       Restart
	RestartLimit  RestartLimit
	MaxRSS        int64         // bytes; 0: off
	MaxAge        time.Duration // 0: off
	// SteerSettle is set in steer mode (BATON_HANDOFF=steer): how long
	// after steering new connections to a new generation the old one's
	// queue is first looked at. Connections whose handshake began before
	// the switch still land in the old socket's queue for about one round
	// trip. 0 (shared mode): the old generation retires at once.
	SteerSettle time.Duration
	// DrainIdle (BATON_DRAIN=idle[:MAX], steer mode) bounds the wait, after
	// a generation handed over and its queue emptied, for each of its TCP
	// connections to be seen idle before its stop signal. 0: no wait.
	DrainIdle time.Duration
	// Surge (BATON_SURGE) bounds a reload: at most Workers+Surge workers
	// alive at once, draining ones included. Surge >= Workers (or 0) is a
	// whole-generation swap.
	Surge int
	// Canary (BATON_CANARY, steer mode) are the shares of new connections
	// the new generation gets, step by step, before all of them.
	Canary []CanaryStep
	// Bake (BATON_BAKE, steer mode) keeps the old generation parked this
	// long after the cutover, to return to at once if a new worker dies.
	Bake time.Duration
	// Watchdog (BATON_WATCHDOG): a worker that sent WATCHDOG=1 and then
	// nothing for this long is hung. 0: off.
	Watchdog time.Duration
	// PID1 is true when baton is its namespace's init: the stop signal then
	// reaches every process in the namespace, and baton waits for all of
	// them before it exits.
	PID1 bool
	// Subreaper is true when baton is a child subreaper and not PID 1
	// (docker run --init): what a worker leaves in its process group when
	// it exits comes back to baton, which stops it with the workers and
	// waits for it before it exits, as PID 1 waits for every process.
	Subreaper bool
}
