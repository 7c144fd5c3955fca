//go:build linux

package handoff

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/baton-init/baton/internal/decodetest"
)

// FuzzListeners: BATON_LISTEN, with unix socket options (owners resolve
// against this machine's /etc/passwd and /etc/group). Every decoded
// listener has a known network and a name fit for LISTEN_FDNAMES; a
// TCP/UDP address is host:port and takes no options; a unix one has a
// path, a mode of at most 0777, and options only on a file (not an
// abstract socket). There is a listener per entry, and the canonical
// spelling of each (scheme, numeric owner) decodes to the same one.
func FuzzListeners(f *testing.F) {
	for _, v := range []string{
		"web=127.0.0.1:80, /run/app.sock ,dns=udp6://[::1]:53,:8080,adm=unix:///run/adm.sock?mode=0600&owner=0:0",
		":8080", "0.0.0.0:0", "[::]:443", "tcp4://127.0.0.1:1", "udp://:53", "unix:///a.sock", "@abstract",
		"unix://@abstract", "/a.sock?mode=0660", "/a.sock?mode=0777&owner=root", "/a.sock?owner=0", "/a.sock?owner=root:root",
		"/a.sock?mode=1777", "/a.sock?mode=999", "/a.sock?mode=", "/a.sock?", "/a.sock?color=red", "/a.sock?mode=0600&mode=0644",
		"/a.sock?owner=nosuchuser1", "/a.sock?owner=4294967295", "@abstract?mode=0600", "127.0.0.1:80?mode=0600",
		"foo://x:1", "localhost", "unix://", "=:80", "a b=:80", "n=", "n=/x", "web=http=:80", "a,,b", "", " , ",
		"tcp://a://b:80", "x=unix:///p=q", "/" + "0123456789abcdefSECRET" + "/app.sock", "/a.sock?mode=0123456789abcdefSECRET",
		"0123456789abcdefSECRET=:80", "0123456789abcdefSECRET://x:1", "udp://0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ls, err := decodetest.Decode[Listeners](t, v)
		if err != nil {
			return
		}
		if len(ls) != strings.Count(v, ",")+1 {
			t.Errorf("Listeners(%q): %d listeners from %d entries", v, len(ls), strings.Count(v, ",")+1)
		}
		var canon []string
		for _, l := range ls {
			if msg := badListener(l); msg != "" {
				t.Errorf("Listeners(%q): %+v: %s", v, l, msg)
			}
			canon = append(canon, spell(l))
		}
		back, err := decodetest.Decode[Listeners](t, strings.Join(canon, ","))
		if err != nil || len(back) != len(ls) {
			t.Fatalf("Listeners(%q) = %+v, whose spelling %q decodes to %+v, %v", v, ls, canon, back, err)
		}
		for i := range ls {
			if a, b := ls[i], back[i]; a.Name != b.Name || a.Network != b.Network || a.Addr != b.Addr || a.Mode != b.Mode ||
				(a.Owner == nil) != (b.Owner == nil) || (a.Owner != nil && (a.Owner.UID != b.Owner.UID || a.Owner.GID != b.Owner.GID)) {
				t.Errorf("Listeners(%q)[%d] = %+v, whose spelling %q decodes to %+v", v, i, a, canon[i], b)
			}
		}
	})
}

// badListener says what is wrong with a decoded listener, "" if nothing.
func badListener(l ListenSpec) string {
	switch {
	case strings.ContainsAny(l.Name, ":/ ,="):
		return "name unfit for LISTEN_FDNAMES"
	case l.Addr == "" || strings.Contains(l.Addr, "?"):
		return "no address, or options left in it"
	}
	switch l.Network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			return "address not host:port"
		}
		if l.Mode != 0 || l.Owner != nil {
			return "a mode or owner on a TCP/UDP socket"
		}
	case "unix":
		if l.Mode > 0o777 {
			return "mode above 0777"
		}
		if strings.HasPrefix(l.Addr, "@") && (l.Mode != defaultSocketMode || l.Owner != nil) {
			return "a mode or owner on an abstract socket"
		}
		if o := l.Owner; o != nil && (o.UID == 1<<32-1 || o.GID == 1<<32-1) {
			return "owner id 4294967295: chown would leave the file as it is"
		}
	default:
		return "unknown network"
	}
	return ""
}

// spell is l's canonical BATON_LISTEN entry.
func spell(l ListenSpec) string {
	s := l.Network + "://" + l.Addr
	if l.Name != "" {
		s = l.Name + "=" + s
	}
	if l.Network == "unix" && !strings.HasPrefix(l.Addr, "@") {
		s += fmt.Sprintf("?mode=0%o", uint32(l.Mode))
		if l.Owner != nil {
			s += fmt.Sprintf("&owner=%d:%d", l.Owner.UID, l.Owner.GID)
		}
	}
	return s
}
