//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/internal/clip"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"
)

// Duration is a BATON_* duration: Go syntax (1.5s, 2m) or bare integer
// seconds (30). Negative values are refused.
type Duration time.Duration

// Decode implements envconfig.Decoder.
func (d *Duration) Decode(v string) error {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		*d = Duration(time.Duration(n) * time.Second)
		return nil
	}
	t, err := time.ParseDuration(v)
	if err != nil || t < 0 {
		return fmt.Errorf("want a duration like 1.5s, 2m or 30 (seconds), got %q", clip.Value(v))
	}
	*d = Duration(t)
	return nil
}

// Timeout is a Duration above zero (BATON_READY_TIMEOUT). Zero is refused
// rather than read as "no timeout": it would roll back every reload at
// once, and a reload that never ends would block every later one.
type Timeout time.Duration

// Decode implements envconfig.Decoder.
func (t *Timeout) Decode(v string) error {
	var d Duration
	if err := d.Decode(v); err != nil {
		return err
	}
	if d == 0 {
		return errors.New("want a duration above 0 like 60s (0 would roll back every reload at once; for a slow start give a long one, e.g. 10m)")
	}
	*t = Timeout(d)
	return nil
}

// ReadyMode is how a new worker counts as ready (BATON_READY).
type ReadyMode struct {
	Kind  string // "auto", "notify", "listen" or "delay"
	Delay time.Duration
}

// autoReadyAfter is how long a worker must stay up to count as ready in
// auto mode before any worker has sent READY=1.
const autoReadyAfter = 2 * time.Second

// Decode implements envconfig.Decoder.
func (r *ReadyMode) Decode(v string) error {
	switch {
	case v == "auto" || v == "notify" || v == "listen":
		*r = ReadyMode{Kind: v}
		return nil
	case strings.HasPrefix(v, "delay:"):
		var d Duration
		if err := d.Decode(strings.TrimPrefix(v, "delay:")); err == nil {
			*r = ReadyMode{Kind: "delay", Delay: time.Duration(d)}
			return nil
		}
	}
	return fmt.Errorf("want notify, auto, listen or delay:DURATION (e.g. delay:2s), got %q", clip.Value(v))
}

// Signal is a signal name or number: TERM, SIGTERM, 15.
type Signal unix.Signal

