package vmtest

import "testing"

func TestModName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/netfilter/ipvs/ip_vs.ko":         "ip_vs",
		"kernel/net/netfilter/ipvs/ip_vs_wrr.ko.xz":  "ip_vs_wrr",
		"kernel/arch/x86/crypto/crc32c-intel.ko.zst": "crc32c_intel",
		"kernel/drivers/net/veth.ko.gz":              "veth",
	} {
		if got := modName(in); got != want {
			t.Errorf("modName(%q) = %q, want %q", in, got, want)
		}
	}
}
