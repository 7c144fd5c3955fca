package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCLIEdges: the small rough edges of the command line each get the
// answer a user expects: help on --help, one clear line and exit 2 for a
// value that cannot be what was meant, and nothing started.
func TestCLIEdges(t *testing.T) {
	for _, sub := range []string{"reload", "health"} {
		code, out, stderr := runBatonPlain(t, nil, sub, "--help")
		if code != 0 || !strings.Contains(out, "usage: baton "+sub) || stderr != "" {
			t.Errorf("baton %s --help: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", sub, code, out, stderr)
		}
	}
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		// ":" is no address: it would bind a random port on every interface.
		{[]string{"BATON_HTTP_ADDR=:"}, nil, "BATON_HTTP_ADDR"},
		{[]string{"BATON_LISTEN=:"}, nil, "BATON_LISTEN"},
		{[]string{"BATON_LISTEN=tcp://0.0.0.0:"}, nil, "BATON_LISTEN"},
		// 512 bytes is no RSS any process has: a unit was forgotten.
		{[]string{"BATON_MAX_RSS=512"}, nil, "BATON_MAX_RSS"},
		// The names baton sets for its workers, typed by a user.
		{[]string{"BATON_WORKER=2"}, nil, "BATON_WORKERS"},
		{[]string{"BATON_GENERATION=abc"}, nil, "BATON_GENERATION"},
		{[]string{"BATON_GENERATION=1", "BATON_WORKER=two"}, nil, "BATON_WORKER"},
		// An empty command name.
		{nil, []string{""}, "empty"},
		{nil, []string{"--", ""}, "empty"},
	}
	for _, c := range cases {
		t.Run(strings.Join(append(append([]string{}, c.env...), c.args...), " "), func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "started")
			args := c.args
			if args == nil {
				args = []string{"--", "touch", marker}
			}
			code, _, stderr := runBatonPlain(t, c.env, args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) || strings.Contains(stderr, "listener opened") {
				t.Errorf("stderr %q: want one line naming %s", stderr, c.want)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("a worker was started")
			}
		})
	}
	// A baton under another baton sees the pair its parent set, and runs.
	code, out, stderr := runBatonPlain(t, []string{"BATON_GENERATION=3", "BATON_WORKER=1"}, "--", "sh", "-c", "echo nested-ok")
	if code != 0 || strings.TrimSpace(out) != "nested-ok" {
		t.Errorf("nested baton: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// An explicit port 0 is a deliberate choice, and still accepted.
	code, _, stderr = runBatonPlain(t, []string{"BATON_LISTEN=127.0.0.1:0", "BATON_LOG_FORMAT=json"}, "--", "true")
	if code != 0 {
		t.Errorf("BATON_LISTEN=127.0.0.1:0: exit %d, stderr %q", code, stderr)
	}
}

// TestExecLikeTheInits: a script with no #! line runs through /bin/sh, as
// under tini, dumb-init and catatonit (execvp's rule); a script whose
// interpreter is missing, or ends in a CRLF, is reported by the
// interpreter's name, not as a command that does not exist. Both with
// and without baton's shim (BATON_ULIMITS needs it).
func TestExecLikeTheInits(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noShebang := write("no-shebang", "echo \"no-shebang ran as $0 with $1\"\n")
	badInterp := write("bad-interp", "#!/no/such/interpreter -x\necho never\n")
	crlf := write("crlf", "#!/bin/sh\r\necho never\r\n")
	for _, mode := range []struct {
		name string
		env  []string
	}{
		{"direct", nil},
		{"shim", []string{"BATON_ULIMITS=core=0"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			b := StartBaton(t, Opt{Env: mode.env}, "--", noShebang, "arg1")
			line, _ := b.ExpectOut(0, "no-shebang ran")
			if line != "no-shebang ran as "+noShebang+" with arg1" {
				t.Errorf("stdout %q", line)
			}
			if code := b.Wait(); code != 0 {
				t.Fatalf("script without #!: exit %d, want 0", code)
			}
			for _, c := range []struct{ path, want string }{
				{badInterp, `"/no/such/interpreter"`},
				{crlf, `"/bin/sh\r"`},
			} {
				b := StartBaton(t, Opt{Env: mode.env}, "--", c.path)
				if code := b.Wait(); code != 127 {
					t.Errorf("%s: exit %d, want 127", c.path, code)
				}
				// Wait for the line (baton's exit can come before its last
				// lines are read): "worker start failed" from baton, or
				// "worker exec failed" from the shim.
				var msg string
				b.Err.waitFor(t, "an error line", deadline, func(_ []string, evs []Event) bool {
					for _, ev := range evs {
						if e := ev.Str("err"); e != "" {
							msg = e
							return true
						}
					}
					return false
				})
				if !strings.Contains(msg, "interpreter "+c.want) || strings.Contains(msg, "command not found") {
					t.Errorf("%s: error %q; want it to name the interpreter %s", c.path, msg, c.want)
				}
			}
		})
	}
}

// TestSelfWithoutProc: with no /proc mounted and baton found through
// PATH, baton still finds its own binary for the worker shim.
func TestSelfWithoutProc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: unmounts /proc in a private mount namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) not found")
	}
	path := filepath.Dir(batonBin) + ":" + os.Getenv("PATH")
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--",
		"sh", "-c", `umount -l /proc && [ ! -e /proc/self ] && exec baton -- sh -c 'echo worker-ran'`)
	cmd.Env = []string{"PATH=" + path, "BATON_ULIMITS=core=0", "BATON_LOG_FORMAT=json"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "worker-ran") {
		t.Fatalf("baton without /proc, found through PATH: %v\n%s", err, out)
	}
}

// TestRefusedReloadNamesNoPhantomGeneration: an outcome that names no
// serving generation (baton is stopping) says so without a "generation 0".
func TestRefusedReloadNamesNoPhantomGeneration(t *testing.T) {
	b := StartBaton(t, Opt{Env: []string{"BATON_LISTEN=127.0.0.1:0", "BATON_READY=delay:20ms", "BATON_SHUTDOWN_DELAY=20s"}}, "sleep", "1000")
	b.Expect("generation ready")
	b.Signal(unix.SIGTERM)
	b.Expect("shutdown begun")
	code, out := runBaton(t, "reload", "--pid", strconv.Itoa(b.PID()), "--timeout", "5s")
	if code != 1 || !strings.Contains(out, "stopping") || strings.Contains(out, "generation 0") {
		t.Fatalf("reload while stopping: exit %d %q; want 1, stopping, no generation 0", code, out)
	}
}
