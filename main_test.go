package main

import (
	"bytes"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// TestConfigKeys: the spelled-out variable names, with the defaults and
// descriptions from the field tags, are exactly what envconfig reads, so
// the unknown-variable check can never reject a real variable or accept a
// stale one, and baton help never lies.
func TestConfigKeys(t *testing.T) {
	var buf bytes.Buffer
	if err := envconfig.Usagef(envPrefix, &config{}, &buf, "{{range .}}{{usage_key .}}\x1f{{usage_default .}}\x1f{{usage_description .}}\n{{end}}"); err != nil {
		t.Fatal(err)
	}
	var want [][3]string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		f := strings.SplitN(line, "\x1f", 3)
		want = append(want, [3]string{f[0], f[1], f[2]})
	}
	if len(configKeys) != len(want) {
		t.Fatalf("configKeys has %d names, envconfig reads %d variables", len(configKeys), len(want))
	}
	if got := knownVars(); !reflect.DeepEqual(got, want) {
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("variable %d: baton help says %q, envconfig %q", i, got[i], want[i])
			}
		}
	}
}

// TestDefaultConfig: with no BATON_* variable set, baton skips envconfig;
// what it uses instead must be exactly what envconfig makes of the empty
// environment.
func TestDefaultConfig(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	var want config
	if err := envconfig.Process(envPrefix, &want); err != nil {
		t.Fatal(err)
	}
	got, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("defaults differ from envconfig's:\n got %+v\nwant %+v", *got, want)
	}
	if reflect.DeepEqual(want, config{}) {
		t.Error("envconfig applied no default at all: the comparison proves nothing")
	}
}

// TestProcs: baton runs on one P (internal/startup/oneproc); the serving subcommands
// go back to what their environment asks for.
func TestProcs(t *testing.T) {
	t.Cleanup(func() { runtime.GOMAXPROCS(1) })
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS %d at start, want 1", n)
	}
	t.Setenv("GOMAXPROCS", "3")
	restoreProcs()
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("GOMAXPROCS=3 in the environment: got %d", n)
	}
	// The runtime's default (CPUs and cgroup limit), and then a value
	// that is not it, which restoreProcs must replace with it.
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(def + 1)
	t.Setenv("GOMAXPROCS", "")
	restoreProcs()
	if n := runtime.GOMAXPROCS(0); n != def {
		t.Errorf("no GOMAXPROCS in the environment: got %d, want the runtime's default %d (%d CPUs)", n, def, runtime.NumCPU())
	}
}

// TestDefaultReloadWait: baton reload's default --timeout follows the
// container's variables, and their defaults when unset.
func TestDefaultReloadWait(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{nil, 60*time.Second + 8*time.Second + 10*time.Second},
		{map[string]string{"BATON_READY_TIMEOUT": "5s", "BATON_STOP_TIMEOUT": "2s", "BATON_BAKE": "30s",
			"BATON_RELOAD_CHECK": "true", "BATON_HANDOFF": "steer", "BATON_CANARY": "10%:3s,50%:4s", "BATON_CANARY_CHECK": "true"},
			5*time.Second + 2*time.Second + 10*time.Second + 5*time.Second + 30*time.Second + 7*time.Second + 2*5*time.Second},
	} {
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "BATON_") {
				t.Setenv(k, "")
			}
		}
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		if got := defaultReloadWait(); got != c.want {
			t.Errorf("%v: %v, want %v", c.env, got, c.want)
		}
	}
}
