package sync

import (
	"testing"

	"github.com/directord/directord/internal/vmtest"
)

// TestVM runs this package's guest tests (the kernel's sync daemons, its
// datagrams, directord failing over with live connections) in one VM boot.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Options{Run: "^TestGuest", Binaries: []string{"./cmd/directord"}, Env: guestEnv()})
}