// ParseSignal accepts TERM, SIGTERM, term and 15 (1..64).
func ParseSignal(v string) (unix.Signal, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	if n, err := strconv.Atoi(s); err == nil {
		if n >= 1 && n <= 64 {
			return unix.Signal(n), nil
		}
		return 0, fmt.Errorf("signal number out of range 1..64: %q", clip.Value(v))
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	if sig := unix.SignalNum(s); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("want a signal name like TERM or a number, got %q", clip.Value(v))
}

// Decode implements envconfig.Decoder.
func (s *Signal) Decode(v string) error {
	sig, err := ParseSignal(v)
	if err != nil {
		return err
	}
	if sig == unix.SIGKILL || sig == unix.SIGSTOP {
		return fmt.Errorf("%s cannot be caught, so it cannot be used here", unix.SignalName(sig))
	}
	*s = Signal(sig)
	return nil
}

// NeverReceived reports whether sig is one of the signals baton never
// receives, the one list of them: main subscribes to every other one, and
// the decoders refuse them. They are:
//   - SIGKILL and SIGSTOP, which nobody can catch;
//   - SIGURG, which the runtime sends itself to preempt goroutines (runc
//     signals.go);
//   - SIGPROF, which the runtime consumes for profiling;
//   - SIGPIPE: the kernel raises it for baton's own writes to a peer that
//     went away (an HTTP client that resets, a log reader that died), and
//     nothing tells those apart from a kill(2), so a subscribed SIGPIPE
//     would be forwarded to every worker. Unsubscribed, the runtime ignores
//     it for sockets and pipes (os/signal), and baton never writes to
//     fd 1 or 2 through an os.File, where it would be fatal (main's
//     newLogger, stderrf);
//   - 32, 33 and 34, which the runtime keeps for itself (glibc's and musl's
//     internal signals) and never delivers.
func NeverReceived(sig unix.Signal) bool {
	switch sig {
	case unix.SIGKILL, unix.SIGSTOP, unix.SIGURG, unix.SIGPROF, unix.SIGPIPE, 32, 33, 34:
		return true
	}
	return false
}

// StopSignal is BATON_STOP_SIGNAL: the signal that asks a worker to finish.
// Set explicitly, receiving it also means shutdown, so it must be one baton
// receives and does not consume otherwise (SIGCHLD, SIGURG); main also
// refuses the reload signal.
type StopSignal unix.Signal

// Decode implements envconfig.Decoder.
func (s *StopSignal) Decode(v string) error {
	var sig Signal
	if err := sig.Decode(v); err != nil {
		return err
	}
	switch u := unix.Signal(sig); {
	case u == unix.SIGCHLD || u == unix.SIGURG:
		return fmt.Errorf("%s cannot be the stop signal: baton consumes it", unix.SignalName(u))
	case NeverReceived(u):
		return fmt.Errorf("signal %d cannot be the stop signal: baton never receives it", int(u))
	}
	*s = StopSignal(sig)
	return nil
}

// ReloadSignal is BATON_RELOAD_SIGNAL: a signal, or "none" (0).
type ReloadSignal unix.Signal

// Decode implements envconfig.Decoder.
func (r *ReloadSignal) Decode(v string) error {
	if strings.EqualFold(strings.TrimSpace(v), "none") {
		*r = 0
		return nil
	}
	var s Signal
	if err := s.Decode(v); err != nil {
		return fmt.Errorf("%v (or none)", err)
	}
	switch sig := unix.Signal(s); {
	case isShutdown(sig) || sig == unix.SIGCHLD || sig == unix.SIGURG:
		return fmt.Errorf("%s cannot be the reload signal", unix.SignalName(sig))
	case NeverReceived(sig):
		return fmt.Errorf("baton never receives signal %d, so it cannot be the reload signal", int(sig))
	}
	*r = ReloadSignal(s)
	return nil
}

// SignalMap is BATON_SIGNAL_MAP: `FROM:TO,...`; an empty TO drops FROM.
type SignalMap map[unix.Signal]unix.Signal

// Decode implements envconfig.Decoder.
func (m *SignalMap) Decode(v string) error {
	out := SignalMap{}
	for _, pair := range strings.Split(v, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok {
			return fmt.Errorf("want FROM:TO pairs like TERM:QUIT,WINCH: (empty TO drops), got %q", clip.Value(pair))
		}
		f, err := ParseSignal(from)
		if err != nil {
			return err
		}
		if err := mapSource(f); err != nil {
			return err
		}
		var t unix.Signal
		if strings.TrimSpace(to) != "" {
			if t, err = ParseSignal(to); err != nil {
				return err
			}
		}
		out[f] = t
	}
	*m = out
	return nil
}

// mapSource refuses a BATON_SIGNAL_MAP source that baton never rewrites:
// one nobody can catch, one baton consumes (SIGCHLD, SIGURG), or one it
// never receives. main also refuses the reload signal, consumed as well.
func mapSource(sig unix.Signal) error {
	switch {
	case sig == unix.SIGKILL || sig == unix.SIGSTOP:
		return fmt.Errorf("%s cannot be caught, so it cannot be rewritten", unix.SignalName(sig))
	case sig == unix.SIGCHLD || sig == unix.SIGURG:
		return fmt.Errorf("%s cannot be rewritten: baton consumes it", unix.SignalName(sig))
	case NeverReceived(sig):
		return fmt.Errorf("baton never receives signal %d, so it cannot be rewritten", int(sig))
	}
	return nil
}

// Apply maps sig; 0 means dropped.
func (m SignalMap) Apply(sig unix.Signal) unix.Signal {
	if to, ok := m[sig]; ok {
		return to
	}
	return sig
}

// Restart is the restart policy (BATON_RESTART).
type Restart string

// Restart policies.
const (
	RestartOnFailure Restart = "on-failure"
	RestartAlways    Restart = "always"
	RestartNever     Restart = "never"
)

// Decode implements envconfig.Decoder.
func (r *Restart) Decode(v string) error {
	switch Restart(v) {
	case RestartOnFailure, RestartAlways, RestartNever:
		*r = Restart(v)
		return nil
	}
	return fmt.Errorf("want on-failure, always or never, got %q", clip.Value(v))
}

// RestartLimit is BATON_RESTART_LIMIT: at most Count restarts within Window.
type RestartLimit struct {
	Count  int
	Window time.Duration
}

// Decode implements envconfig.Decoder.
func (l *RestartLimit) Decode(v string) error {
	c, w, ok := strings.Cut(v, "/")
	n, err := strconv.Atoi(strings.TrimSpace(c))
	var d Duration
	if !ok || err != nil || n < 1 || d.Decode(w) != nil || d == 0 {
		return fmt.Errorf("want COUNT/WINDOW like 5/60s (COUNT ≥ 1), got %q", clip.Value(v))
	}
	*l = RestartLimit{Count: n, Window: time.Duration(d)}
	return nil
}

// ExitMap is BATON_EXIT_MAP: `FROM:TO,...` applied to baton's own status.
type ExitMap map[int]int

// Decode implements envconfig.Decoder.
func (m *ExitMap) Decode(v string) error {
	out := ExitMap{}
	for _, pair := range strings.Split(v, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(pair), ":")
		f, err1 := strconv.Atoi(from)
		t, err2 := strconv.Atoi(to)
		if !ok || err1 != nil || err2 != nil || f < 0 || f > 255 || t < 0 || t > 255 {
			return fmt.Errorf("want FROM:TO exit codes 0..255 like 143:0, got %q", clip.Value(pair))
		}
		out[f] = t
	}
	*m = out
	return nil
}

