package vmtest

import "testing"

// TestVM boots the guest once and runs this package's guest tests
// (env_guest_test.go), which check the guest environment itself, including
// a binary installed through Options.Binaries and an extra environment
// variable.
func TestVM(t *testing.T) {
	Run(t, Options{
		Run:      "^TestGuest",
		Binaries: []string{"./internal/vmtest/testdata/vmhello"},
		Env:      []string{"VMTEST_PROBE=it's here"},
	})
}
