package ipvs

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// KernelAvailable returns nil if the running kernel provides IPVS, and an
// error saying what is missing otherwise. It looks up the generic netlink
// family "IPVS", which the kernel registers when ip_vs is loaded (the lookup
// itself may autoload the module where module loading is possible).
//
// Check it before programming the table: moby/ipvs's New succeeds even when
// the kernel has no IPVS, and only later requests fail. NewKernel does the
// same check itself.
func KernelAvailable() error {
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		return errNoIPVS(err)
	}
	return nil
}

// errNoIPVS explains a failed lookup of the generic netlink family "IPVS".
func errNoIPVS(err error) error {
	return fmt.Errorf("kernel IPVS unavailable: generic netlink family \"IPVS\" not found (is the ip_vs module loaded? modprobe ip_vs): %w", err)
}
