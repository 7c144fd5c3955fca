//go:build linux

package handoff

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// noteSeeds are sd_notify datagrams, well-formed and not.
var noteSeeds = []string{
	"READY=1", "READY=1\n", "READY=1\nSTATUS=serving", "STATUS=a\nSTATUS=b", "STOPPING=1", "READY=0", "READY=1\r\n",
	" READY=1", "READY=1\x00", "STATUS=", "STATUS=with=equals", "\n\n\n", "", "MAINPID=1\nWATCHDOG=1",
	"READY=1\nSTOPPING=1\nSTATUS=bye", strings.Repeat("x", 4096), "READY=1\n" + strings.Repeat("x", 4089),
}

// FuzzParseNote: a datagram's fields are what its lines say, whatever else
// it holds: Ready and Stopping when some line is exactly READY=1 or
// STOPPING=1, Status the rest of the last STATUS= line.
func FuzzParseNote(f *testing.F) {
	for _, s := range noteSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := parseNote(42, b)
		lines := append(append([]byte("\n"), b...), '\n') // every line between two newlines
		status := ""
		if i := bytes.LastIndex(lines, []byte("\nSTATUS=")); i >= 0 {
			rest := lines[i+len("\nSTATUS="):]
			status = string(rest[:bytes.IndexByte(rest, '\n')])
		}
		want := Note{
			PID:      42,
			Ready:    bytes.Contains(lines, []byte("\nREADY=1\n")),
			Stopping: bytes.Contains(lines, []byte("\nSTOPPING=1\n")),
			Status:   status,
			Watchdog: bytes.Contains(lines, []byte("\nWATCHDOG=1\n")),
			Trigger:  bytes.Contains(lines, []byte("\nWATCHDOG=trigger\n")),
		}
		if n != want {
			t.Errorf("parseNote(%.200q) = %+v, want %+v", b, n, want)
		}
	})
}

// FuzzNotifier: datagrams through a real NOTIFY_SOCKET. One of at most
// maxNote bytes arrives as one note, parsed, from this process; a larger
// one is dropped whole; nothing makes Run stop or panic. A barrier
// datagram after each shows that nothing else arrived.
func FuzzNotifier(f *testing.F) {
	for _, s := range noteSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(strings.Repeat("x", maxNote+1)))
	f.Add(append([]byte("READY=1\n"), bytes.Repeat([]byte("x"), 2*maxNote)...))

	n, err := NewNotifier([]string{f.TempDir()}, -1, -1)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = n.Close() })
	notes := make(chan Note, 4)
	go n.Run(notes)
	c, err := net.Dial("unixgram", n.Addr)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	pgid, err := unix.Getpgid(os.Getpid())
	if err != nil {
		f.Fatal(err)
	}
	next := func(t *testing.T) Note {
		t.Helper()
		select {
		case note := <-notes:
			return note
		case <-time.After(10 * time.Second):
			t.Fatal("no note: Run stopped or lost a datagram")
			return Note{}
		}
	}
	barriers := 0

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 3*maxNote {
			t.Skip("past the limit already: longer ones only take longer")
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		barriers++
		barrier := fmt.Sprintf("STATUS=barrier %d", barriers)
		if _, err := c.Write([]byte(barrier)); err != nil {
			t.Fatal(err)
		}
		if len(b) <= maxNote {
			want := parseNote(os.Getpid(), b)
			want.PGID = pgid
			if got := next(t); got != want {
				t.Fatalf("datagram %.200q gave note %+v, want %+v", b, got, want)
			}
		}
		want := Note{PID: os.Getpid(), PGID: pgid, Status: barrier[len("STATUS="):]}
		if got := next(t); got != want {
			t.Fatalf("after %d bytes: note %+v, want the barrier %+v", len(b), got, want)
		}
	})
}
