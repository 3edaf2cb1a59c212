package vmtest

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// cpioWriter writes a "newc" (SVR4, no CRC) cpio archive, the format the
// Linux kernel unpacks as an initramfs. Names are written without a leading
// slash. Every entry gets its own inode number and nlink 1 (2 for
// directories), so the kernel never treats two entries as hard links.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	n   int64 // bytes written so far, for padding
	err error
}

func newCpioWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1}
}

const (
	cpioModeDir     = 0o040000
	cpioModeChar    = 0o020000
	cpioModeFile    = 0o100000
	cpioModeSymlink = 0o120000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) header(name string, mode uint32, size int64) {
	c.headerDev(name, mode, size, 0, 0)
}

func (c *cpioWriter) headerDev(name string, mode uint32, size int64, rmajor, rminor uint32) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	nlink := 1
	if mode&0o170000 == cpioModeDir {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	if name == "TRAILER!!!" {
		ino, nlink = 0, 1
	}
	if size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s is too large (%d bytes)", name, size)
		return
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) error {
	c.header(name, cpioModeDir|uint32(perm.Perm()), 0)
	return c.err
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	c.headerDev(name, cpioModeChar|uint32(perm.Perm()), 0, major, minor)
	return c.err
}

// Symlink adds a symbolic link name pointing at target.
func (c *cpioWriter) Symlink(name, target string) error {
	c.header(name, cpioModeSymlink|0o777, int64(len(target)))
	c.write([]byte(target))
	c.pad()
	return c.err
}

// File adds a regular file with the given contents.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	c.header(name, cpioModeFile|uint32(perm.Perm()), int64(len(data)))
	c.write(data)
	c.pad()
	return c.err
}

// CopyFile adds the regular file at src (following symlinks) as name.
func (c *cpioWriter) CopyFile(name, src string, perm fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("cpio: %s is not a regular file", src)
	}
	c.header(name, cpioModeFile|uint32(perm.Perm()), st.Size())
	if c.err != nil {
		return c.err
	}
	n, err := io.Copy(c.w, f)
	c.n += n
	if err != nil {
		c.err = err
		return err
	}
	if n != st.Size() {
		c.err = fmt.Errorf("cpio: %s changed size while being archived", src)
		return c.err
	}
	c.pad()
	return c.err
}

// Close writes the trailer entry. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0)
	return c.err
}

// fsTree is an in-memory file system image: guest path (relative, slash
// separated, no leading slash) to entry. Later additions replace earlier ones
// at the same path; parent directories are created implicitly.
type fsTree map[string]*fsEntry

type fsEntry struct {
	kind   byte // 'd', 'f' (from src or data), 'l', 'c'
	perm   fs.FileMode
	src    string // host file for kind 'f' when data is nil
	data   []byte
	target string // symlink target
	major  uint32
	minor  uint32
}

func newFSTree() fsTree { return fsTree{} }

func cleanGuestPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

func (t fsTree) put(p string, e *fsEntry) {
	p = cleanGuestPath(p)
	for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if cur, ok := t[d]; !ok || cur.kind != 'd' {
			t[d] = &fsEntry{kind: 'd', perm: 0o755}
		}
	}
	t[p] = e
}

// Dir adds a directory (mode 0755).
func (t fsTree) Dir(p string) { t.put(p, &fsEntry{kind: 'd', perm: 0o755}) }

// File adds the host file src (symlinks followed) as p.
func (t fsTree) File(p, src string, perm fs.FileMode) {
	t.put(p, &fsEntry{kind: 'f', perm: perm, src: src})
}

// Data adds a file with the given contents.
func (t fsTree) Data(p string, data []byte, perm fs.FileMode) {
	if data == nil {
		data = []byte{}
	}
	t.put(p, &fsEntry{kind: 'f', perm: perm, data: data})
}

// Symlink adds a symbolic link.
func (t fsTree) Symlink(p, target string) { t.put(p, &fsEntry{kind: 'l', target: target}) }

// CharDev adds a character device node.
func (t fsTree) CharDev(p string, perm fs.FileMode, major, minor uint32) {
	t.put(p, &fsEntry{kind: 'c', perm: perm, major: major, minor: minor})
}

// CopyDir adds the host directory tree src (regular files, directories and
// symlinks) below the guest directory p.
func (t fsTree) CopyDir(p, src string) error {
	return filepath.WalkDir(src, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, hp)
		if err != nil {
			return err
		}
		gp := path.Join(p, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			t.Dir(gp)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			t.Symlink(gp, target)
		case d.Type().IsRegular():
			t.File(gp, hp, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: unsupported file type %v", hp, d.Type())
		}
		return nil
	})
}

// Write writes the tree as a newc archive (with trailer) to w, directories
// before their contents.
func (t fsTree) Write(w io.Writer) error {
	paths := make([]string, 0, len(t))
	for p := range t {
		if p != "" && p != "." {
			paths = append(paths, p)
		}
	}
	// Lexical order puts "a" before "a/b"; compare with '/' lowest so that
	// "a/b" also sorts before "a.b" (not required, but tidy).
	sort.Slice(paths, func(i, j int) bool {
		return strings.ReplaceAll(paths[i], "/", "\x00") < strings.ReplaceAll(paths[j], "/", "\x00")
	})
	c := newCpioWriter(w)
	for _, p := range paths {
		e := t[p]
		var err error
		switch e.kind {
		case 'd':
			err = c.Dir(p, e.perm)
		case 'l':
			err = c.Symlink(p, e.target)
		case 'c':
			err = c.CharDev(p, e.perm, e.major, e.minor)
		case 'f':
			if e.data != nil {
				err = c.File(p, e.perm, e.data)
			} else {
				err = c.CopyFile(p, e.src, e.perm)
			}
		}
		if err != nil {
			return err
		}
	}
	return c.Close()
}
