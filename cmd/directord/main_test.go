package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckContractExample(t *testing.T) {
	var out, errOut bytes.Buffer
	if rc := run([]string{"check", "-c", "../../internal/config/testdata/contract.yaml"}, &out, &errOut); rc != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", rc, errOut.String())
	}
	if !strings.Contains(out.String(), "configuration is valid") {
		t.Errorf("stdout: %q", out.String())
	}
	// The example's ignored settings are warnings; --strict makes them fatal.
	if !strings.Contains(errOut.String(), "warning: ") {
		t.Errorf("no warnings printed:\n%s", errOut.String())
	}
	errOut.Reset()
	if rc := run([]string{"check", "--strict", "-c", "../../internal/config/testdata/contract.yaml"}, io.Discard, &errOut); rc != exitConfig {
		t.Errorf("--strict: exit %d, want %d", rc, exitConfig)
	}
}

func TestCheckExamples(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	for _, f := range files {
		var errOut bytes.Buffer
		if rc := run([]string{"check", "--strict", "-c", f}, io.Discard, &errOut); rc != exitOK {
			t.Errorf("%s: exit %d:\n%s", f, rc, errOut.String())
		}
	}
}

func TestCheckBrokenPrintsEveryError(t *testing.T) {
	p := write(t, "directord.yaml", `node:
  log: {level: loud}
vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 300
      advert_interval: 15ms
      virtual_addresses: [192.0.2.50]
      bogus: true
`)
	var errOut bytes.Buffer
	if rc := run([]string{"check", "-c", p}, io.Discard, &errOut); rc != exitConfig {
		t.Fatalf("exit %d, want %d", rc, exitConfig)
	}
	want := []string{
		p + `:2:9: node.log.level: "loud" is not one of debug, info, warn, error`,
		p + `:7:7: vrrp.instances[0].vrid: 300 is out of range 1..255`,
		p + `:8:7: vrrp.instances[0].advert_interval: 15ms: VRRPv3 adverts are 10ms..40.95s in steps of 10ms`,
		p + `:10:7: vrrp.instances[0].bogus: unknown key "bogus"`,
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), errOut.String())
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d:\n got: %s\nwant: %s", i, lines[i], want[i])
		}
	}
}

func TestCheckMissingFile(t *testing.T) {
	var errOut bytes.Buffer
	if rc := run([]string{"check", "-c", "/nonexistent/directord.yaml"}, io.Discard, &errOut); rc != exitConfig {
		t.Errorf("exit %d", rc)
	}
	if !strings.Contains(errOut.String(), "no such file") {
		t.Errorf("stderr: %s", errOut.String())
	}
}

func TestRunRejectsSectionsNotSupportedYet(t *testing.T) {
	key := write(t, "sync.key", "0123456789abcdef0123456789abcdef\n")
	p := write(t, "d.yaml", "node:\n  name: lb1\n  state_dir: /tmp\nsync:\n  interface: lo\n  group: \"ff05::81\"\n  relay:\n"+
		"    listen: \"[2001:db8::1]:8849\"\n    peer: \"[2001:db8::2]:8849\"\n    key_file: "+key+"\n")
	var errOut bytes.Buffer
	if rc := run([]string{"-c", p}, io.Discard, &errOut); rc != exitConfig {
		t.Fatalf("exit %d, want %d: %s", rc, exitConfig, errOut.String())
	}
	if want := p + ":7:3: sync.relay: not supported yet: this build of directord cannot run a relay for an IPv6 sync group"; !strings.HasPrefix(errOut.String(), want) {
		t.Errorf("stderr %q, want prefix %q", errOut.String(), want)
	}
}

// TestRunReloadAndStop runs the real binary: it serves until SIGTERM, and a
// SIGHUP with a broken file keeps the running configuration.
func TestRunReloadAndStop(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "directord")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	state := t.TempDir()
	cfg := write(t, "d.yaml", "node: {name: lb1, state_dir: "+state+", control_socket: "+state+"/ctl.sock, log: {format: json}}\n")
	cmd := exec.Command(bin, "-c", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	waitFor := func(substr string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("directord exited before logging %q", substr)
				}
				if strings.Contains(l, substr) {
					return
				}
			case <-deadline:
				t.Fatalf("timed out waiting for %q", substr)
			}
		}
	}
	waitFor(`"msg":"directord running"`)

	if err := os.WriteFile(cfg, []byte("node: {name: lb1, state_dir: "+state+", bogus: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitFor(`unknown key \"bogus\"`)
	waitFor(`still running the previous configuration`)

	if err := os.WriteFile(cfg, []byte("node: {name: lb1, state_dir: "+state+", control_socket: "+state+"/ctl.sock}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitFor(`"msg":"configuration reloaded"`)

	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitFor(`"msg":"directord stopping"`)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
