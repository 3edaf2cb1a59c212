package kaimport

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directord/directord/internal/config"
	"gopkg.in/yaml.v3"
)

// FuzzImport converts arbitrary input from memory: main.conf is the first
// input and inc.conf the second, so includes, loops and globs are explored
// without touching the disk. It must never panic; a failure is a located
// Error; a success is YAML that the config package can read without
// panicking, with every note located.
func FuzzImport(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.conf")
	frags, _ := filepath.Glob("testdata/conf.d/*")
	seeds = append(seeds, frags...)
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, []byte("vrrp_script chk {\n script \"/bin/true\"\n}\n"))
	}
	f.Add([]byte("include inc.conf\n"), []byte("include main.conf\n"))
	f.Add([]byte("include *.conf\n"), []byte("$A=x\n${A} {\n}\n"))
	f.Add([]byte("virtual_server fwmark 1 {\n real_server 198.51.100.1 0 { weight 0 } }\n"), []byte(""))
	f.Fuzz(func(t *testing.T, main, inc []byte) {
		files := memFS{"main.conf": string(main), "inc.conf": string(inc)}
		out, notes, err := ConvertFS(files, "main.conf")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Line < 1 || e.File == "" || e.Msg == "" {
				t.Fatalf("unlocated error %T: %v", err, err)
			}
			return
		}
		var doc any
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, out)
		}
		if cfg, err := config.Parse("fuzz.yaml", out); err == nil && cfg == nil {
			t.Fatal("config.Parse returned neither a config nor an error")
		}
		for _, n := range notes {
			if n.Line < 1 || n.File == "" || n.Option == "" || strings.TrimSpace(n.Why) == "" {
				t.Fatalf("unlocated or empty note %#v", n)
			}
		}
	})
}
