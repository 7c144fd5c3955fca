//go:build linux

package spawn

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/baton-init/baton/internal/decodetest"
)

// passwdSeed and groupSeed are files a fuzzed spec is resolved against,
// with the malformed lines real files have: short lines, comments, blank
// lines, CRLF, ids that are not numbers or do not fit.
const (
	passwdSeed = "root:x:0:0:root:/root:/bin/bash\n" +
		"# a comment\n\n" +
		"app:x:1000:1000::/home/app:/bin/sh\r\n" +
		"short:x:1001\n" +
		"badid:x:abc:1000::/:/bin/false\n" +
		"badgid:x:1002:-1::/:/bin/false\n" +
		"twin:x:1003:1003::/:/bin/false\n" +
		"twin:x:1004:1004::/:/bin/false\n" +
		"huge:x:4294967296:1::/:/bin/false\n" +
		"minus1:x:4294967295:4294967295::/:/bin/false\n" +
		"gminus1:x:1005:4294967295::/:/bin/false\n" +
		":x:1006:1006::/:/bin/false\n"
	groupSeed = "root:x:0:\n" +
		"app:x:1000:\n" +
		"staff:x:50:app,other\n" +
		"video:x:44:app\n" +
		"dup:x:44:app\n" +
		"self:x:1000:app\n" +
		"badgid:x:zz:app\n" +
		"nogid:x\n" +
		"minus1:x:4294967295:app,gminus1\n" +
		"# comment:x:7:app\n"
)

// FuzzResolveUser: BATON_USER and a unix listener's owner against fuzzed
// passwd and group files. A resolved user never has the id 4294967295
// ((uid_t)-1, which setuid and chown take for "leave unchanged"); a
// numeric uid or gid in the spec is the one used; a name resolves only
// through a passwd line of that name; supplementary groups are listed in
// the group file and never repeat the primary one.
func FuzzResolveUser(f *testing.F) {
	for _, spec := range []string{
		"0", "root", "app", "app:staff", "app:0", "1000", "1000:44", "1005", "0:0", "nobody", "short", "badid",
		"badgid", "twin", "huge", "minus1", "gminus1", "app:badgid", "app:minus1", "app:nogid", "app:", ":0", "",
		"4294967295", "0:4294967295", "4294967294:4294967294", "app:staff:extra", "#", "0123456789abcdefSECRET",
		"app:0123456789abcdefSECRET",
	} {
		f.Add(spec, passwdSeed, groupSeed)
	}
	f.Add("app", "", "")
	f.Add("0", "\n\n", ":::\n")
	f.Add("app", "app:x:1000:1000\napp:x:1001:1001\n", "g:x:1:app,app\n")

	f.Fuzz(func(t *testing.T, spec, passwd, group string) {
		dir := t.TempDir()
		pp, gp := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
		if err := os.WriteFile(pp, []byte(passwd), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(gp, []byte(group), 0o644); err != nil {
			t.Fatal(err)
		}
		// The paths in a message are baton's own, not part of the value.
		paths := strings.NewReplacer(pp, "PASSWD", gp, "GROUP")
		messageFor := func(spec string) string {
			_, err := ResolveUser(spec, pp, gp)
			return paths.Replace(decodetest.Message(err))
		}
		c, err := ResolveUser(spec, pp, gp)
		again, err2 := ResolveUser(spec, pp, gp)
		if !reflect.DeepEqual(c, again) || (err == nil) != (err2 == nil) {
			t.Fatalf("ResolveUser(%q) differs from one call to the next: %+v, %v, then %+v, %v", spec, c, err, again, err2)
		}
		if err != nil {
			if m := decodetest.Check(spec, messageFor(spec), messageFor); m != "" {
				t.Errorf("ResolveUser(%q): error %s", spec, m)
			}
			return
		}
		if c.UID == maxID || c.GID == maxID || slices.Contains(c.Groups, maxID) {
			t.Errorf("ResolveUser(%q) = %+v: id 4294967295 names nobody", spec, c)
		}
		name, grp, _ := strings.Cut(spec, ":")
		if n, err := strconv.ParseUint(name, 10, 32); err == nil && uint32(n) != c.UID {
			t.Errorf("ResolveUser(%q) = %+v: uid is not the one asked for", spec, c)
		} else if err != nil && !hasLine(passwd, name, 2, c.UID) {
			t.Errorf("ResolveUser(%q) = %+v: no passwd line %s:x:%d", spec, c, name, c.UID)
		}
		if n, err := strconv.ParseUint(grp, 10, 32); err == nil && uint32(n) != c.GID {
			t.Errorf("ResolveUser(%q) = %+v: gid is not the one asked for", spec, c)
		} else if grp != "" && err != nil && !hasLine(group, grp, 2, c.GID) {
			t.Errorf("ResolveUser(%q) = %+v: no group line %s:x:%d", spec, c, grp, c.GID)
		}
		for _, g := range c.Groups {
			if g == c.GID || !hasLine(group, "", 2, g) {
				t.Errorf("ResolveUser(%q) = %+v: supplementary group %d is the primary one or in no group line", spec, c, g)
			}
		}
	})
}

// hasLine reports whether file has a line name:...:id with id in field i
// (any name when name is "").
func hasLine(file, name string, i int, id uint32) bool {
	for _, line := range strings.Split(file, "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) > i && (name == "" || f[0] == name) {
			if n, err := strconv.ParseUint(f[i], 10, 32); err == nil && uint32(n) == id {
				return true
			}
		}
	}
	return false
}

