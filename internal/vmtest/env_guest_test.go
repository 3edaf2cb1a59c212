//go:build vmguest

package vmtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestGuestEnvironment checks what the harness promises inside the guest:
// the marker variable, IPVS and the other modules loaded, and the real
// (not busybox) tools first on PATH and at their full paths.
func TestGuestEnvironment(t *testing.T) {
	if !InGuest() {
		t.Fatalf("%s is not 1 in the guest", GuestEnv)
	}
	if got := os.Getenv("VMTEST_PROBE"); got != "it's here" {
		t.Errorf("VMTEST_PROBE = %q, want the value from Options.Env", got)
	}
	if wd, _ := os.Getwd(); wd != "/vmtest/pkg" {
		t.Errorf("working directory %q, want /vmtest/pkg", wd)
	}
	if _, err := os.Stat("testdata/vmhello/main.go"); err != nil {
		t.Errorf("the package's testdata is not in the guest: %v", err)
	}
	if os.Getpid() == 1 {
		t.Fatal("the test binary must not be PID 1")
	}
	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	loaded := map[string]bool{}
	for _, l := range strings.Split(string(mods), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			loaded[f[0]] = true
		}
	}
	for _, m := range []string{"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_wlc", "ip_vs_sh", "ip_vs_mh", "veth", "bridge", "dummy", "ipip", "nf_conntrack"} {
		if !loaded[m] {
			t.Errorf("module %s is not loaded", m)
		}
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Errorf("no /proc/net/ip_vs: %v", err)
	}

	run := func(want string, name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
			return
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("%s %s: output lacks %q:\n%s", name, strings.Join(args, " "), want, out)
		}
	}
	for _, p := range []string{"ip", "/sbin/ip", "/usr/sbin/ip", "/bin/ip"} {
		run("iproute2", p, "-V")
	}
	for _, p := range []string{"modprobe", "/sbin/modprobe", "/usr/sbin/modprobe"} {
		run("kmod", p, "--version")
	}
	run("ipvsadm", "ipvsadm", "--version")
	run("vmhello 1", "/bin/vmhello")
	run("IP Virtual Server version", "/usr/sbin/ipvsadm", "-Ln")
	// On-demand loading through kmod works (nf_tables is not loaded at boot).
	run("", "/sbin/modprobe", "nf_tables")
	for _, tool := range []struct{ name, arg, want string }{
		{"keepalived", "--version", "Keepalived"},
		{"tcpdump", "--version", "tcpdump"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Logf("%s not in the image (not installed on the host)", tool.name)
			continue
		}
		run(tool.want, tool.name, tool.arg)
	}
}
