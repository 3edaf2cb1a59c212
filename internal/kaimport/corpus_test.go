package kaimport

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/directord/directord/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/*.yaml and *.notes from the current output")

// corpus lists the real-world keepalived.conf files of testdata (the files
// under testdata/conf.d are fragments they include).
func corpus(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("corpus has %d files, want at least 8", len(files))
	}
	return files
}

// Acceptance: every corpus file converts, the result is exactly the golden
// YAML and notes, and directord accepts it without a warning.
func TestCorpusConvertsAndValidates(t *testing.T) {
	for _, conf := range corpus(t) {
		base := strings.TrimSuffix(conf, ".conf")
		t.Run(filepath.Base(base), func(t *testing.T) {
			out, notes, err := Convert(conf)
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			golden(t, base+".yaml", out)
			golden(t, base+".notes", []byte(notesText(notes)))
			cfg, err := config.Parse(base+".yaml", out)
			if err != nil {
				t.Fatalf("the converted file does not validate:\n%v", err)
			}
			if w := cfg.Warnings(); len(w) > 0 {
				t.Errorf("the converted file has warnings:\n%v", w)
			}
			for _, n := range notes {
				if n.File == "" || n.Line < 1 || n.Option == "" || n.Why == "" {
					t.Errorf("note without file, line, option or reason: %#v", n)
				}
			}
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs from the output (run go test -update after checking the change):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// The corpus covers what the import must handle: each feature appears in
// some keepalived.conf and its counterpart in that file's conversion.
func TestCorpusCoversEveryFeature(t *testing.T) {
	type file struct{ conf, yaml string }
	var files []file
	for _, conf := range corpus(t) {
		src, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		// Fragments count with the file that includes them.
		if strings.Contains(string(src), "include ") {
			frags, _ := filepath.Glob(filepath.Join(filepath.Dir(conf), "conf.d", "*"))
			for _, f := range frags {
				b, _ := os.ReadFile(f)
				src = append(src, b...)
			}
		}
		out, _, err := Convert(conf)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{string(src), string(out)})
	}
	for _, f := range []struct {
		feature    string
		conf, yaml string
	}{
		{"VRRP-only pair", `(?s)vrrp_instance.*nopreempt`, `preempt: false`},
		{"unicast", `unicast_peer`, `unicast_peers:`},
		{"VRRPv2 authentication", `auth_type PASS`, `type: pass`},
		{"IPv6 VRRP", `2001:db8::`, `version: 3`},
		{"sync group", `vrrp_sync_group`, `sync_groups:`},
		{"vrrp_script", `vrrp_script`, `scripts:`},
		{"notify", `notify_master`, `master: \[`},
		{"LVS-NAT", `lb_kind NAT`, `forwarding: nat`},
		{"LVS-DR", `lb_kind DR`, `forwarding: dr`},
		{"LVS-TUN", `lb_kind TUN`, `forwarding: tun`},
		{"fwmark", `virtual_server fwmark`, `fwmark: \d+`},
		{"sorry_server", `sorry_server `, `sorry_server:`},
		{"TCP_CHECK", `TCP_CHECK`, `type: tcp`},
		{"HTTP_GET", `HTTP_GET`, `type: http\n`},
		{"SSL_GET", `SSL_GET`, `type: https`},
		{"MISC_CHECK misc_dynamic", `misc_dynamic`, `dynamic_weight: true`},
		{"DNS_CHECK", `DNS_CHECK`, `type: dns`},
		{"UDP_CHECK", `UDP_CHECK`, `type: udp`},
		{"include with glob", `include \S*\*`, `.`},
		{"comments in both styles", `(?m)^\s*!.*\n(?s:.*)#`, `.`},
		{"lvs_sync_daemon", `lvs_sync_daemon`, `sync:`},
	} {
		confRe, yamlRe := regexp.MustCompile(f.conf), regexp.MustCompile(f.yaml)
		found := false
		for _, file := range files {
			if confRe.MatchString(file.conf) && yamlRe.MatchString(file.yaml) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: no corpus file has %q converted to %q", f.feature, f.conf, f.yaml)
		}
	}
}
