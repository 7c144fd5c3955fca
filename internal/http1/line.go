// Package http1 holds what baton's two small HTTP/1 readers share: the
// control endpoint (BATON_HTTP_ADDR) and the demo's server and load
// client.
package http1

import (
	"bufio"
	"errors"
	"io"
)

// ErrTooLong reports a line that would take more than the bytes left in
// the caller's budget for the header section.
var ErrTooLong = errors.New("header line too long")

// ReadLine reads one line (up to "\n") and returns it without its line
// ending ("\r\n" or a bare "\n"), charging its length to *budget. A line
// longer than br's buffer is read whole as long as the budget lasts. The
// slice is valid only until the next read from br.
//
// A connection closed before the first byte of the line is io.EOF; closed
// in the middle of one, io.ErrUnexpectedEOF.
func ReadLine(br *bufio.Reader, budget *int) ([]byte, error) {
	var long []byte // the fragments of a line longer than br's buffer
	for {
		frag, err := br.ReadSlice('\n')
		*budget -= len(frag)
		if *budget < 0 {
			return nil, ErrTooLong
		}
		switch {
		case err == nil:
			line := frag
			if long != nil {
				line = append(long, frag...)
			}
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, frag...)
		case errors.Is(err, io.EOF) && len(long)+len(frag) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
