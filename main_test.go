package main

import (
	"bytes"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

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

// TestProcs: baton runs on one P (reaper/oneproc); the serving subcommands
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
	t.Setenv("GOMAXPROCS", "")
	restoreProcs()
	if n := runtime.GOMAXPROCS(0); n != runtime.NumCPU() && n < 2 {
		t.Errorf("no GOMAXPROCS in the environment: got %d, want the default (%d CPUs)", n, runtime.NumCPU())
	}
}
