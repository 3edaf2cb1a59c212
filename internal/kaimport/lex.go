package kaimport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Limits that keep a hostile or broken file from running away; a real
// keepalived.conf is far inside all of them.
const (
	maxIncludeDepth = 16       // nested include levels
	maxFiles        = 1000     // files read in one conversion
	maxTotalSize    = 16 << 20 // bytes read in one conversion
	maxLineSize     = 1 << 20  // a line after $NAME expansion
	maxBlockDepth   = 32       // nested { } blocks
)

// Pos is where a token stands in the keepalived configuration.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Error is a problem that stops the conversion: a syntax error, an include
// that cannot be read, an include loop.
type Error struct {
	Pos
	Msg string
	// Err is the underlying error, if any (a failed read).
	Err error
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// FS gives the reader the files that include statements name. Paths are
// those of the including file joined with the include's pattern.
type FS interface {
	ReadFile(name string) ([]byte, error)
	Glob(pattern string) ([]string, error)
}

// OSFS reads from the operating system's file system.
type OSFS struct{}

// ReadFile reads the named file.
func (OSFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// Glob returns the files matching pattern, sorted.
func (OSFS) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

type tokKind int

const (
	tkWord tokKind = iota
	tkOpen
	tkClose
	tkEOL
)

type token struct {
	kind tokKind
	text string
	// quoted is set for a word written in double quotes: a command in
	// quotes is split into its arguments, and quotes keep # and ! literal.
	quoted bool
	pos    Pos
}

// lexer turns a file and everything it includes into one token stream.
type lexer struct {
	fsys  FS
	notes *notes
	toks  []token
	// defs holds $NAME=value definitions, which apply to every later
	// line, also in other files, as in keepalived.
	defs  map[string]string
	stack []string // files being read, outermost first
	order []string // files in the order they were first read
	files int
	size  int
}

var defRe = regexp.MustCompile(`^\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

// lexFile appends the tokens of one file. name is the path it was read from.
func (lx *lexer) lexFile(name string, data []byte) error {
	lx.files++
	lx.size += len(data)
	if lx.files > maxFiles {
		return &Error{Pos: Pos{name, 1}, Msg: fmt.Sprintf("more than %d files included", maxFiles)}
	}
	if lx.size > maxTotalSize {
		return &Error{Pos: Pos{name, 1}, Msg: fmt.Sprintf("more than %d bytes of configuration", maxTotalSize)}
	}
	lx.stack = append(lx.stack, filepath.Clean(name))
	if !slices.Contains(lx.order, name) {
		lx.order = append(lx.order, name)
	}
	defer func() { lx.stack = lx.stack[:len(lx.stack)-1] }()

	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		pos := Pos{name, i + 1}
		line := strings.TrimSuffix(lines[i], "\r")
		trimmed := strings.TrimSpace(line)
		if m := defRe.FindStringSubmatch(trimmed); m != nil {
			val := m[2]
			// A definition continues on the next line after a trailing
			// backslash.
			for strings.HasSuffix(val, `\`) && i+1 < len(lines) {
				i++
				val = strings.TrimSuffix(val, `\`) + " " + strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
			}
			val, err := lx.expand(val, pos)
			if err != nil {
				return err
			}
			if lx.defs == nil {
				lx.defs = map[string]string{}
			}
			lx.defs[m[1]] = val
			continue
		}
		if strings.Contains(line, "$") && len(lx.defs) > 0 {
			var err error
			if line, err = lx.expand(line, pos); err != nil {
				return err
			}
			trimmed = strings.TrimSpace(line)
		}
		switch {
		case strings.HasPrefix(trimmed, "@"):
			// keepalived keeps such a line only on the host whose
			// instance or config id matches; the id is not known here.
			word, _, _ := strings.Cut(trimmed, " ")
			lx.notes.add(pos, word, "line for a named keepalived instance (@id): the instance this file is for is unknown; the line is left out")
			continue
		case strings.HasPrefix(trimmed, "~SEQ"):
			lx.notes.add(pos, "~SEQ", "sequence expansion is not supported; the line is left out")
			continue
		}
		toks, err := tokenize(line, pos)
		if err != nil {
			return err
		}
		if len(toks) > 0 && toks[0].kind == tkWord && !toks[0].quoted && toks[0].text == "include" {
			if err := lx.include(toks, pos); err != nil {
				return err
			}
			continue
		}
		if len(toks) > 0 {
			lx.toks = append(lx.toks, toks...)
			lx.toks = append(lx.toks, token{kind: tkEOL, pos: pos})
		}
	}
	return nil
}

// expand replaces ${NAME}, and $NAME standing to the end of a word, by
// their definitions; an undefined name is left as it is.
func (lx *lexer) expand(s string, pos Pos) (string, error) {
	if !strings.Contains(s, "$") || len(lx.defs) == 0 {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '$' {
			b.WriteByte(s[i])
			i++
			continue
		}
		name, end := "", i+1
		if end < len(s) && s[end] == '{' {
			if j := strings.IndexByte(s[end:], '}'); j > 0 {
				name, end = s[end+1:end+j], end+j+1
			}
		} else {
			// Unbraced, the name runs to the next blank, as keepalived
			// reads it: "$NET.1" names NET.1, not NET.
			for end < len(s) && s[end] != ' ' && s[end] != '\t' {
				end++
			}
			name = s[i+1 : end]
		}
		if v, ok := lx.defs[name]; ok && name != "" {
			b.WriteString(v)
			i = end
		} else {
			b.WriteByte('$')
			i++
		}
		if b.Len() > maxLineSize {
			return "", &Error{Pos: pos, Msg: fmt.Sprintf("line longer than %d bytes after $NAME expansion", maxLineSize)}
		}
	}
	return b.String(), nil
}

// include reads the files an include line names, relative to the directory
// of the including file.
func (lx *lexer) include(toks []token, pos Pos) error {
	var args []string
	for _, t := range toks[1:] {
		if t.kind != tkWord {
			return &Error{Pos: pos, Msg: "include takes a file name or pattern, not a block"}
		}
		args = append(args, t.text)
	}
	if len(args) != 1 {
		return &Error{Pos: pos, Msg: fmt.Sprintf("include takes one file name or pattern, got %d", len(args))}
	}
	pattern := args[0]
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(filepath.Dir(pos.File), pattern)
	}
	files := []string{pattern}
	if strings.ContainsAny(pattern, "*?[") {
		var err error
		if files, err = lx.fsys.Glob(pattern); err != nil {
			return &Error{Pos: pos, Msg: fmt.Sprintf("include %s: %v", args[0], err), Err: err}
		}
		if len(files) == 0 {
			lx.notes.add(pos, "include", fmt.Sprintf("%s matches no file", args[0]))
			return nil
		}
		slices.Sort(files)
	}
	for _, f := range files {
		clean := filepath.Clean(f)
		if i := slices.Index(lx.stack, clean); i >= 0 {
			chain := append(slices.Clone(lx.stack[i:]), clean)
			return &Error{Pos: pos, Msg: "include loop: " + strings.Join(chain, " includes ")}
		}
		if len(lx.stack) >= maxIncludeDepth {
			return &Error{Pos: pos, Msg: fmt.Sprintf("include %s: includes nested deeper than %d", f, maxIncludeDepth)}
		}
		data, err := lx.fsys.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return &Error{Pos: pos, Msg: fmt.Sprintf("include %s: no such file", f), Err: err}
			}
			return &Error{Pos: pos, Msg: fmt.Sprintf("include %s: %v", f, err), Err: err}
		}
		if err := lx.lexFile(f, data); err != nil {
			return err
		}
	}
	return nil
}

// tokenize splits one line into words, quoted strings and braces. A '#' or
// '!' outside quotes starts a comment, also in the middle of a word, as
// keepalived reads it.
func tokenize(line string, pos Pos) ([]token, error) {
	var toks []token
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r':
			i++
		case c == '#' || c == '!':
			return toks, nil
		case c == '{':
			toks = append(toks, token{kind: tkOpen, text: "{", pos: pos})
			i++
		case c == '}':
			toks = append(toks, token{kind: tkClose, text: "}", pos: pos})
			i++
		case c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) && (line[j+1] == '"' || line[j+1] == '\\') {
					j++
				}
				b.WriteByte(line[j])
			}
			if j >= len(line) {
				return nil, &Error{Pos: pos, Msg: "unterminated quoted string"}
			}
			toks = append(toks, token{kind: tkWord, text: b.String(), quoted: true, pos: pos})
			i = j + 1
		default:
			j := i
			for j < len(line) && !strings.ContainsRune(" \t\v\f\r{}\"#!", rune(line[j])) {
				j++
			}
			toks = append(toks, token{kind: tkWord, text: line[i:j], pos: pos})
			i = j
		}
	}
	return toks, nil
}

// stmt is one keyword with its arguments and, if it opens one, its block.
type stmt struct {
	key   string
	args  []token
	pos   Pos
	block bool
	body  []*stmt
}

// argText returns argument i, or "" when there is none.
func (s *stmt) argText(i int) string {
	if i < len(s.args) {
		return s.args[i].text
	}
	return ""
}

type parser struct {
	toks []token
	p    int
}

// parse builds the statement tree. A statement's arguments run to the end
// of its line or to a brace; its block may open on the next line.
func parse(toks []token) ([]*stmt, error) {
	ps := &parser{toks: toks}
	return ps.list(0, nil)
}

func (ps *parser) skipEOL() {
	for ps.p < len(ps.toks) && ps.toks[ps.p].kind == tkEOL {
		ps.p++
	}
}

func (ps *parser) list(depth int, open *token) ([]*stmt, error) {
	var out []*stmt
	for {
		ps.skipEOL()
		if ps.p >= len(ps.toks) {
			if open != nil {
				return nil, &Error{Pos: open.pos, Msg: "unclosed { (missing })"}
			}
			return out, nil
		}
		t := ps.toks[ps.p]
		switch t.kind {
		case tkClose:
			if open == nil {
				return nil, &Error{Pos: t.pos, Msg: "} without a matching {"}
			}
			ps.p++
			return out, nil
		case tkOpen:
			return nil, &Error{Pos: t.pos, Msg: "{ without a keyword before it"}
		}
		s := &stmt{key: t.text, pos: t.pos}
		ps.p++
		for ps.p < len(ps.toks) && ps.toks[ps.p].kind == tkWord {
			s.args = append(s.args, ps.toks[ps.p])
			ps.p++
		}
		if ps.p < len(ps.toks) && ps.toks[ps.p].kind == tkEOL {
			// A block may open on the line after its keyword.
			q := ps.p
			for q < len(ps.toks) && ps.toks[q].kind == tkEOL {
				q++
			}
			if q < len(ps.toks) && ps.toks[q].kind == tkOpen {
				ps.p = q
			}
		}
		if ps.p < len(ps.toks) && ps.toks[ps.p].kind == tkOpen {
			o := ps.toks[ps.p]
			ps.p++
			if depth+1 > maxBlockDepth {
				return nil, &Error{Pos: o.pos, Msg: fmt.Sprintf("blocks nested deeper than %d", maxBlockDepth)}
			}
			body, err := ps.list(depth+1, &o)
			if err != nil {
				return nil, err
			}
			s.block, s.body = true, body
		}
		out = append(out, s)
	}
}
