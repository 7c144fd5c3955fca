//go:build linux

package spawn

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/baton-init/baton/internal/clip"
	"github.com/docker/go-units"
)

// User is BATON_USER: `uid[:gid]` or `name[:group]`, resolved against
// /etc/passwd and /etc/group when they exist (as docker run --user does).
type User struct {
	Spec string
	Cred *Credential
}

// Decode implements envconfig.Decoder. Names are resolved now, so a typo
// fails before anything starts.
func (u *User) Decode(v string) error {
	c, err := ResolveUser(v, "/etc/passwd", "/etc/group")
	if err != nil {
		return err
	}
	*u = User{Spec: v, Cred: c}
	return nil
}

// maxID is (uid_t)-1, the one 32-bit id that names nobody.
const maxID = 1<<32 - 1

// ResolveUser resolves spec against the given passwd and group files.
// A numeric uid with no passwd entry gets gid 0 and no supplementary
// groups, as docker and runc do; a user found in passwd gets its primary
// group and every group that lists it as a member.
func ResolveUser(spec, passwdPath, groupPath string) (*Credential, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || (hasGroup && group == "") {
		return nil, fmt.Errorf("want uid[:gid] or name[:group], got %q", clip.Value(spec))
	}
	// (uid_t)-1 means "leave unchanged" to setuid and chown: no process
	// can run as it.
	for _, id := range []string{name, group} {
		if n, err := strconv.ParseUint(id, 10, 64); err == nil && n >= maxID {
			return nil, fmt.Errorf("id %q out of range: want 0 to %d", clip.Value(id), uint64(maxID-1))
		}
	}
	users, _ := readColonFile(passwdPath) // missing file: numeric ids only
	groups, _ := readColonFile(groupPath)
	c := &Credential{Groups: []uint32{}}
	var login string
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		c.UID = uint32(n)
		for _, f := range users {
			if len(f) > 3 && f[2] == name {
				login = f[0]
				if g, err := fileID(f[3]); err == nil {
					c.GID = g
				}
				break
			}
		}
	} else {
		found := false
		for _, f := range users {
			if len(f) > 3 && f[0] == name {
				uid, err1 := fileID(f[2])
				gid, err2 := fileID(f[3])
				if err1 != nil || err2 != nil {
					return nil, fmt.Errorf("user %q has a malformed entry in %s", clip.Value(name), passwdPath)
				}
				c.UID, c.GID, login, found = uid, gid, name, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("no user %q in %s", clip.Value(name), passwdPath)
		}
	}
	if hasGroup {
		if n, err := strconv.ParseUint(group, 10, 32); err == nil {
			c.GID = uint32(n)
		} else {
			found := false
			for _, f := range groups {
				if len(f) > 2 && f[0] == group {
					g, err := fileID(f[2])
					if err != nil {
						return nil, fmt.Errorf("group %q has a malformed entry in %s", clip.Value(group), groupPath)
					}
					c.GID, found = g, true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("no group %q in %s", clip.Value(group), groupPath)
			}
		}
	}
	if login != "" {
		for _, f := range groups {
			if len(f) < 4 {
				continue
			}
			for _, m := range strings.Split(f[3], ",") {
				if m == login {
					if g, err := fileID(f[2]); err == nil && g != c.GID {
						c.Groups = append(c.Groups, g)
					}
				}
			}
		}
	}
	return c, nil
}

// fileID reads an id field of /etc/passwd or /etc/group. (uid_t)-1 is as
// malformed there as a word: setuid, setgid and setgroups refuse it, so
// every worker would fail to start, and chown would leave a socket file's
// owner as it is.
func fileID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err == nil && n == maxID {
		err = strconv.ErrRange
	}
	return uint32(n), err
}

func readColonFile(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out, sc.Err()
}

// Ulimits is BATON_ULIMITS in docker's syntax: `nofile=65536:65536,core=0`.
type Ulimits []*units.Ulimit

// Decode implements envconfig.Decoder.
func (u *Ulimits) Decode(v string) error {
	var out Ulimits
	for _, item := range strings.Split(v, ",") {
		l, err := units.ParseUlimit(strings.TrimSpace(item))
		if err != nil {
			return fmt.Errorf("want name=soft[:hard] like nofile=65536:65536,core=0, got %q", clip.Value(item))
		}
		if _, err := l.GetRlimit(); err != nil {
			return fmt.Errorf("ulimit %q: %w", clip.Value(item), err)
		}
		// go-units takes any negative number, and setrlimit reads limits
		// unsigned: -5 would be a soft limit near 2^64, above a hard limit
		// of 10, and every worker would fail to start on it.
		if l.Soft < -1 || l.Hard < -1 {
			return fmt.Errorf("ulimit %q: want -1 (unlimited) or a limit from 0", clip.Value(item))
		}
		out = append(out, l)
	}
	*u = out
	return nil
}
