package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a configuration file, located by line, column and
// key path so an operator can jump straight to it.
type Error struct {
	File   string
	Line   int
	Column int
	// Path is the key path, e.g. "vrrp.instances[0].vrid".
	Path string
	Msg  string
}

func (e Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in file order. Parse returns all
// of them at once so a broken file is fixed in one round trip.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// pos is a location in the source file.
type pos struct{ line, col int }

// collector accumulates errors. A path that already has an error gets no
// second one, so a value that failed to decode does not also produce
// follow-on validation noise ("vrid: required" after "vrid: not an integer").
type collector struct {
	file string
	// at maps a key path to where it stands in the file.
	at   map[string]pos
	errs Errors
	// warns are problems that do not stop the file from loading.
	warns Errors
	seen  map[string]bool
}

func newCollector(file string) *collector {
	return &collector{file: file, at: map[string]pos{}, seen: map[string]bool{}}
}

// locate finds the position of path or, when the key is absent, of its
// nearest ancestor that is present (a missing key is reported where its
// parent mapping starts).
func (c *collector) locate(path string) pos {
	for p := path; ; {
		if at, ok := c.at[p]; ok {
			return at
		}
		if p == "" {
			return pos{1, 1}
		}
		p = parentPath(p)
	}
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (c *collector) addf(path, format string, args ...any) {
	if c.seen[path] {
		return
	}
	c.seen[path] = true
	at := c.locate(path)
	c.errs = append(c.errs, Error{File: c.file, Line: at.line, Column: at.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// addAt records an error at an explicit position (unknown or duplicate keys,
// whose paths are not in the position map).
func (c *collector) addAt(at pos, path, format string, args ...any) {
	c.errs = append(c.errs, Error{File: c.file, Line: at.line, Column: at.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// has reports whether the key path was written in the file.
func (c *collector) has(path string) bool {
	_, ok := c.at[path]
	return ok
}

func (c *collector) sorted() Errors {
	sortErrors(c.warns)
	sortErrors(c.errs)
	return c.errs
}

func sortErrors(es Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}
