// Package decodetest checks the contract every BATON_* decoder keeps (the
// Decode methods envconfig calls, SPEC "Configuration"): decoding is
// deterministic, a failed Decode leaves its target as it was, and its
// error is one line that never quotes more than 16 consecutive bytes of
// the value (spawn.Clip's rule: values can be secrets). It exists for
// tests and fuzz targets; no baton code imports it.
//
// The 16-byte check is "no 17-byte window of the value appears in the
// message", not "the message quotes at most the value's first 16 bytes":
// a list value (BATON_LISTEN, BATON_SIGNAL_MAP, ...) is clipped per
// element, and an element's 16 bytes sit anywhere in the value. Bytes, not
// characters: Clip cuts at 16 bytes, and 17 characters are at least 17
// bytes.
//
// Two things in a message look like the value without revealing more of
// it, and the check sees through both:
//   - Go quoting (%q) escapes bytes, so a backslash in the value is two in
//     the message and a tab is `\t`: quoted strings are compared unquoted,
//     the text around them as it is;
//   - Clip's own mark "…" follows the 16 bytes it keeps; a value with "…"
//     right after its 16th byte would match 17 bytes and more. No match
//     may run across the mark, so a leak goes unseen only when the value
//     repeats "…" within every 16 bytes of it.
//
// Left unchecked: a value that repeats 17 bytes of a message's fixed text.
// The fuzzer never sees that text (no code compares input with it), so it
// cannot steer towards it; a report of one would be plain to read.
package decodetest

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Decoder is envconfig.Decoder: what every BATON_* type implements.
type Decoder interface{ Decode(string) error }

// Decode decodes v into a zero T and checks the contract (see Fresh).
func Decode[T any, P interface {
	*T
	Decoder
}](t testing.TB, v string) (T, error) {
	t.Helper()
	d, err := Fresh(t, func() Decoder { return P(new(T)) }, v)
	return *d.(P), err
}

// Fresh decodes v twice, each time into a target zero makes (a pointer to
// a zero value), and reports on t what breaks the contract: the two
// results differ, a failed Decode changed its target, or the error is not
// one line or quotes too much of v (Check). It returns the first target
// and Decode's error.
func Fresh(t testing.TB, zero func() Decoder, v string) (Decoder, error) {
	t.Helper()
	got, again := zero(), zero()
	err, err2 := got.Decode(v), again.Decode(v)
	if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) || !reflect.DeepEqual(got, again) {
		t.Errorf("%T.Decode(%q) differs from one call to the next: %v %+v, then %v %+v", got, v, err, got, err2, again)
	}
	if err == nil {
		return got, nil
	}
	if msg := Check(v, err.Error()); msg != "" {
		t.Errorf("%T.Decode(%q): error %s", got, v, msg)
	}
	if !reflect.ValueOf(got).Elem().IsZero() {
		t.Errorf("%T.Decode(%q) failed (%v) but changed its target to %+v", got, v, err, got)
	}
	return got, err
}

// Max is the most of a value, in consecutive bytes, a message may quote.
const Max = 16

// clipMark is what spawn.Clip appends to a value it cut.
const clipMark = "…"

// Check returns "" when msg keeps the rules for value, else what is wrong.
func Check(value, msg string) string {
	if strings.ContainsAny(msg, "\n\r") {
		return fmt.Sprintf("more than one line: %q", msg)
	}
	if w := Leak(value, msg); w != "" {
		return fmt.Sprintf("quotes %d consecutive bytes of the value, %q, in %q", len(w), w, msg)
	}
	return ""
}

// Leak returns a window of Max+1 bytes of value that msg reveals, or "".
// Letters match in either case: a value upper-cased for its message leaks
// as much.
func Leak(value, msg string) string {
	if len(value) <= Max {
		return ""
	}
	var pieces []string
	for _, p := range parts(msg) {
		pieces = append(pieces, strings.Split(lower(p), clipMark)...)
	}
	low := lower(value)
	for i := 0; i+Max+1 <= len(low); i++ {
		w := low[i : i+Max+1]
		for _, p := range pieces {
			if strings.Contains(p, w) {
				return value[i : i+Max+1]
			}
		}
	}
	return ""
}

// parts splits msg into the text outside Go-quoted strings, as it is, and
// the contents of each quoted string, unquoted.
func parts(msg string) []string {
	var out []string
	start := 0
	for i := 0; i < len(msg); i++ {
		if msg[i] != '"' {
			continue
		}
		q, err := strconv.QuotedPrefix(msg[i:])
		if err != nil {
			continue // a lone '"' is text
		}
		s, err := strconv.Unquote(q)
		if err != nil {
			continue
		}
		out = append(out, msg[start:i], s)
		i += len(q) - 1
		start = i + 1
	}
	return append(out, msg[start:])
}

// lower folds ASCII letters only: strings.ToLower would turn invalid UTF-8
// into U+FFFD and change lengths.
func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
