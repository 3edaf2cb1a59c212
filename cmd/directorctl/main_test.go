package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestHelpListsEveryCommand(t *testing.T) {
	var out bytes.Buffer
	if rc := run([]string{"--help"}, &out, io.Discard); rc != exitOK {
		t.Fatalf("--help exit %d", rc)
	}
	for _, c := range []string{"status", "ipvs", "health", "events", "reload", "drill", "import-keepalived", "--json", "-s SOCKET"} {
		if !strings.Contains(out.String(), c) {
			t.Errorf("--help does not mention %q", c)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		rc   int
		err  string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"-s", "/nonexistent/x.sock", "--json", "status"}, exitFail, "cannot reach directord at /nonexistent/x.sock"},
		{[]string{"-s", "/nonexistent/x.sock", "status", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"drill"}, exitUsage, "name the VRRP instance"},
	} {
		var errOut bytes.Buffer
		if rc := run(tt.args, io.Discard, &errOut); rc != tt.rc || !strings.Contains(errOut.String(), tt.err) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", tt.args, rc, tt.rc, errOut.String(), tt.err)
		}
	}
}
