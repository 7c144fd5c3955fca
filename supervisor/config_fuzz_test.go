//go:build linux

package supervisor

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/internal/decodetest"
)

// Fuzz targets for the BATON_* decoders. Each one checks, for any value,
// the contract of decodetest (deterministic, one-line errors quoting at
// most 16 consecutive bytes of the value, a failed Decode changes nothing)
// and what a decoded value must satisfy; where a value has a canonical
// spelling, that spelling decodes to the same value. Their seeds, and the
// corpus in testdata/fuzz, run as ordinary tests under go test; test/fuzz
// runs the fuzzer itself.

// FuzzDuration: BATON_*_TIMEOUT, _DELAY and _AGE, BATON_READY_TIMEOUT and
// BATON_READY. A Duration is never negative; a Timeout is exactly a
// Duration above zero; "delay:V" is a ReadyMode exactly when V is a
// Duration, with that delay.
func FuzzDuration(f *testing.F) {
	for _, v := range []string{
		"30", "0", " 15 ", "1.5s", "2m", "1h2m3.5s", "250ms", "1us", "1µs", "-1s", "-0", "+5s", "1.5",
		"soon", "", "4294967295", "4294967296", "9223372036854775807ns", "9999999999h", "0x10",
		"auto", "notify", "delay:2s", "delay:", "0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := decodetest.Decode[Duration](t, v)
		if err == nil {
			if d < 0 {
				t.Errorf("Duration(%q) = %v, negative", v, time.Duration(d))
			}
			if back, err := decodetest.Decode[Duration](t, time.Duration(d).String()); err != nil || back != d {
				t.Errorf("Duration(%q) = %v, which decodes to %v, %v", v, time.Duration(d), time.Duration(back), err)
			}
		}

		to, terr := decodetest.Decode[Timeout](t, v)
		if want := err == nil && d > 0; (terr == nil) != want || (want && time.Duration(to) != time.Duration(d)) {
			t.Errorf("Timeout(%q) = %v, %v; Duration gave %v, %v", v, time.Duration(to), terr, time.Duration(d), err)
		}

		r, rerr := decodetest.Decode[ReadyMode](t, "delay:"+v)
		if (rerr == nil) != (err == nil) || (err == nil && r != ReadyMode{Kind: "delay", Delay: time.Duration(d)}) {
			t.Errorf("ReadyMode(delay:%q) = %+v, %v; Duration gave %v, %v", v, r, rerr, time.Duration(d), err)
		}

		r, rerr = decodetest.Decode[ReadyMode](t, v)
		if rerr == nil {
			canon := r.Kind
			switch {
			case r.Kind == "delay" && r.Delay >= 0:
				canon += ":" + r.Delay.String()
			case (r.Kind == "auto" || r.Kind == "notify") && r.Delay == 0:
			default:
				t.Fatalf("ReadyMode(%q) = %+v", v, r)
			}
			if back, err := decodetest.Decode[ReadyMode](t, canon); err != nil || back != r {
				t.Errorf("ReadyMode(%q) = %+v, whose spelling %q decodes to %+v, %v", v, r, canon, back, err)
			}
		}
	})
}

// neverStop are the signals BATON_STOP_SIGNAL refuses: uncatchable ones,
// the ones baton consumes (CHLD, URG) and the ones it never receives
// (PIPE, PROF, 32-34: see NeverReceived).
var neverStop = []unix.Signal{unix.SIGKILL, unix.SIGSTOP, unix.SIGCHLD, unix.SIGURG, unix.SIGPIPE, unix.SIGPROF, 32, 33, 34}

// neverReload adds the shutdown signals to neverStop.
var neverReload = append(slices.Clip(neverStop), unix.SIGTERM, unix.SIGINT, unix.SIGQUIT)

