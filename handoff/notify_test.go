//go:build linux

package handoff

import (
	"bytes"
	"net"
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
