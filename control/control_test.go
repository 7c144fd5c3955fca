//go:build linux

package control

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzReadRequestLine: the control socket reads at most maxRequest bytes
// of a request, however they arrive. A line is what precedes the first
// newline, spaces trimmed, when that newline is within the bound; anything
// else is EOF (too long, or the client went away).
func FuzzReadRequestLine(f *testing.F) {
	for _, seed := range []string{
		"status\n", " status \r\n", "status", "\n", "", "status\nstatus\n", "st\x00tus\n",
		strings.Repeat("x", maxRequest-1) + "\n", strings.Repeat("x", maxRequest) + "\n", strings.Repeat("x", 5000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantErr := "", io.EOF
		if i := bytes.IndexByte(data, '\n'); i >= 0 && i < maxRequest {
			want, wantErr = strings.TrimSpace(string(data[:i+1])), nil
		}
		for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
			src := &counted{r: r}
			line, err := readRequestLine(src)
			if src.n > maxRequest {
				t.Fatalf("read %d bytes, past the %d-byte bound", src.n, maxRequest)
			}
			if line != want || err != wantErr {
				t.Fatalf("readRequestLine(%.200q) = %q, %v; want %q, %v", data, line, err, want, wantErr)
			}
		}
	})
}
