package ipvs

import (
	"testing"

	"github.com/directord/directord/internal/vmtest"
)

// TestVM boots one VM with a real IPVS kernel and runs all guest tests of
// this package (files tagged vmguest, tests named TestGuest*) in it.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Options{Run: "^TestGuest"})
}
