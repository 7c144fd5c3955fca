//go:build linux

package netns

import (
	"net"
	"os"
	"reflect"
	"testing"
)

// parentEnv carries the namespace of the process that re-executed the tests.
const parentEnv = "TEST_NETNS_PARENT"

func TestMain(m *testing.M) {
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		ns = "unknown"
	}
	os.Exit(Main(m, "TestHostStaysHome", parentEnv+"="+ns))
}

// TestIsolated: as root, the tests run in a network namespace other than
// the one go test started them in, and its loopback works.
func TestIsolated(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the tests run in the host's network namespace")
	}
	if os.Getenv(childEnv) == "" {
		if f := profileFlag(); f != "" {
			t.Skipf("-%s: the tests run in the host's network namespace", f)
		}
		t.Fatal("as root, this test runs in the re-executed child")
	}
	ns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if parent := os.Getenv(parentEnv); ns == parent {
		t.Fatalf("the child is in its parent's network namespace %s", ns)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "[::1]:0" {
				t.Logf("no IPv6 loopback here: %v", err)
				continue
			}
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("connect to %s in the new namespace: %v", ln.Addr(), err)
		}
		c.Close()
		ln.Close()
	}
}

// TestHostStaysHome: the test named in Main's host runs in the process go
// test started, in the host's namespace, and only there.
func TestHostStaysHome(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Fatal("the host's test ran in the child")
	}
}

func TestHostRun(t *testing.T) {
	const host = "TestDockerE2E"
	cases := []struct {
		run, skip string
		want      string
		ok        bool
	}{
		{"", "", "^TestDockerE2E$", true},
		{"Docker", "", "^TestDockerE2E$", true},
		{"TestDockerE2E/Health", "", "^TestDockerE2E$/Health", true},
		{"TestZero|Docker/Logs", "", "^TestDockerE2E$/Logs", true},
		{"TestZero|TestHUP", "", "", false},
		{"Test(Zero|Docker)/Init", "", "^TestDockerE2E$/Init", true},
		{"[/|]x|E2E", "", "^TestDockerE2E$", true},
		{"Swap", "", "", false},
		{"", "Docker", "", false},
		{"", "TestZero|E2E", "", false},
		{"", "TestDockerE2E/Init", "^TestDockerE2E$", true},
		{"Docker/Health", "Init", "^TestDockerE2E$/Health", true},
	}
	for _, c := range cases {
		got, ok := hostRun(c.run, c.skip, host)
		if got != c.want || ok != c.ok {
			t.Errorf("hostRun(%q, %q) = %q, %v; want %q, %v", c.run, c.skip, got, ok, c.want, c.ok)
		}
	}
}

func TestSplitRegexp(t *testing.T) {
	cases := map[string][][]string{
		"":          {{""}},
		"A":         {{"A"}},
		"A/B|C":     {{"A", "B"}, {"C"}},
		"(A|B)/C":   {{"(A|B)", "C"}},
		"[/|]/x":    {{"[/|]", "x"}},
		`A\/B|C\|D`: {{`A\/B`}, {`C\|D`}},
	}
	for in, want := range cases {
		if got := splitRegexp(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitRegexp(%q) = %q, want %q", in, got, want)
		}
	}
}