// FuzzSignal: ParseSignal and the signal decoders built on it. A parsed
// signal is 1..64 and its number and names parse back to it; Signal is
// ParseSignal without KILL and STOP; StopSignal and ReloadSignal refuse
// exactly the signals they cannot use, and ReloadSignal takes "none".
func FuzzSignal(f *testing.F) {
	for _, v := range []string{
		"TERM", "SIGTERM", "term", "15", " hup ", "0", "64", "65", "-1", "+9", "KILL", "SIGSTOP", "CHLD", "URG",
		"PIPE", "PROF", "32", "33", "34", "35", "RTMIN", "SIGIOT", "none", "NONE", " None ", "SIG", "", "sig15",
		"0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		sig, perr := ParseSignal(v)
		if perr != nil {
			again := func(v string) string { _, err := ParseSignal(v); return decodetest.Message(err) }
			if msg := decodetest.Check(v, perr.Error(), again); msg != "" {
				t.Errorf("ParseSignal(%q): error %s", v, msg)
			}
		} else {
			if sig < 1 || sig > 64 {
				t.Fatalf("ParseSignal(%q) = %d, outside 1..64", v, sig)
			}
			spellings := []string{strconv.Itoa(int(sig))}
			if name := unix.SignalName(sig); name != "" {
				spellings = append(spellings, name, strings.TrimPrefix(name, "SIG"), strings.ToLower(name))
			}
			for _, s := range spellings {
				if back, err := ParseSignal(s); err != nil || back != sig {
					t.Errorf("ParseSignal(%q) = %d, but %q gives %d, %v", v, sig, s, back, err)
				}
			}
		}

		s, serr := decodetest.Decode[Signal](t, v)
		if want := perr == nil && sig != unix.SIGKILL && sig != unix.SIGSTOP; (serr == nil) != want || (want && unix.Signal(s) != sig) {
			t.Errorf("Signal(%q) = %d, %v; ParseSignal gave %d, %v", v, s, serr, sig, perr)
		}

		st, sterr := decodetest.Decode[StopSignal](t, v)
		if want := perr == nil && !slices.Contains(neverStop, sig); (sterr == nil) != want || (want && unix.Signal(st) != sig) {
			t.Errorf("StopSignal(%q) = %d, %v; ParseSignal gave %d, %v", v, st, sterr, sig, perr)
		}

		r, rerr := decodetest.Decode[ReloadSignal](t, v)
		switch none := strings.EqualFold(strings.TrimSpace(v), "none"); {
		case none && (rerr != nil || r != 0):
			t.Errorf("ReloadSignal(%q) = %d, %v; want 0 (none)", v, r, rerr)
		case !none:
			if want := perr == nil && !slices.Contains(neverReload, sig); (rerr == nil) != want || (want && unix.Signal(r) != sig) {
				t.Errorf("ReloadSignal(%q) = %d, %v; ParseSignal gave %d, %v", v, r, rerr, sig, perr)
			}
		}
	})
}

// FuzzSignalMap: BATON_SIGNAL_MAP. Every pair of a decoded map maps a
// signal 1..64 that baton can receive to one 1..64, or to 0 (dropped); the map has at most one
// entry a pair; its canonical spelling decodes to the same map.
func FuzzSignalMap(f *testing.F) {
	for _, v := range []string{
		"TERM:QUIT", "TERM:QUIT, WINCH:", "WINCH: ", "1:2,1:3", "USR1:64", "USR1:65", "TERM", ":QUIT", "TERM:BOGUS",
		"", ",", "TERM:QUIT,", " : ", "sigterm:sigquit", "0123456789abcdefSECRET:TERM", "TERM:0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		m, err := decodetest.Decode[SignalMap](t, v)
		if err != nil {
			return
		}
		if len(m) == 0 || len(m) > strings.Count(v, ",")+1 {
			t.Errorf("SignalMap(%q) = %v: %d entries from %d pairs", v, m, len(m), strings.Count(v, ",")+1)
		}
		var pairs []string
		for from, to := range m {
			if from < 1 || from > 64 || to < 0 || to > 64 {
				t.Errorf("SignalMap(%q) maps %d to %d", v, from, to)
			}
			if mapSource(from) != nil {
				t.Errorf("SignalMap(%q) rewrites %d, which baton never receives", v, from)
			}
			if to == 0 {
				pairs = append(pairs, fmt.Sprintf("%d:", from))
			} else {
				pairs = append(pairs, fmt.Sprintf("%d:%d", from, to))
			}
		}
		canon := strings.Join(pairs, ",")
		if back, err := decodetest.Decode[SignalMap](t, canon); err != nil || !reflect.DeepEqual(back, m) {
			t.Errorf("SignalMap(%q) = %v, whose spelling %q decodes to %v, %v", v, m, canon, back, err)
		}
	})
}

