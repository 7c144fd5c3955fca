package main

import "testing"

// TestKnownKeys: the spelled-out list of variables is exactly what
// envconfig reads, so an unknown-variable check can never reject a real
// variable or accept a stale one.
func TestKnownKeys(t *testing.T) {
	fromEnvconfig := map[string]bool{}
	for _, v := range knownVars() {
		fromEnvconfig[v[0]] = true
		if !knownKeys[v[0]] {
			t.Errorf("%s is read by envconfig but missing from knownKeys", v[0])
		}
	}
	for k := range knownKeys {
		if !fromEnvconfig[k] {
			t.Errorf("%s is in knownKeys but envconfig does not read it", k)
		}
	}
}
