//go:build vmguest

package ipvs

import (
	"net"
	"os/exec"
	"reflect"
	"syscall"
	"testing"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
)

func ipvsadmList(t *testing.T) []ipvsadmService {
	t.Helper()
	out, err := exec.Command("ipvsadm", "-Ln").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -Ln: %v\n%s", err, out)
	}
	t.Logf("ipvsadm -Ln:\n%s", out)
	svcs, err := parseIpvsadmList(string(out))
	if err != nil {
		t.Fatal(err)
	}
	return svcs
}

// TestGuestIPVSSmoke is the VM tier's foundation check: in a fresh network
// namespace, a service installed through moby/ipvs is exactly what
// ipvsadm lists, and nothing leaks into the initial namespace.
func TestGuestIPVSSmoke(t *testing.T) {
	if err := KernelAvailable(); err != nil {
		t.Fatalf("the VM kernel must provide IPVS: %v", err)
	}
	inNewNetns(t, func() {
		// Real servers must be routable in the namespace, or the kernel
		// refuses them with EINVAL.
		la := netlink.NewLinkAttrs()
		la.Name = "dummy0"
		link := &netlink.Dummy{LinkAttrs: la}
		if err := netlink.LinkAdd(link); err != nil {
			t.Fatalf("adding dummy0: %v", err)
		}
		addr, err := netlink.ParseAddr("198.51.100.1/24")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			t.Fatalf("adding %v: %v", addr, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			t.Fatalf("dummy0 up: %v", err)
		}

		h, err := mobyipvs.New("")
		if err != nil {
			t.Fatalf("ipvs.New: %v", err)
		}
		defer h.Close()
		if svcs, err := h.GetServices(); err != nil || len(svcs) != 0 {
			t.Fatalf("fresh namespace: services %v, err %v; want none", svcs, err)
		}
		svc := &mobyipvs.Service{
			AddressFamily: syscall.AF_INET,
			Protocol:      syscall.IPPROTO_TCP,
			Address:       net.ParseIP("192.0.2.50"),
			Port:          80,
			SchedName:     "wrr",
			Netmask:       0xffffffff,
		}
		if err := h.NewService(svc); err != nil {
			t.Fatalf("NewService: %v", err)
		}
		for _, r := range []struct {
			ip     string
			weight int
		}{{"198.51.100.11", 1}, {"198.51.100.12", 2}} {
			d := &mobyipvs.Destination{
				AddressFamily:   syscall.AF_INET,
				Address:         net.ParseIP(r.ip),
				Port:            80,
				Weight:          r.weight,
				ConnectionFlags: mobyipvs.ConnectionFlagMasq,
			}
			if err := h.NewDestination(svc, d); err != nil {
				t.Fatalf("NewDestination %s: %v", r.ip, err)
			}
		}

		want := []ipvsadmService{{
			Proto: "TCP", Addr: "192.0.2.50:80", Sched: "wrr",
			Reals: []ipvsadmReal{
				{Addr: "198.51.100.11:80", Forward: "Masq", Weight: 1},
				{Addr: "198.51.100.12:80", Forward: "Masq", Weight: 2},
			},
		}}
		if got := ipvsadmList(t); !reflect.DeepEqual(got, want) {
			t.Fatalf("ipvsadm -Ln in the test namespace:\n got %+v\nwant %+v", got, want)
		}
	})
	// Back in the initial namespace (every thread but the one inNewNetns
	// moved and restored has stayed there): its table stays empty, which
	// also shows that ipvsadm above ran in the test namespace.
	if got := ipvsadmList(t); len(got) != 0 {
		t.Fatalf("the service leaked into the initial namespace: %+v", got)
	}
}
