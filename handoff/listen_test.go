//go:build linux

package handoff

import (
	"reflect"
	"testing"
)

// TestListenersDecode: the accepted syntaxes of BATON_LISTEN, and rejected
// ones (the bad-input table in test/ covers the messages).
func TestListenersDecode(t *testing.T) {
	var ls Listeners
	if err := ls.Decode("web=127.0.0.1:80, /run/app.sock ,dns=udp6://[::1]:53,:8080,adm=unix:///run/adm.sock?mode=0600&owner=0:3"); err != nil {
		t.Fatal(err)
	}
	want := Listeners{
		{Name: "web", Network: "tcp", Addr: "127.0.0.1:80"},
		{Network: "unix", Addr: "/run/app.sock", Mode: 0o666},
		{Name: "dns", Network: "udp6", Addr: "[::1]:53"},
		{Network: "tcp", Addr: ":8080"},
		{Name: "adm", Network: "unix", Addr: "/run/adm.sock", Mode: 0o600},
	}
	if o := ls[len(ls)-1].Owner; o == nil || o.UID != 0 || o.GID != 3 {
		t.Errorf("owner=0:3 gave %+v", o)
	}
	ls[len(ls)-1].Owner = nil
	if !reflect.DeepEqual(ls, want) {
		t.Fatalf("Listeners =\n%+v\nwant\n%+v", ls, want)
	}
	for _, bad := range []string{"127.0.0.1:80?mode=0600", "@abstract?mode=0600", "/s.sock?mode=999", "/s.sock?mode=0600&color=red", "/s.sock?owner=nosuchuser1"} {
		if err := ls.Decode(bad); err == nil {
			t.Errorf("Listeners accepted %q", bad)
		}
	}
}
