package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/baton-init/baton/internal/clip"
)

// Paths is the decoded value of BATON_WATCH: a comma-separated list of files or directories.
// It implements envconfig.Decoder. The paths need not exist when decoded: a file that appears
// later is a change like any other, and New is where missing parents are reported.
type Paths []string

// Decode parses a comma-separated list, trimming spaces around each element. An empty or
// all-blank value decodes to no paths (so `BATON_WATCH=` in a compose file means "off"), but an
// empty element inside a list ("a,,b", "a,") is rejected: it is almost certainly a typo, and
// silently dropping it would hide which path the operator meant.
func (p *Paths) Decode(s string) error {
	if strings.TrimSpace(s) == "" {
		*p = nil
		return nil
	}
	parts := strings.Split(s, ",")
	out := make(Paths, 0, len(parts))
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return fmt.Errorf("watch paths %q: element %d is empty (stray comma?)", clip.Value(s), i+1)
		}
		out = append(out, part)
	}
	*p = out
	return nil
}

// bare strips the path an *fs.PathError repeats, for errors that name the
// path clipped themselves.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// String joins the paths back with commas, for logging.
func (p Paths) String() string { return strings.Join(p, ",") }
