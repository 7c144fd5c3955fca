// Package decodetest checks the contract every BATON_* decoder keeps (the
// Decode methods envconfig calls, SPEC "Configuration"): decoding is
// deterministic, a failed Decode leaves its target as it was, and its
// error is one line that never quotes more than 16 consecutive bytes of
// the value (clip.Value's rule: values can be secrets). It exists for
// tests and fuzz targets; no baton code imports it.
//
// The 16-byte check is "no 17-byte window of the value appears in the
// message", not "the message quotes at most the value's first 16 bytes":
// a list value (BATON_LISTEN, BATON_SIGNAL_MAP, ...) is clipped per
// element, and an element's 16 bytes sit anywhere in the value. Bytes, not
// characters: clip.Value cuts at 16 bytes, and 17 characters are at least 17
// bytes. Letters match in either case: a value upper-cased for its message
// leaks as much.
//
// Three things in a message look like the value without revealing more of
// it, and the check sees through them:
//   - Go quoting (%q) escapes bytes, so a backslash in the value is two in
//     the message and a tab is `\t`: quoted strings are compared unquoted,
//     the text around them as it is;
//   - clip.Value's own mark "…" follows the 16 bytes it keeps; a value with "…"
//     right after its 16th byte would match 17 bytes and more. No match
//     may run across the mark, so a leak goes unseen only when the value
//     repeats "…" within every 16 bytes of it;
//   - the message's own text: "nofile=65536:6553" is in "want
//     name=soft[:hard] like nofile=65536:65536,core=0" (the fuzzer found
//     that one at once). A window found in the message is decoded again
//     with its letters and digits shifted (n→o, 6→7): a leak moves with
//     the value, the message's own text stays where it was.
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
	if msg := Check(v, err.Error(), func(v string) string { return Message(zero().Decode(v)) }); msg != "" {
		t.Errorf("%T.Decode(%q): error %s", got, v, msg)
	}
	if !reflect.ValueOf(got).Elem().IsZero() {
		t.Errorf("%T.Decode(%q) failed (%v) but changed its target to %+v", got, v, err, got)
	}
	return got, err
}

// Message is err's text, "" for nil.
func Message(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Max is the most of a value, in consecutive bytes, a message may quote.
const Max = 16

// clipMark is what clip.Value appends to a value it cut.
const clipMark = "…"

// Check returns "" when msg, the error message for value, keeps the rules,
// else what is wrong. messageFor gives the message for another value (""
// when it decodes); nil takes every window found in msg for a leak.
func Check(value, msg string, messageFor func(string) string) string {
	if strings.ContainsAny(msg, "\n\r") {
		return fmt.Sprintf("more than one line: %q", msg)
	}
	for _, i := range windows(value, msg) {
		w := value[i : i+Max+1]
		if messageFor != nil {
			shifted := shift(w)
			other := messageFor(value[:i] + shifted + value[i+Max+1:])
			// A window the shifted value's message still has, where the
			// shifted one is not, is the message's own text.
			if shifted != w && len(windows(w, other)) > 0 && len(windows(shifted, other)) == 0 {
				continue
			}
		}
		return fmt.Sprintf("quotes %d consecutive bytes of the value, %q, in %q", len(w), w, msg)
	}
	return ""
}

// windows returns the offsets of value's (Max+1)-byte windows that msg
// shows, ignoring the case of letters.
func windows(value, msg string) []int {
	if len(value) <= Max {
		return nil
	}
	var pieces []string
	for _, p := range parts(msg) {
		pieces = append(pieces, strings.Split(lower(p), clipMark)...)
	}
	low := lower(value)
	var out []int
	for i := 0; i+Max+1 <= len(low); i++ {
		for _, p := range pieces {
			if strings.Contains(p, low[i:i+Max+1]) {
				out = append(out, i)
				break
			}
		}
	}
	return out
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

// shift moves each ASCII letter and digit of s one place on in its own
// class (z→a, 9→0), so a value keeps its shape (a number stays a number)
// and usually takes the same path through a decoder.
func shift(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = 'a' + (c-'a'+1)%26
		case 'A' <= c && c <= 'Z':
			b[i] = 'A' + (c-'A'+1)%26
		case '0' <= c && c <= '9':
			b[i] = '0' + (c-'0'+1)%10
		}
	}
	return string(b)
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
