package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directord/directord/internal/config"
)

const corpusDir = "../../internal/kaimport/testdata"

// import-keepalived needs no control socket: the YAML goes to stdout and
// validates, what was not carried over goes to stderr with file:line.
func TestImportKeepalivedWritesYAMLAndNotes(t *testing.T) {
	conf := filepath.Join(corpusDir, "lvs_dr_tcp.conf")
	var out, errOut bytes.Buffer
	if rc := run([]string{"-s", "/nonexistent.sock", "import-keepalived", conf}, &out, &errOut); rc != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", rc, errOut.String())
	}
	cfg, err := config.Parse("out.yaml", out.Bytes())
	if err != nil {
		t.Fatalf("stdout does not validate: %v\n%s", err, out.String())
	}
	if len(cfg.IPVS.VirtualServices) != 1 || cfg.IPVS.VirtualServices[0].Forwarding != "dr" {
		t.Errorf("unexpected conversion:\n%s", out.String())
	}
	for _, want := range []string{"not carried over", conf + ":26: hysteresis:", conf + ":27: quorum_up:"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr does not mention %q:\n%s", want, errOut.String())
		}
	}
	if strings.Contains(out.String(), "hysteresis") {
		t.Errorf("notes leaked into the YAML on stdout:\n%s", out.String())
	}
}

// --json, before the command or after it, prints one object with the YAML
// and every note as {file, line, option, why}.
func TestImportKeepalivedJSON(t *testing.T) {
	conf := filepath.Join(corpusDir, "vrrp_pair.conf")
	for _, args := range [][]string{
		{"--json", "import-keepalived", conf},
		{"import-keepalived", conf, "--json"},
	} {
		var out, errOut bytes.Buffer
		if rc := run(args, &out, &errOut); rc != exitOK {
			t.Fatalf("%v: exit %d, stderr:\n%s", args, rc, errOut.String())
		}
		var res struct {
			YAML           string `json:"yaml"`
			NotCarriedOver []struct {
				File   string `json:"file"`
				Line   int    `json:"line"`
				Option string `json:"option"`
				Why    string `json:"why"`
			} `json:"not_carried_over"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%v: stdout is not JSON: %v\n%s", args, err, out.String())
		}
		if _, err := config.Parse("out.yaml", []byte(res.YAML)); err != nil {
			t.Errorf("%v: yaml does not validate: %v", args, err)
		}
		found := false
		for _, n := range res.NotCarriedOver {
			if n.File == conf && n.Line == 9 && n.Option == "smtp_server" && n.Why != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("%v: smtp_server at line 9 is not listed: %+v", args, res.NotCarriedOver)
		}
	}
}

func TestImportKeepalivedFailures(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	broken := write("broken.conf", "vrrp_instance VI_1 {\n interface eth0\n")
	// A fwmark NAT real server needs a port directord cannot invent.
	invalid := write("invalid.conf", "virtual_server fwmark 3 {\n lb_kind NAT\n real_server 198.51.100.1 {\n  TCP_CHECK {\n   connect_port 80\n  }\n }\n}\n")
	for _, tt := range []struct {
		args   []string
		rc     int
		stdout bool
		err    string
	}{
		{[]string{"import-keepalived"}, exitUsage, false, "Usage: directorctl import-keepalived"},
		{[]string{"import-keepalived", "a.conf", "b.conf"}, exitUsage, false, "Usage: directorctl import-keepalived"},
		{[]string{"import-keepalived", filepath.Join(dir, "missing.conf")}, exitFail, false, "missing.conf: no such file"},
		{[]string{"import-keepalived", broken}, exitFail, false, broken + ":1: unclosed {"},
		{[]string{"import-keepalived", invalid}, exitFail, true, "NAT needs IP:port"},
	} {
		var out, errOut bytes.Buffer
		rc := run(tt.args, &out, &errOut)
		if rc != tt.rc || !strings.Contains(errOut.String(), tt.err) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", tt.args, rc, tt.rc, errOut.String(), tt.err)
		}
		if got := out.Len() > 0; got != tt.stdout {
			t.Errorf("%v: stdout written %v, want %v:\n%s", tt.args, got, tt.stdout, out.String())
		}
	}
}

// The other commands still need the control socket.
func TestImportKeepalivedLeavesOtherCommandsAlone(t *testing.T) {
	var errOut bytes.Buffer
	if rc := run([]string{"status"}, io.Discard, &errOut); rc != exitFail || !strings.Contains(errOut.String(), "status") {
		t.Errorf("status: exit %d, stderr %q", rc, errOut.String())
	}
}
