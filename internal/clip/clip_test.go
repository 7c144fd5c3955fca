package clip

import "testing"

func TestValue(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"0123456789abcdef", "0123456789abcdef"},
		{"0123456789abcdefg", "0123456789abcdef…"},
	} {
		if got := Value(c.in); got != c.want {
			t.Errorf("Value(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestN(t *testing.T) {
	if got := N("abcdef", 3); got != "abc…" {
		t.Errorf("N(abcdef, 3) = %q, want abc…", got)
	}
	if got := N("abc", 3); got != "abc" {
		t.Errorf("N(abc, 3) = %q, want abc", got)
	}
}
