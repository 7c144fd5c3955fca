//go:build linux

package supervisor

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDecoders: the accepted syntaxes of every BATON_* value type, and a
// rejected one each (the bad-input table in test/ covers the messages).
func TestDecoders(t *testing.T) {
	var d Duration
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "1.5s": 1500 * time.Millisecond, "2m": 2 * time.Minute, "0": 0} {
		if err := d.Decode(in); err != nil || time.Duration(d) != want {
			t.Errorf("Duration(%q) = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{"-1s", "soon", "1.5", ""} {
		if d.Decode(in) == nil {
			t.Errorf("Duration(%q) accepted", in)
		}
	}
	var r ReadyMode
	if err := r.Decode("delay:250ms"); err != nil || r.Kind != "delay" || r.Delay != 250*time.Millisecond {
		t.Errorf("ReadyMode delay:250ms = %+v, %v", r, err)
	}
	var s Signal
	for _, in := range []string{"TERM", "SIGTERM", "term", "15"} {
		if err := s.Decode(in); err != nil || unix.Signal(s) != unix.SIGTERM {
			t.Errorf("Signal(%q) = %v, %v", in, unix.Signal(s), err)
		}
	}
	var rs ReloadSignal
	if err := rs.Decode("none"); err != nil || rs != 0 {
		t.Errorf("ReloadSignal(none) = %v, %v", rs, err)
	}
	var m SignalMap
	if err := m.Decode("TERM:QUIT, WINCH:"); err != nil || m.Apply(unix.SIGTERM) != unix.SIGQUIT || m.Apply(unix.SIGWINCH) != 0 || m.Apply(unix.SIGUSR1) != unix.SIGUSR1 {
		t.Errorf("SignalMap = %v, %v", m, err)
	}
	// Sources baton never receives or always consumes are refused: the
	// rewrite could never apply.
	for _, bad := range []string{"KILL:TERM", "STOP:TERM", "9:", "32:TERM", "33:TERM", "34:", "PIPE:TERM", "PROF:TERM", "CHLD:TERM", "URG:"} {
		if err := m.Decode(bad); err == nil {
			t.Errorf("SignalMap accepted %q", bad)
		}
	}
	var l RestartLimit
	if err := l.Decode("5/60s"); err != nil || l.Count != 5 || l.Window != time.Minute {
		t.Errorf("RestartLimit = %+v, %v", l, err)
	}
	var e ExitMap
	if err := e.Decode("143:0,3:9"); err != nil || e.Apply(143) != 0 || e.Apply(3) != 9 || e.Apply(1) != 1 {
		t.Errorf("ExitMap = %v, %v", e, err)
	}
	var z Size
	for in, want := range map[string]int64{"512Mi": 512 << 20, "512MiB": 512 << 20, "1g": 1 << 30, "1Gi": 1 << 30, "1.5GB": 3 << 29} {
		if err := z.Decode(in); err != nil || int64(z) != want {
			t.Errorf("Size(%q) = %d, %v; want %d", in, z, err, want)
		}
	}
}
