package watch

import (
	"reflect"
	"strings"
	"testing"

	"github.com/baton-init/baton/internal/decodetest"
)

// FuzzPaths: BATON_WATCH. A blank value is no paths; otherwise there is a
// path per comma-separated element, none empty, none with a comma or
// spaces around it, and the paths joined back (String) decode to
// themselves.
func FuzzPaths(f *testing.F) {
	for _, v := range []string{
		"/etc/app.conf", "/etc/app, /run/secrets ,conf.d", "", "   ", ",", ",,", "a,", ",a", "a,,b", "a, ,b",
		"/config/..data", "a\tb", " /x ", "/0123456789abcdefSECRET/app.conf", "0123456789abcdefSECRET,,",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		p, err := decodetest.Decode[Paths](t, v)
		if err != nil {
			return
		}
		if strings.TrimSpace(v) == "" {
			if p != nil {
				t.Errorf("Paths(%q) = %q, want none", v, p)
			}
			return
		}
		if len(p) != strings.Count(v, ",")+1 {
			t.Errorf("Paths(%q): %d paths from %d elements", v, len(p), strings.Count(v, ",")+1)
		}
		for _, path := range p {
			if path == "" || path != strings.TrimSpace(path) || strings.Contains(path, ",") {
				t.Errorf("Paths(%q) has path %q", v, path)
			}
		}
		if back, err := decodetest.Decode[Paths](t, p.String()); err != nil || !reflect.DeepEqual(back, p) {
			t.Errorf("Paths(%q) = %q, whose spelling %q decodes to %q, %v", v, p, p.String(), back, err)
		}
	})
}
