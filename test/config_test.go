package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// runBatonPlain runs baton to completion as a plain child and returns its
// exit code and stderr.
func runBatonPlain(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(batonBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run baton: %v", err)
		}
		code = ee.ExitCode()
	}
	return code, out.String(), errb.String()
}

// TestBadInput: every variable's malformed value gives exit 2, one line
// naming the variable, and no worker started. Each case runs a second time
// with BATON_LISTEN set (unless it sets BATON_LISTEN itself): baton checks
// everything before it opens anything, so there is still only that line
// (no "listener opened" first), and the port is free afterwards.
func TestBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	secret := "0123456789abcdefSECRET-TAIL"
	cases := []struct {
		name, value, want string
		extra             []string // other variables set with it
	}{
		{"BATON_LISTEN", "foo://x:1", "BATON_LISTEN", nil},
		{"BATON_LISTEN", "localhost", "BATON_LISTEN", nil},
		{"BATON_LISTEN", busy.Addr().String(), busy.Addr().String(), nil}, // bind failure names the address
		{"BATON_WORKERS", "0", "BATON_WORKERS", nil},
		{"BATON_WORKERS", "many", "BATON_WORKERS", nil},
		{"BATON_READY", "sometimes", "BATON_READY", nil},
		{"BATON_READY", "delay:soon", "BATON_READY", nil},
		{"BATON_READY_TIMEOUT", "soon", "BATON_READY_TIMEOUT", nil},
		{"BATON_RELOAD_SIGNAL", "NOPE", "BATON_RELOAD_SIGNAL", nil},
		{"BATON_RELOAD_SIGNAL", "TERM", "BATON_RELOAD_SIGNAL", nil},
		{"BATON_STOP_SIGNAL", "KILL", "BATON_STOP_SIGNAL", nil},
		{"BATON_STOP_TIMEOUT", "-1s", "BATON_STOP_TIMEOUT", nil},
		{"BATON_SHUTDOWN_DELAY", "later", "BATON_SHUTDOWN_DELAY", nil},
		{"BATON_SIGNAL_MAP", "TERM", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "TERM:BOGUS", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "KILL:TERM", "BATON_SIGNAL_MAP", nil}, // sources baton never receives
		{"BATON_SIGNAL_MAP", "STOP:TERM", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "32:TERM", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "34:", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "PIPE:TERM", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "CHLD:TERM", "BATON_SIGNAL_MAP", nil},
		{"BATON_SIGNAL_MAP", "HUP:USR1", "BATON_SIGNAL_MAP", []string{"BATON_WORKERS=2"}}, // the reload signal
		{"BATON_RESTART", "sometimes", "BATON_RESTART", nil},
		{"BATON_RESTART_LIMIT", "5", "BATON_RESTART_LIMIT", nil},
		{"BATON_EXIT_MAP", "143", "BATON_EXIT_MAP", nil},
		{"BATON_EXIT_MAP", "143:999", "BATON_EXIT_MAP", nil},
		{"BATON_USER", "no-such-user-here", "BATON_USER", nil},
		{"BATON_USER", "1000:", "BATON_USER", nil},
		{"BATON_ULIMITS", "nofile=abc", "BATON_ULIMITS", nil},
		{"BATON_ULIMITS", "bogus=1:2", "BATON_ULIMITS", nil},
		{"BATON_ULIMITS", "nofile=-5:10", "BATON_ULIMITS", nil},
		{"BATON_MAX_RSS", "lots", "BATON_MAX_RSS", nil},
		{"BATON_MAX_AGE", "old", "BATON_MAX_AGE", nil},
		{"BATON_WATCH", ",,", "BATON_WATCH", nil},
		{"BATON_HTTP_ADDR", "nocolon", "BATON_HTTP_ADDR", nil},
		{"BATON_HTTP_ADDR", "127.0.0.1:99999", "BATON_HTTP_ADDR", nil},
		{"BATON_HTTP_ADDR", busy.Addr().String(), "BATON_HTTP_ADDR", nil},
		{"BATON_SUBREAPER", "maybe", "BATON_SUBREAPER", nil},
		{"BATON_LOG_LEVEL", "loud", "BATON_LOG_LEVEL", nil},
		{"BATON_LOG_FORMAT", "xml", "BATON_LOG_FORMAT", nil},
		{"BATON_FOO", "1", "BATON_FOO", nil},
		{"BATON_READY_TIMEOUT", secret, "BATON_READY_TIMEOUT", nil},
		{"BATON_READY_TIMEOUT", "0", "BATON_READY_TIMEOUT", nil},
		{"BATON_STOP_SIGNAL", "CHLD", "BATON_STOP_SIGNAL", nil},
		{"BATON_STOP_SIGNAL", "URG", "BATON_STOP_SIGNAL", nil},
		{"BATON_STOP_SIGNAL", "PIPE", "BATON_STOP_SIGNAL", nil},
		{"BATON_STOP_SIGNAL", "USR1", "BATON_STOP_SIGNAL", []string{"BATON_RELOAD_SIGNAL=USR1"}},
		{"BATON_USER", "4294967295", "BATON_USER", nil},
		{"BATON_USER", "0:4294967295", "BATON_USER", nil},
		{"BATON_WATCH", "/" + secret + "/app.conf", "BATON_WATCH", nil},
		{"BATON_LISTEN", "/" + secret + "/app.sock", "BATON_LISTEN", nil},
		{"BATON_LISTEN", "/tmp/a.sock?mode=" + secret, "BATON_LISTEN", nil},
		{"BATON_HANDOFF", "steered", "BATON_HANDOFF", nil},
		{"BATON_RELOAD_CHECK", "/no/such/check --dry-run", "BATON_RELOAD_CHECK", nil},
		{"BATON_RELOAD_CHECK", "   ", "BATON_RELOAD_CHECK", nil},
		{"BATON_SURGE", "0", "BATON_SURGE", nil},
		{"BATON_SURGE", "1", "BATON_SURGE", []string{"BATON_WORKERS=2", "BATON_HANDOFF=steer"}},
		{"BATON_WATCHDOG", "soon", "BATON_WATCHDOG", nil},
		{"BATON_CANARY", "10%", "BATON_CANARY", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY", "100%:30s", "BATON_CANARY", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY", "0%:30s", "BATON_CANARY", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY", "10%:0s", "BATON_CANARY", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY", "10%:30s,,50%:1m", "BATON_CANARY", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY", "10%:" + secret, "BATON_CANARY", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY", "10%:30s", "BATON_CANARY", nil}, // needs steer mode
		{"BATON_BAKE", "a while", "BATON_BAKE", []string{"BATON_HANDOFF=steer"}},
		{"BATON_BAKE", "5m", "BATON_BAKE", nil}, // needs steer mode
		{"BATON_BIND", "yes", "BATON_BIND", nil},
		{"BATON_DRAIN", "idle", "BATON_DRAIN", nil}, // needs steer mode
		{"BATON_DRAIN", "idle:0", "BATON_DRAIN", []string{"BATON_HANDOFF=steer"}},
		{"BATON_DRAIN", "busy", "BATON_DRAIN", []string{"BATON_HANDOFF=steer"}},
		{"BATON_DRAIN", "idle:" + secret, "BATON_DRAIN", []string{"BATON_HANDOFF=steer"}},
		{"BATON_CANARY_CHECK", "/no/such/check", "BATON_CANARY_CHECK", []string{"BATON_HANDOFF=steer", "BATON_CANARY=10%:30s"}},
		{"BATON_CANARY_CHECK", "true", "BATON_CANARY_CHECK", []string{"BATON_HANDOFF=steer"}}, // without BATON_CANARY
	}
	port := strconv.Itoa(freePort(t))
	seen := map[string]bool{}
	for _, c := range cases {
		seen[c.name] = true
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			env := append([]string{c.name + "=" + c.value}, c.extra...)
			badInput(t, env, c.want)
			if c.name != "BATON_LISTEN" {
				listen := "127.0.0.1:" + port
				t.Run("BATON_LISTEN="+listen, func(t *testing.T) {
					badInput(t, append(env, "BATON_LISTEN="+listen), c.want)
					l, err := net.Listen("tcp", listen)
					if err != nil {
						t.Fatalf("after baton refused to start, port %s is not free: %v", port, err)
					}
					l.Close()
				})
			}
		})
	}
	// Every variable baton documents must be in the table above.
	_, help, _ := runBatonPlain(t, nil, "help")
	for _, f := range strings.Fields(help) {
		f, _, _ = strings.Cut(strings.TrimRight(f, ":,;.)"), "=") // BATON_READY=listen names BATON_READY
		if strings.HasPrefix(f, "BATON_") && !seen[f] {
			t.Errorf("%s has no bad-input case", f)
		}
	}
}

