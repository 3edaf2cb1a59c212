package kaimport

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// keepalived's own configuration test proves the corpus is keepalived
// syntax, not just what this package happens to accept. `keepalived -t`
// parses and checks the file and exits (0 = clean, 5/6 = errors); it starts
// no daemon and touches no interface, but it checks that every interface
// named exists, so it runs in a network namespace that has eth0 and eth1.
//
// keepalived 2.2.7 -t kills itself with SIGTERM after checking a script
// that runs as a user other than root (it mistakes its own parent for a
// dead one after dropping privileges), so the corpus runs its scripts as
// script_user root; a file that hit that bug would fail here, not pass.
func TestNetnsKeepalivedAcceptsCorpus(t *testing.T) {
	keepalived, err := exec.LookPath("keepalived")
	if err != nil {
		if os.Getenv("CI") != "" && os.Getenv("CI") != "false" && os.Getenv("CI") != "0" {
			t.Fatalf("keepalived is not installed: %v", err)
		}
		t.Skipf("keepalived is not installed (%v); install it to check the corpus against it", err)
	}
	lab := netlab.New(t)
	host := lab.AddHost("ka", "192.0.2.2/24")
	lab.AddLink(host, "eth1", "198.51.100.2/24")

	check := func(path string) (string, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := host.Run(ctx, keepalived, "--config-test", "--use-file", abs)
		return string(out), err
	}

	// The check can fail: an unknown keyword is an error to keepalived.
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n frobnicate 3\n virtual_ipaddress {\n  192.0.2.9\n }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := check(bad); err == nil || !strings.Contains(out, "frobnicate") {
		t.Fatalf("keepalived -t accepted a file with an unknown keyword (err %v):\n%s", err, out)
	}

	for _, conf := range corpus(t) {
		t.Run(filepath.Base(conf), func(t *testing.T) {
			if out, err := check(conf); err != nil {
				t.Errorf("keepalived -t rejects %s: %v", conf, err)
			} else if strings.TrimSpace(out) != "" {
				t.Errorf("keepalived -t warns about %s:\n%s", conf, out)
			}
		})
	}
}
