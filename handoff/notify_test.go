//go:build linux

package handoff

import (
	"bytes"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestNotifyRefusesOversized: a datagram over 4096 bytes (systemd's
// limit) is dropped, not truncated and then parsed.
func TestNotifyRefusesOversized(t *testing.T) {
	n, err := NewNotifier([]string{t.TempDir()}, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	notes := make(chan Note, 4)
	go n.Run(notes)
	c, err := net.Dial("unixgram", n.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := append([]byte("READY=1\n"), bytes.Repeat([]byte("x"), 5000)...)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("STATUS=after")); err != nil {
		t.Fatal(err)
	}
	select {
	case note := <-notes:
		if note.Ready || note.Status != "after" {
			t.Fatalf("first note %+v: the oversized datagram was parsed", note)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no note")
	}
}

// TestNotifyAbstract: with no directory to bind in, the notify socket is
// abstract ("@name"), and a worker that sends to NOTIFY_SOCKET as given
// reaches it; nothing named "@..." appears on disk.
func TestNotifyAbstract(t *testing.T) {
	t.Chdir(t.TempDir())
	n, err := NewNotifier(nil, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !strings.HasPrefix(n.Addr, "@") {
		t.Fatalf("Addr %q, want an abstract socket", n.Addr)
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Fatalf("a file was bound on disk: %v", ents)
	}
	notes := make(chan Note, 1)
	go n.Run(notes)
	c, err := net.Dial("unixgram", n.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		t.Fatal(err)
	}
	select {
	case note := <-notes:
		if !note.Ready {
			t.Fatalf("note %+v, want READY=1", note)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no note")
	}
}
