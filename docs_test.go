package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// readmeMaxLines bounds the front page: what baton is, the two commands,
// an image, the variables most users set, and links. The rest is in docs/.
const readmeMaxLines = 300

// docFiles are the Markdown files whose links TestDocsLinks checks.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no docs/*.md: run the test from the repository root")
	}
	return append([]string{"README.md"}, files...)
}

// mdLink matches an inline link or image, [text](target) or
// [text](target "title"), and captures the target. Link text may hold
// code spans and brackets of its own, one level deep.
var mdLink = regexp.MustCompile(`\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+"[^"]*")?\s*\)`)

// codeSpan matches inline code, which can show link syntax without being a link.
var codeSpan = regexp.MustCompile("`+[^`]*`+")

// mdDoc is what the checks need of a Markdown file: its prose lines (fenced
// code blocks left out) with their line numbers, and its heading anchors.
type mdDoc struct {
	lines   []string
	numbers []int
	anchors map[string]bool
}

func readMarkdown(t *testing.T, path string) *mdDoc {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &mdDoc{anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if h, ok := heading(line); ok {
			// GitHub numbers repeated headings: x, x-1, x-2, ...
			a := slug(h)
			if k := seen[a]; k > 0 {
				d.anchors[a+"-"+itoa(k)] = true
			} else {
				d.anchors[a] = true
			}
			seen[a]++
		}
		d.lines = append(d.lines, line)
		d.numbers = append(d.numbers, n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// heading returns the text of an ATX heading (# to ######).
func heading(line string) (string, bool) {
	s := strings.TrimLeft(line, " ")
	if len(line)-len(s) > 3 {
		return "", false
	}
	n := 0
	for n < len(s) && s[n] == '#' {
		n++
	}
	if n == 0 || n > 6 || (n < len(s) && s[n] != ' ' && s[n] != '\t') {
		return "", false
	}
	text := strings.TrimSpace(s[n:])
	text = strings.TrimSpace(strings.TrimRight(text, "#")) // closing sequence
	return text, true
}

// slug is GitHub's anchor for a heading: the text as rendered (no
// backticks or link syntax), lowercased, with every character that is not
// a letter, digit, space, '-' or '_' dropped and each space made a '-'.
func slug(h string) string {
	h = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`).ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// TestDocsLinks: every relative link in README.md and docs/*.md points at
// a file that exists, and a #fragment at a heading of the file it names.
func TestDocsLinks(t *testing.T) {
	docs := map[string]*mdDoc{}
	get := func(path string) *mdDoc {
		if d, ok := docs[path]; ok {
			return d
		}
		d := readMarkdown(t, path)
		docs[path] = d
		return d
	}
	links := 0
	for _, file := range docFiles(t) {
		d := get(file)
		for i, line := range d.lines {
			line = codeSpan.ReplaceAllString(line, "")
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue // not ours to check offline
				}
				links++
				where := file + ":" + itoa(d.numbers[i])
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), path)
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s: link %q: %v", where, target, err)
						continue
					}
				}
				if frag == "" {
					continue
				}
				if !strings.HasSuffix(dest, ".md") {
					t.Errorf("%s: link %q: a #fragment on a file that is not Markdown", where, target)
					continue
				}
				if !get(dest).anchors[frag] {
					t.Errorf("%s: link %q: %s has no heading with the anchor #%s", where, target, dest, frag)
				}
			}
		}
	}
	if links < 20 {
		t.Errorf("only %d relative links found: the link pattern is probably broken", links)
	}
}

// TestDocsSlug pins the heading-anchor rules the link check relies on.
func TestDocsSlug(t *testing.T) {
	for h, want := range map[string]string{
		"Two commands":                                   "two-commands",
		"Metrics and probes: `BATON_HTTP_ADDR`":          "metrics-and-probes-baton_http_addr",
		"Under `docker run --init`":                      "under-docker-run---init",
		"Soak: 1,000 reloads under load":                 "soak-1000-reloads-under-load",
		"Reloads under load (`bench/reload/run`)":        "reloads-under-load-benchreloadrun",
		"Don't let your load tool hide it":               "dont-let-your-load-tool-hide-it",
		"`baton hello`: the demo worker":                 "baton-hello-the-demo-worker",
		"See [the spec](SPEC.md) here":                   "see-the-spec-here",
		"Reload from inside: docker exec … baton reload": "reload-from-inside-docker-exec--baton-reload",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}

// TestDocsReadmeLength: the README stays a front page.
func TestDocsReadmeLength(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines, at most %d: move detail into docs/", n, readmeMaxLines)
	}
}

// TestDocsTestCommand: CI runs exactly the README's test command.
func TestDocsTestCommand(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	const cmd = `sudo env "PATH=$PATH" test/run`
	if !strings.Contains(string(readme), "\n"+cmd+" ") {
		t.Errorf("README.md does not show the test command %q", cmd)
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^exec test/run\s*$`).Match(ci) {
		t.Errorf(".ci/run does not run exactly test/run:\n%s", ci)
	}
}

// TestDocsEveryVariable: docs/configuration.md lists every BATON_*
// variable that baton help prints, with the same default.
func TestDocsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, v := range knownVars() {
		name, def := v[0], v[1]
		if def == "" {
			def = "-"
		}
		row := "| `" + name + "` | `" + def + "` |"
		if !strings.Contains(doc, row) {
			t.Errorf("docs/configuration.md has no row %q (baton help: %s, default %q)", row, name, v[1])
		}
	}
}