// Apply remaps code.
func (m ExitMap) Apply(code int) int {
	if to, ok := m[code]; ok {
		return to
	}
	return code
}

// Count is a positive integer (BATON_WORKERS).
type Count int

// maxWorkers bounds BATON_WORKERS to something a container can run.
const maxWorkers = 1024

// Decode implements envconfig.Decoder.
func (c *Count) Decode(v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > maxWorkers {
		return fmt.Errorf("want a whole number from 1 to %d, got %q", maxWorkers, clip.Value(v))
	}
	*c = Count(n)
	return nil
}

func isShutdown(sig unix.Signal) bool {
	return sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT
}

// Size is a byte size (BATON_MAX_RSS): go-units' RAMInBytes syntax (512MiB,
// 1g, 1.5GB, all binary) plus Kubernetes' quantity suffixes (512Mi, 1Gi).
type Size int64

// Decode implements envconfig.Decoder.
func (s *Size) Decode(v string) error {
	t := strings.TrimSpace(v)
	// Kubernetes writes Ki, Mi, Gi, Ti; go-units wants KiB, MiB, ...
	if strings.HasSuffix(t, "i") {
		t += "B"
	}
	if strings.TrimLeft(t, "0123456789.") == "" {
		// 512 would mean 512 bytes, which no process's RSS is below.
		return fmt.Errorf("want a size with a unit like 512MiB, 512Mi or 1g, got %q (a bare number would be bytes)", clip.Value(v))
	}
	n, err := units.RAMInBytes(t)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a size like 512MiB, 512Mi or 1g, got %q", clip.Value(v))
	}
	*s = Size(n)
	return nil
}

// Handoff is BATON_HANDOFF: how generations share the listeners.
type Handoff string

// Handoff modes.
const (
	HandoffShared Handoff = "shared" // one socket per listener for every generation
	HandoffSteer  Handoff = "steer"  // a socket per generation, steered to in the kernel
)

// Decode implements envconfig.Decoder.
func (h *Handoff) Decode(v string) error {
	switch Handoff(v) {
	case HandoffShared, HandoffSteer:
		*h = Handoff(v)
		return nil
	}
	return fmt.Errorf("want shared or steer, got %q", clip.Value(v))
}

// CanarySteps is BATON_CANARY: PERCENT:DURATION steps, comma-separated
// (10%:30s,50%:1m). The new generation gets PERCENT of new connections
// for DURATION at each step, then all of them.
type CanarySteps []CanaryStep

// maxCanarySteps bounds BATON_CANARY to what a person would write.
const maxCanarySteps = 16

// Decode implements envconfig.Decoder.
func (c *CanarySteps) Decode(v string) error {
	var steps CanarySteps
	if strings.TrimSpace(v) == "" {
		*c = nil // set but empty: no canary
		return nil
	}
	for i, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		pct, dur, ok := strings.Cut(f, ":")
		if !ok {
			return fmt.Errorf("step %d: want PERCENT:DURATION like 10%%:30s, got %q", i+1, clip.Value(f))
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(pct), "%"))
		if err != nil || n < 1 || n > 99 {
			return fmt.Errorf("step %d: want a percent from 1%% to 99%%, got %q", i+1, clip.Value(pct))
		}
		var d Duration
		if err := d.Decode(dur); err != nil || d == 0 {
			return fmt.Errorf("step %d: want a duration above 0 like 30s or 1m, got %q", i+1, clip.Value(dur))
		}
		if len(steps) == maxCanarySteps {
			return fmt.Errorf("at most %d steps", maxCanarySteps)
		}
		steps = append(steps, CanaryStep{Percent: n, Duration: time.Duration(d)})
	}
	*c = steps
	return nil
}

// Total is how long the steps last together.
func (c CanarySteps) Total() time.Duration {
	var t time.Duration
	for _, s := range c {
		t += s.Duration
	}
	return t
}

// Drain is BATON_DRAIN (steer mode): what a generation that handed over
// waits for before its stop signal, once its own queue is empty. off:
// nothing. idle[:MAX]: each of its TCP connections seen idle at least
// once, for at most MAX (0 here: the caller's default).
type Drain struct {
	Idle bool
	Max  time.Duration
}

// Decode implements envconfig.Decoder.
func (d *Drain) Decode(v string) error {
	switch {
	case v == "off":
		*d = Drain{}
		return nil
	case v == "idle":
		*d = Drain{Idle: true}
		return nil
	case strings.HasPrefix(v, "idle:"):
		var max Duration
		if err := max.Decode(strings.TrimPrefix(v, "idle:")); err == nil && max > 0 {
			*d = Drain{Idle: true, Max: time.Duration(max)}
			return nil
		}
	}
	return fmt.Errorf("want off, idle or idle:MAX with MAX a duration above 0 (e.g. idle:30s), got %q", clip.Value(v))
}
