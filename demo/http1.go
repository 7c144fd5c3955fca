package demo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/baton-init/baton/internal/http1"
)

// The few pieces of HTTP/1.1 (RFC 9112) that the hello server and the load
// client share. Both are written on package net rather than net/http: the
// demo is part of the baton binary, and net/http (with crypto/tls, which it
// always links) would add about 4 MB to a binary that must stay small.
// demo's tests check both ends against net/http.

const (
	// maxLine bounds one request, status, header or chunk-size line; it is
	// also the size of the bufio.Readers the lines are read from.
	maxLine = 8 << 10
	// maxHeader bounds a whole header section (start line included).
	maxHeader = 64 << 10
)

var (
	// errLineTooLong reports a line longer than maxLine, or a header
	// section longer than maxHeader.
	errLineTooLong = http1.ErrTooLong
	// errMalformed reports a message that is not HTTP/1.x.
	errMalformed = errors.New("malformed HTTP message")
)

// readLine reads a line through http1.ReadLine (the one HTTP/1 line
// reader, shared with control), which bounds it by *budget, and refuses
// one of maxLine bytes or more. The slice is valid until the next read
// from br.
func readLine(br *bufio.Reader, budget *int) ([]byte, error) {
	line, err := http1.ReadLine(br, budget)
	if err == nil && len(line) >= maxLine {
		return nil, errLineTooLong
	}
	return line, err
}

// splitHeader splits a header field line into its name and value (optional
// whitespace trimmed). A line without a colon, with whitespace before it,
// or starting with whitespace (obsolete line folding) is malformed.
func splitHeader(line []byte) (name, value []byte, err error) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 || line[i-1] == ' ' || line[i-1] == '\t' || line[0] == ' ' || line[0] == '\t' {
		return nil, nil, fmt.Errorf("%w: header line %q", errMalformed, line)
	}
	return line[:i], bytes.Trim(line[i+1:], " \t"), nil
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v (a Connection or
// Transfer-Encoding value) contains the lower-case token tok, ignoring case.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte{','})
		if equalFold(bytes.Trim(item, " \t"), tok) {
			return true
		}
	}
	return false
}

// parseContentLength parses a Content-Length value: decimal digits only, at
// most 18 of them (no overflow).
func parseContentLength(v []byte) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, fmt.Errorf("%w: Content-Length %q", errMalformed, v)
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: Content-Length %q", errMalformed, v)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// chunkedLast reports whether chunked is the last (outermost) coding of a
// Transfer-Encoding value, which then frames the body.
func chunkedLast(v []byte) bool {
	i := bytes.LastIndexByte(v, ',')
	return equalFold(bytes.Trim(v[i+1:], " \t"), "chunked")
}

// discard reads and drops n bytes from br. refill, if not nil, is called
// each time br has to read from its connection (to push a read deadline
// forward while the bytes keep coming). A connection closed early is
// io.ErrUnexpectedEOF.
func discard(br *bufio.Reader, n int64, refill func()) error {
	for n > 0 {
		if br.Buffered() == 0 && refill != nil {
			refill()
		}
		k := int(min(n, int64(max(br.Buffered(), br.Size()))))
		d, err := br.Discard(k)
		n -= int64(d)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// discardChunked reads and drops a chunked body (RFC 9112 section 7.1),
// trailer section included. Chunk extensions are ignored.
func discardChunked(br *bufio.Reader, refill func()) error {
	budget := maxHeader // for the chunk-size lines and the trailers
	for {
		if br.Buffered() == 0 && refill != nil {
			refill()
		}
		line, err := readLine(br, &budget)
		if err != nil {
			return eofIsUnexpected(err)
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err
		}
		if size == 0 {
			break
		}
		budget = maxHeader // the budget is per line here, not per body
		if err := discard(br, size, refill); err != nil {
			return err
		}
		crlf, err := readLine(br, &budget)
		if err != nil {
			return eofIsUnexpected(err)
		}
		if len(crlf) != 0 {
			return fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
		}
	}
	for { // trailer section, up to an empty line
		line, err := readLine(br, &budget)
		if err != nil {
			return eofIsUnexpected(err)
		}
		if len(line) == 0 {
			return nil
		}
	}
}

// parseChunkSize parses a chunk-size line: hex digits, then optional
// whitespace and ";extensions".
func parseChunkSize(line []byte) (int64, error) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 { // 15 hex digits: no overflow
		return 0, fmt.Errorf("%w: chunk size %q", errMalformed, line)
	}
	var n int64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
		n = n<<4 | int64(c)
	}
	return n, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
