package daemon

import (
	"testing"

	"github.com/directord/directord/internal/vmtest"
)

// TestVM runs the daemon's guest tests (directord itself, with IPVS) in
// the VM: one boot for the package.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Options{Run: "^TestGuest", Binaries: []string{"./cmd/directord"}})
}
