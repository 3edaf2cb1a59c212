//go:build !linux

package netlab

import "testing"

// Require stops the test: network namespaces exist only on Linux. Under
// CI=true it fails instead of skipping, like the Linux version.
func Require(t testing.TB) {
	t.Helper()
	if inCI() {
		t.Fatal("netlab: network namespace tests need Linux, and CI=true forbids skipping them")
	}
	t.Skip("netlab: skipping, network namespaces need Linux")
}