// badInput runs baton with env and checks that it refused to start: exit
// 2, one line on stderr naming want (quoting at most 16 characters of the
// value), and no worker started.
func badInput(t *testing.T, env []string, want string) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "started")
	code, _, stderr := runBatonPlain(t, env, "--", "touch", marker)
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("stderr %q: want one line naming %s", stderr, want)
	}
	if strings.Contains(stderr, "SECRET-TAIL") {
		t.Errorf("stderr quotes more than 16 characters of the value: %q", stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a worker was started")
	}
}

// TestUnprefixedVariablesIgnored: envconfig falls back to bare names for
// tagged fields; none of baton's may, so USER, PORT, LISTEN, WORKERS and
// friends must not change anything.
func TestUnprefixedVariablesIgnored(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{
		"USER=nobody", "PORT=1", "LISTEN=127.0.0.1:1", "WORKERS=3", "READY=notify", "RESTART=always",
		"ULIMITS=nofile=1:1", "STOP_SIGNAL=KILL", "EXIT_MAP=0:9", "LOG_LEVEL=loud", "HTTP_ADDR=x", "WATCH=/nonexistent",
	}}, "sh", "-c", "exit 0")
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if n := b.Count("worker started"); n != 1 {
		t.Fatalf("%d workers started, want 1", n)
	}
	if b.Count("listener opened") != 0 {
		t.Fatal("a listener was opened from an unprefixed variable")
	}
}

