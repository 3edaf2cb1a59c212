package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

type cpioEntry struct {
	name string
	mode uint32
	rdev [2]uint32
	ino  uint32
	data string
}

// readNewc is a minimal newc reader for the tests.
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		ino, mode, size, namesize := field(0), field(1), field(6), field(11)
		off += 110
		name := string(b[off : off+int(namesize)-1])
		if b[off+int(namesize)-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		off += int(namesize)
		align()
		data := string(b[off : off+int(size)])
		off += int(size)
		align()
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioEntry{name: name, mode: mode, rdev: [2]uint32{field(9), field(10)}, ino: ino, data: data})
	}
}

func TestCpioTree(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "hostfile")
	if err := os.WriteFile(host, []byte("hello, file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "td", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "td", "sub", "x.txt"), []byte("xyz"), 0o644)
	os.Symlink("sub/x.txt", filepath.Join(dir, "td", "link"))

	tr := newFSTree()
	tr.Data("init", []byte("#!/bin/sh\n"), 0o755)
	tr.File("usr/sbin/tool", host, 0o755)
	tr.Symlink("bin/ip", "/bin/busybox")
	tr.Symlink("bin/ip", "/usr/sbin/ip") // replaces the busybox link
	tr.CharDev("dev/console", 0o600, 5, 1)
	tr.Data("a.b", []byte("1"), 0o644)
	tr.Data("a/b", []byte("22"), 0o644)
	if err := tr.CopyDir("vmtest/pkg/testdata", filepath.Join(dir, "td")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	ents := readNewc(t, buf.Bytes())
	got := map[string]cpioEntry{}
	seen := map[string]bool{}
	inos := map[uint32]bool{}
	var order []string
	for _, e := range ents {
		if inos[e.ino] {
			t.Errorf("inode %d used twice", e.ino)
		}
		inos[e.ino] = true
		if d := filepath.Dir(e.name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", e.name, d)
		}
		seen[e.name] = true
		got[e.name] = e
		order = append(order, e.name)
	}
	want := map[string]string{
		"init":                          fmt.Sprintf("%o:#!/bin/sh\n", 0o100755),
		"usr/sbin/tool":                 fmt.Sprintf("%o:hello, file", 0o100755),
		"bin/ip":                        fmt.Sprintf("%o:/usr/sbin/ip", 0o120777),
		"a.b":                           fmt.Sprintf("%o:1", 0o100644),
		"a/b":                           fmt.Sprintf("%o:22", 0o100644),
		"vmtest/pkg/testdata/sub/x.txt": fmt.Sprintf("%o:xyz", 0o100644),
		"vmtest/pkg/testdata/link":      fmt.Sprintf("%o:sub/x.txt", 0o120777),
		"usr":                           fmt.Sprintf("%o:", 0o40755),
		"vmtest/pkg/testdata":           fmt.Sprintf("%o:", 0o40755),
	}
	for name, w := range want {
		e, ok := got[name]
		if !ok {
			t.Errorf("missing %s (have %s)", name, strings.Join(order, " "))
			continue
		}
		if g := fmt.Sprintf("%o:%s", e.mode, e.data); g != w {
			t.Errorf("%s = %q, want %q", name, g, w)
		}
	}
	if c := got["dev/console"]; c.mode != 0o20600 || c.rdev != [2]uint32{5, 1} {
		t.Errorf("dev/console = mode %o rdev %v", c.mode, c.rdev)
	}

	// Cross-check with GNU cpio when it is installed.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio -it: %v\n%s", err, out)
		}
		if g, w := strings.Fields(string(out)), order; strings.Join(g, " ") != strings.Join(w, " ") {
			t.Errorf("cpio -it lists\n%s\nwant\n%s", g, w)
		}
	}
}

func TestShQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":        "''",
		"^TestX$": "'^TestX$'",
		"it's":    `'it'\''s'`,
		"a b\nc":  "'a b\nc'",
	} {
		if got := shQuote(in); got != want {
			t.Errorf("shQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
