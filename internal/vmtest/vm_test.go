package vmtest

import (
	"strings"
	"testing"
)

// TestVM boots the guest once and runs this package's guest tests
// (env_guest_test.go), which check the guest environment itself, including
// a binary installed through Options.Binaries and an extra environment
// variable. Options.Console must see the guest's console lines.
func TestVM(t *testing.T) {
	var booted, passed bool
	Run(t, Options{
		Run:      "^TestGuest",
		Binaries: []string{"./internal/vmtest/testdata/vmhello"},
		Env:      []string{"VMTEST_PROBE=it's here"},
		Console: func(line string) {
			booted = booted || strings.Contains(line, "VMTEST-BOOTED")
			passed = passed || strings.HasPrefix(strings.TrimSpace(line), "--- PASS: TestGuest")
		},
	})
	if !t.Skipped() && (!booted || !passed) {
		t.Errorf("Options.Console saw VMTEST-BOOTED: %v, a --- PASS: TestGuest line: %v", booted, passed)
	}
}
