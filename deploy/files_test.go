package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/directord/directord/internal/netlab"
)

// Every example passes `directord check --strict`, not only the plain
// check: an example that leans on a setting directord would ignore teaches
// operators to write one.
func TestExamplesPassStrictCheck(t *testing.T) {
	directord := netlab.Binary(t, "./cmd/directord")
	files, err := filepath.Glob(filepath.Join("examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no deploy/examples/*.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.Command(directord, "check", "--strict", "-c", f).CombinedOutput()
			if err != nil || strings.Contains(string(out), "warning") {
				t.Errorf("directord check --strict -c %s: %v\n%s", f, err, out)
			}
		})
	}
}

// unitSettings reads a systemd unit as section.key -> values, in order.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a setting: %q", path, line)
			}
			m[section+"."+k] = append(m[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// The unit is what the deploy issue asks for: directord tells systemd when
// it is ready, reloads on SIGHUP, and runs with the capabilities it needs
// and no more, on a read-only system.
func TestSystemdUnitHardening(t *testing.T) {
	u := unitSettings(t, filepath.Join("systemd", "directord.service"))
	want := map[string]string{
		"Service.Type":                     "notify",
		"Service.ExecStart":                "/usr/local/sbin/directord -c /etc/directord/directord.yaml",
		"Service.RuntimeDirectory":         "directord",
		"Service.RuntimeDirectoryPreserve": "yes",
		"Service.NoNewPrivileges":          "yes",
		"Service.ProtectSystem":            "strict",
		"Service.KillMode":                 "mixed",
		"Install.WantedBy":                 "multi-user.target",
	}
	for k, v := range want {
		if got := u[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if r := u["Service.ExecReload"]; len(r) == 0 || r[len(r)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload = %q, want the last one to be /bin/kill -HUP $MAINPID", r)
	}
	caps := strings.Fields(strings.Join(u["Service.CapabilityBoundingSet"], " "))
	slices.Sort(caps)
	wantCaps := []string{"CAP_IPC_LOCK", "CAP_KILL", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_NICE"}
	if !slices.Equal(caps, wantCaps) {
		t.Errorf("CapabilityBoundingSet = %v, want %v", caps, wantCaps)
	}
	if f := strings.Join(u["Service.SystemCallFilter"], " "); !strings.Contains(f, "io_uring_setup") || !strings.Contains(f, "io_uring_enter") {
		t.Errorf("SystemCallFilter = %q: without io_uring_setup and io_uring_enter a master's adverts are not queued in the kernel", f)
	}
	if _, ok := u["Service.User"]; ok {
		t.Error("User= is set: directord needs root's uid for its capabilities and to switch checks to their user")
	}
}
