package decodetest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/baton-init/baton/internal/clip"
)

// TestCheck: what the check lets through and what it reports, with
// messages made the way baton's decoders make them (clip.Value and %q).
func TestCheck(t *testing.T) {
	secret := "0123456789abcdefSECRET"
	cases := []struct {
		name, value, msg string
		bad              bool
	}{
		{"clipped", secret, fmt.Sprintf("want x, got %q", clip.Value(secret)), false},
		{"short value whole", "0123456789abcdef", `got "0123456789abcdef"`, false},
		{"each element clipped", "aaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbb",
			fmt.Sprintf("got %q", clip.Value("bbbbbbbbbbbbbbbbbbbb")), false},
		{"whole value", secret, fmt.Sprintf("got %q", secret), true},
		{"unquoted", secret, "got " + secret, true},
		{"upper-cased", secret, "got " + strings.ToUpper(secret), true},
		{"escaped by %q", "a\tb\tc\td\te\tf\tg\th\ti", fmt.Sprintf("got %q", "a\tb\tc\td\te\tf\tg\th\ti"), true},
		{"escapes of a clip", strings.Repeat(`\`, 40), fmt.Sprintf("got %q", clip.Value(strings.Repeat(`\`, 40))), false},
		{"clip mark in the value", "0123456789abcdef…tail", fmt.Sprintf("got %q", clip.Value("0123456789abcdef…tail")), false},
		{"element in the middle", "x,0123456789abcdefSECRET,y", fmt.Sprintf("got %q", "0123456789abcdefS"), true},
		{"two lines", "v", "bad\nvalue", true},
		{"carriage return", "v", "bad\rvalue", true},
	}
	for _, c := range cases {
		if got := Check(c.value, c.msg, nil); (got != "") != c.bad {
			t.Errorf("%s: Check(%q, %q) = %q, want bad=%v", c.name, c.value, c.msg, got, c.bad)
		}
	}

	// The message's own text is not the value's, even where they agree;
	// a leak is one however much of the message's text it repeats.
	example := "nofile=65536:6553"
	clipped := func(v string) string { return fmt.Sprintf("like nofile=65536:65536, got %q", clip.Value(v)) }
	whole := func(v string) string { return fmt.Sprintf("like nofile=65536:65536, got %q", v) }
	if got := Check(example, clipped(example), clipped); got != "" {
		t.Errorf("the message's example taken for a leak: %s", got)
	}
	if got := Check(example, clipped(example), nil); got == "" {
		t.Errorf("without messageFor, every window found must count")
	}
	if got := Check(example+"0", whole(example+"0"), whole); got == "" {
		t.Errorf("a leak hidden by the message's example")
	}
}

// recorder keeps what Fresh reports instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// good keeps the contract.
type good string

func (g *good) Decode(v string) error {
	if v == "" {
		return fmt.Errorf("want something, got %q", v)
	}
	*g = good(v)
	return nil
}

// halfFilled sets its target before it fails.
type halfFilled []string

func (h *halfFilled) Decode(v string) error {
	*h = append(*h, v)
	return fmt.Errorf("bad %q", clip.Value(v))
}

// leaky quotes the whole value.
type leaky string

func (l *leaky) Decode(v string) error { return fmt.Errorf("bad %q", v) }

// counter decodes differently each time.
type counter struct{ calls, got *int }

func (c *counter) Decode(string) error {
	*c.calls++
	c.got = new(int)
	*c.got = *c.calls
	return nil
}

// TestFresh: each broken contract is reported, a kept one is not.
func TestFresh(t *testing.T) {
	value := "0123456789abcdefSECRET"
	calls := new(int)
	for _, c := range []struct {
		name string
		zero func() Decoder
		bad  bool
	}{
		{"good", func() Decoder { return new(good) }, false},
		{"half-filled", func() Decoder { return new(halfFilled) }, true},
		{"leaky", func() Decoder { return new(leaky) }, true},
		{"not deterministic", func() Decoder { return &counter{calls: calls} }, true},
	} {
		r := &recorder{TB: t}
		Fresh(r, c.zero, value)
		if (len(r.errs) > 0) != c.bad {
			t.Errorf("%s: reported %q, want bad=%v", c.name, r.errs, c.bad)
		}
	}
	if g, err := Decode[good](t, "x"); err != nil || g != "x" {
		t.Errorf("Decode[good](x) = %q, %v", g, err)
	}
}
