package netlab_test

import (
	"testing"

	"github.com/directord/directord/internal/vmtest"
)

// TestVMNetlab runs this package's netns tests inside the IPVS guest: the
// VM tier's tests build their labs with the same harness.
func TestVMNetlab(t *testing.T) {
	vmtest.Run(t, vmtest.Options{Run: "^TestNetns"})
}