// FuzzRestart: BATON_RESTART and BATON_RESTART_LIMIT. A policy is one of
// the three, spelled exactly; a limit allows at least one restart in a
// window above zero, and COUNT/WINDOW spelled back decodes to it.
func FuzzRestart(f *testing.F) {
	for _, v := range []string{
		"on-failure", "always", "never", "Always", " never", "", "5/60s", "1/1", " 3 / 2m ", "0/60s", "5/0", "5/-1s",
		"5", "/60s", "5/", "9223372036854775807/4294967295", "5/60s/1", "0123456789abcdefSECRET/60s",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r, err := decodetest.Decode[Restart](t, v)
		if ok := v == "on-failure" || v == "always" || v == "never"; (err == nil) != ok || (ok && string(r) != v) {
			t.Errorf("Restart(%q) = %q, %v", v, r, err)
		}

		l, err := decodetest.Decode[RestartLimit](t, v)
		if err != nil {
			return
		}
		if l.Count < 1 || l.Window <= 0 {
			t.Errorf("RestartLimit(%q) = %+v", v, l)
		}
		canon := fmt.Sprintf("%d/%s", l.Count, l.Window)
		if back, err := decodetest.Decode[RestartLimit](t, canon); err != nil || back != l {
			t.Errorf("RestartLimit(%q) = %+v, whose spelling %q decodes to %+v, %v", v, l, canon, back, err)
		}
	})
}

// FuzzExitMap: BATON_EXIT_MAP. Every pair maps an exit status 0..255 to
// one 0..255, at most one entry a pair; the canonical spelling decodes to
// the same map.
func FuzzExitMap(f *testing.F) {
	for _, v := range []string{
		"143:0", "143:0,3:9", " 1:2 , 3:4 ", "0:255", "256:0", "0:256", "-1:0", "143", "143:", ":0", "1:2:3", "",
		"+1:2", "1 :2", "01:002", "0123456789abcdefSECRET:1",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		m, err := decodetest.Decode[ExitMap](t, v)
		if err != nil {
			return
		}
		if len(m) == 0 || len(m) > strings.Count(v, ",")+1 {
			t.Errorf("ExitMap(%q) = %v: %d entries from %d pairs", v, m, len(m), strings.Count(v, ",")+1)
		}
		var pairs []string
		for from, to := range m {
			if from < 0 || from > 255 || to < 0 || to > 255 {
				t.Errorf("ExitMap(%q) maps %d to %d", v, from, to)
			}
			pairs = append(pairs, fmt.Sprintf("%d:%d", from, to))
		}
		canon := strings.Join(pairs, ",")
		if back, err := decodetest.Decode[ExitMap](t, canon); err != nil || !reflect.DeepEqual(back, m) {
			t.Errorf("ExitMap(%q) = %v, whose spelling %q decodes to %v, %v", v, m, canon, back, err)
		}
	})
}

// FuzzCount: BATON_WORKERS is 1..1024 and spelled back decodes to itself.
func FuzzCount(f *testing.F) {
	for _, v := range []string{"1", "4", " 8 ", "1024", "1025", "0", "-1", "+3", "007", "many", "", "1e3", "9223372036854775808"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, err := decodetest.Decode[Count](t, v)
		if err != nil {
			return
		}
		if c < 1 || c > 1024 {
			t.Errorf("Count(%q) = %d, outside 1..1024", v, c)
		}
		if back, err := decodetest.Decode[Count](t, strconv.Itoa(int(c))); err != nil || back != c {
			t.Errorf("Count(%q) = %d, which decodes to %d, %v", v, c, back, err)
		}
	})
}