// TestEmptyMeansUnset: BATON_X= applies the default.
func TestEmptyMeansUnset(t *testing.T) {
	code, _, stderr := runBatonPlain(t, []string{"BATON_LOG_LEVEL=", "BATON_WORKERS=", "BATON_LOG_FORMAT=json"}, "--", "sh", "-c", "exit 4")
	if code != 4 {
		t.Fatalf("exit %d, want 4; stderr %s", code, stderr)
	}
}

// TestCommandNotSubcommand: after --, a program name is never a
// subcommand; before it, the subcommands work.
func TestCommandNotSubcommand(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"version", "help", "reload", "health", "demo", "hello"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho user-program-"+name+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PATH=" + dir + ":" + os.Getenv("PATH"), "BATON_LOG_FORMAT=json"}
	for _, name := range []string{"version", "help", "reload", "health", "demo", "hello"} {
		code, out, _ := runBatonPlain(t, env, "--", name)
		if code != 0 || strings.TrimSpace(out) != "user-program-"+name {
			t.Errorf("baton -- %s: exit %d, stdout %q; want the user's program", name, code, out)
		}
	}
	code, out, _ := runBatonPlain(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "baton ") {
		t.Errorf("baton version: exit %d, %q", code, out)
	}
	code, out, _ = runBatonPlain(t, nil, "--help")
	if code != 0 || !strings.Contains(out, "BATON_LISTEN") {
		t.Errorf("baton --help: exit %d, no variable list", code)
	}
	code, _, stderr := runBatonPlain(t, nil, "--bogus")
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("baton --bogus: exit %d, stderr %q; want 2 and one line", code, stderr)
	}
}

// TestTTYForeground: when stdin is baton's controlling terminal, in plain
// mode the worker gets the terminal's foreground, so Ctrl-C reaches it
// directly (TestCtrlC has the other cases).
func TestTTYForeground(t *testing.T) {
	m, sl := ptyPair(t)
	b := startOnTTY(t, sl, nil, python(t), testdata("sigworker.py"))
	line, _ := b.ExpectOut(0, "ready ")
	var pid, pgid int
	fmt.Sscanf(line, "ready pid=%d pgid=%d", &pid, &pgid)
	fg, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPGRP)
	if err != nil {
		t.Fatal(err)
	}
	// The master reports the foreground group in the test's namespace.
	wantHost := hostPIDOf(t, b.PID())
	if fg != wantHost {
		t.Fatalf("terminal foreground group %d, want the worker's (%d)", fg, wantHost)
	}
	if _, err := m.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	b.ExpectOut(0, "sig SIGINT ")
	if code := b.Wait(); code != 0 {
		t.Fatalf("exit %d, want the worker's 0", code)
	}
	if b.Count("shutdown begun") != 0 {
		t.Fatal("Ctrl-C went to baton, not to the worker")
	}
}

// hostPIDOf returns the host pid of baton's only child (the worker).
func hostPIDOf(t *testing.T, parent int) int {
	t.Helper()
	kids := childrenOf(parent)
	if len(kids) != 1 {
		t.Fatalf("baton has children %v, want exactly one", kids)
	}
	return kids[0]
}
