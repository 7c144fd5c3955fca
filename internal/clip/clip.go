// Package clip shortens values quoted in error messages: configuration
// values can be secrets, and names from outside can be long.
package clip

// Value keeps at most the first 16 bytes of a configuration value.
func Value(v string) string { return N(v, 16) }

// N keeps at most the first n bytes of v, and marks a cut with "…".
func N(v string, n int) string {
	if len(v) > n {
		return v[:n] + "…"
	}
	return v
}