// FuzzSize: BATON_MAX_RSS is above zero, has a unit (a bare number is
// refused: 512 would be bytes), and its number of bytes, spelt with the
// unit B, decodes to itself (below 2^53: go-units reads the number as a
// float64).
func FuzzSize(f *testing.F) {
	for _, v := range []string{
		"512MiB", "512Mi", "1g", "1Gi", "1.5GB", "1 GiB", "100", "0", "0.5", "-1", "1Ki", "1i", "1e3", "lots", "",
		"9223372036854775807", "8191p", "8192p", "1.0.0m", "512 ", "0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := decodetest.Decode[Size](t, v)
		if err != nil {
			return
		}
		if s <= 0 {
			t.Errorf("Size(%q) = %d", v, s)
		}
		if strings.TrimLeft(strings.TrimSpace(v), "0123456789.") == "" {
			t.Errorf("Size(%q) = %d: a bare number has no unit", v, s)
		}
		if s <= 1<<53 {
			if back, err := decodetest.Decode[Size](t, strconv.FormatInt(int64(s), 10)+"B"); err != nil || back != s {
				t.Errorf("Size(%q) = %d, which decodes to %d, %v", v, s, back, err)
			}
		}
	})
}

// FuzzCanary: BATON_CANARY decodes to at most 16 steps, each with a
// percent from 1 to 99 and a duration above zero, and their canonical
// spelling (P%:D,...) decodes to the same steps.
func FuzzCanary(f *testing.F) {
	for _, v := range []string{
		"10%:30s", "10%:30s,50%:1m", " 5 % : 2s , 99%:1h", "10:30", "100%:1s", "0%:1s", "1%:0", "-5%:1s", "10%",
		"10%:30s,", ",", "", "  ", "50%:-1s", "1%:1s,2%:1s,3%:1s,4%:1s,5%:1s,6%:1s,7%:1s,8%:1s,9%:1s,10%:1s,11%:1s,12%:1s,13%:1s,14%:1s,15%:1s,16%:1s,17%:1s",
		"10%%:1s", "0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, err := decodetest.Decode[CanarySteps](t, v)
		if err != nil {
			return
		}
		if len(c) > maxCanarySteps {
			t.Errorf("CanarySteps(%q): %d steps", v, len(c))
		}
		var spelled []string
		for _, s := range c {
			if s.Percent < 1 || s.Percent > 99 || s.Duration <= 0 {
				t.Errorf("CanarySteps(%q) has step %+v", v, s)
			}
			spelled = append(spelled, fmt.Sprintf("%d%%:%s", s.Percent, s.Duration))
		}
		if back, err := decodetest.Decode[CanarySteps](t, strings.Join(spelled, ",")); err != nil || !reflect.DeepEqual(back, c) {
			t.Errorf("CanarySteps(%q) = %v, which decodes to %v, %v", v, c, back, err)
		}
	})
}

// FuzzDrain: BATON_DRAIN. off and idle exactly, or idle:MAX with MAX a
// duration above zero, which idle:MAX spelled back decodes to.
func FuzzDrain(f *testing.F) {
	for _, v := range []string{"off", "idle", "idle:30s", "idle:30", "idle:0", "idle:-1s", "idle:", "Idle", "idle:1ns", "busy", "idle:0123456789abcdefSECRET"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := decodetest.Decode[Drain](t, v)
		if err != nil {
			if v == "off" || v == "idle" {
				t.Errorf("Drain(%q): %v", v, err)
			}
			return
		}
		switch {
		case v == "off" && d != Drain{}, v == "idle" && d != Drain{Idle: true}:
			t.Errorf("Drain(%q) = %+v", v, d)
		case v != "off" && v != "idle" && (!d.Idle || d.Max <= 0 || !strings.HasPrefix(v, "idle:")):
			t.Errorf("Drain(%q) = %+v", v, d)
		}
		if d.Max > 0 {
			if back, err := decodetest.Decode[Drain](t, "idle:"+d.Max.String()); err != nil || back != d {
				t.Errorf("Drain(idle:%s) = %+v, %v; want %+v", d.Max, back, err, d)
			}
		}
	})
}