// FuzzUser: BATON_USER against this machine's files keeps the decoder
// contract (FuzzResolveUser checks what it resolves to).
func FuzzUser(f *testing.F) {
	for _, spec := range []string{"0", "root", "root:root", "0:0", "1000:1000", "nosuchuser1", ":", "0123456789abcdefSECRET"} {
		f.Add(spec)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		u, err := decodetest.Decode[User](t, spec)
		if err == nil && (u.Spec != spec || u.Cred == nil) {
			t.Errorf("User(%q) = %+v", spec, u)
		}
	})
}

// FuzzUlimits: BATON_ULIMITS. Every decoded limit names a known resource
// and is one the kernel takes: -1 (unlimited) or a number, soft at most
// hard as setrlimit compares them (unsigned); there is one a list entry,
// and name=soft:hard spelled back decodes to the same limits.
func FuzzUlimits(f *testing.F) {
	for _, v := range []string{
		"nofile=65536:65536", "nofile=65536:65536,core=0", " core=0 ", "nofile=1024", "nproc=-1", "nproc=-1:-1",
		"nofile=10:-1", "nofile=-1:10", "nofile=20:10", "nofile=-2", "nofile=-5:10", "stack=-9223372036854775808",
		"as=1", "bogus=1:2", "nofile", "nofile=", "nofile=1:2:3", "nofile=abc", "", ",", "NOFILE=1",
		"nofile=0123456789abcdefSECRET",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		us, err := decodetest.Decode[Ulimits](t, v)
		if err != nil {
			return
		}
		if len(us) != strings.Count(v, ",")+1 {
			t.Errorf("Ulimits(%q): %d limits from %d entries", v, len(us), strings.Count(v, ",")+1)
		}
		var canon []string
		for _, u := range us {
			rl, err := u.GetRlimit()
			if err != nil || u.Soft < -1 || u.Hard < -1 || rl.Soft > rl.Hard {
				t.Errorf("Ulimits(%q): %+v is no limit setrlimit takes (%+v, %v)", v, u, rl, err)
			}
			canon = append(canon, u.String())
		}
		spelled := strings.Join(canon, ",")
		if back, err := decodetest.Decode[Ulimits](t, spelled); err != nil || !reflect.DeepEqual(back, us) {
			t.Errorf("Ulimits(%q) = %v, whose spelling %q decodes to %v, %v", v, us, spelled, back, err)
		}
	})
}
