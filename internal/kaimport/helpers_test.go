package kaimport

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/directord/directord/internal/config"
)

// memFS is an in-memory file system for includes.
type memFS map[string]string

func (m memFS) ReadFile(name string) ([]byte, error) {
	s, ok := m[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return []byte(s), nil
}

func (m memFS) Glob(pattern string) ([]string, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, err
	}
	var out []string
	for name := range m {
		if ok, _ := path.Match(pattern, name); ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// convert converts main.conf of files and fails the test on an error.
func convert(t *testing.T, files memFS) (string, []Note) {
	t.Helper()
	out, notes, err := ConvertFS(files, "main.conf")
	if err != nil {
		t.Fatalf("convert: %v", err)
	}
	return string(out), notes
}

// convertValid converts src and checks that directord accepts the result
// without warnings.
func convertValid(t *testing.T, src string) (*config.Config, []Note) {
	t.Helper()
	out, notes := convert(t, memFS{"main.conf": src})
	cfg, err := config.Parse("converted.yaml", []byte(out))
	if err != nil {
		t.Fatalf("converted file does not validate:\n%v\n%s", err, out)
	}
	if w := cfg.Warnings(); len(w) > 0 {
		t.Fatalf("converted file has warnings:\n%v\n%s", w, out)
	}
	return cfg, notes
}

// convertErr converts files and returns the error, failing if there is none.
func convertErr(t *testing.T, files memFS) *Error {
	t.Helper()
	out, _, err := ConvertFS(files, "main.conf")
	if err == nil {
		t.Fatalf("converted without error:\n%s", out)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T, not *Error: %v", err, err)
	}
	return e
}

// noteFor returns the note on option, failing if there is none.
func noteFor(t *testing.T, notes []Note, option string) Note {
	t.Helper()
	for _, n := range notes {
		if n.Option == option {
			return n
		}
	}
	t.Fatalf("no note for %q in:\n%s", option, notesText(notes))
	return Note{}
}

func notesText(notes []Note) string {
	var b strings.Builder
	for _, n := range notes {
		b.WriteString(n.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// vrrpOnly wraps an instance body into a minimal keepalived.conf.
func vrrpOnly(body string) string {
	return "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n virtual_ipaddress {\n  192.0.2.10\n }\n" + body + "\n}\n"
}
