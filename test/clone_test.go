package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// otherUserTests are the tests that run something as another user
// (uid 65534): through BATON_USER, nsenter --setuid, a user namespace or a
// client with other credentials. A new one belongs here.
var otherUserTests = []string{
	"TestReloadReportsOutcome",
	"TestUnixListenerPermissions",
	"TestNotifySocketNotWorkers",
	"TestOpsUserAndUlimits",
	"TestSteerUnprivileged",
	"TestInterceptUnprivileged",
	"TestControlNameSquatted",
	"TestProbesUnderConnectFlood",
	"TestHealthPidMessages",
	"TestReloadWaitersLeave",
	"TestWatchHostileLinks",
}

// TestPrivateClone: the suite passes in a fresh clone inside a directory
// that no other user may enter (root's home is 0700, and so is any
// mktemp -d), cloned under umask 077: the tests of otherUserTests run
// there, as `go test` does them in test/run, and each must pass, none
// skip. It clones this repository's HEAD: uncommitted changes are not in
// the clone.
func TestPrivateClone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the tests it runs start workers as another user")
	}
	if os.Getenv("TEST_PRIVATE_CLONE") != "" {
		t.Skip("already in the private clone")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not found: cannot clone the repository")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not found: cannot run the tests in the clone")
	}
	top, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skip("not in a git checkout: nothing to clone")
	}
	head, err := exec.Command(git, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(private, "baton")
	// Under umask 077, as a careful user clones: its files are 0600.
	for _, args := range [][]string{
		{"clone", "-q", "--no-checkout", strings.TrimSpace(string(top)), clone},
		{"-C", clone, "checkout", "-q", "--detach", strings.TrimSpace(string(head))},
	} {
		sh := exec.Command("sh", append([]string{"-c", `umask 077 && exec "$@"`, "sh", git}, args...)...)
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if fi, err := os.Stat(filepath.Join(clone, "test", "testdata", "helpers.py")); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Fatalf("the clone's test/testdata/helpers.py is %v, want 0600 (umask 077)", fi.Mode().Perm())
	}
	t.Logf("clone of HEAD %.12s in %s (0700), under umask 077", head, private)

	// -trimpath only lets the build cache serve the next run, whose clone
	// is elsewhere.
	cmd := exec.Command(goBin, "test", "-count=1", "-trimpath", "-v",
		"-run", "^("+strings.Join(otherUserTests, "|")+")$", "./test")
	cmd.Dir = clone
	// As a user's shell would start it: not as this test binary's child
	// in its network namespace, nor against this run's baton.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "TEST_BATON_BIN" && k != "TEST_NETNS_CHILD" && k != "TEST_ROLE" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TEST_PRIVATE_CLONE=1")
	out, err := cmd.CombinedOutput()
	passed := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "--- PASS: ") {
			passed++
		}
	}
	if err != nil || passed != len(otherUserTests) || strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("go test in the clone: %v, %d of %d tests passed, want all and no skip:\n%s", err, passed, len(otherUserTests), out)
	}
}
