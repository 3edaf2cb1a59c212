package vip

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if got, err := readState(dir); err != nil || got != nil {
		t.Fatalf("missing state file: %v, %v; want nothing", got, err)
	}
	in := []stateEntry{
		{Address: netip.MustParsePrefix("2001:db8::50/128"), Interface: "eth0"},
		{Address: netip.MustParsePrefix("192.0.2.50/32"), Interface: "eth1"},
		{Address: netip.MustParsePrefix("192.0.2.50/32"), Interface: "eth0"},
	}
	if err := writeState(dir, in); err != nil {
		t.Fatal(err)
	}
	got, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []stateEntry{in[2], in[1], in[0]} // sorted by address, then interface
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// No temporary files are left next to it.
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want 1", len(ents))
	}
}

func TestStateCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(dir); err == nil {
		t.Fatal("corrupt state read without error")
	}
}
