package ipvs

import (
	"os"
	"strings"
	"testing"
)

// TestKernelAvailableAgreesWithProc checks KernelAvailable against
// /proc/net/ip_vs, which exists exactly when IPVS is loaded. On a host
// without IPVS (like the development machine and CI's host kernel) this
// proves that detection fails with a clear error; inside the VM the guest
// smoke test proves the positive case.
func TestKernelAvailableAgreesWithProc(t *testing.T) {
	err := KernelAvailable() // may autoload ip_vs, so look at /proc afterwards
	_, procErr := os.Stat("/proc/net/ip_vs")
	present := procErr == nil
	switch {
	case present && err != nil:
		t.Fatalf("/proc/net/ip_vs exists but KernelAvailable() = %v", err)
	case !present && err == nil:
		t.Fatal("no /proc/net/ip_vs, but KernelAvailable() reported IPVS available")
	case !present:
		if !strings.Contains(err.Error(), "IPVS") {
			t.Errorf("error does not name IPVS: %v", err)
		}
		t.Logf("no IPVS in this kernel, as detected: %v", err)
	default:
		t.Log("this kernel has IPVS")
	}
}
