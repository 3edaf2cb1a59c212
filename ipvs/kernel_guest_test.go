//go:build vmguest

package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
)

// The guest tests of NetlinkKernel: everything it writes must be exactly
// what ipvsadm (v1.31, through its own libnl code) lists and saves, and
// everything it reads must be exactly what was written, on Debian's 6.1
// kernel. Each test gets a fresh network namespace.

// kernelLab is a namespace "lb" of a netlab with a dummy interface whose
// addresses (198.51.100.1/24, 2001:db8:1::1/64) make the real servers
// routable, and a NetlinkKernel opened in it.
type kernelLab struct {
	t *testing.T
	h *netlab.Host
	k *NetlinkKernel
}

func newKernelLab(t *testing.T) *kernelLab {
	t.Helper()
	if err := KernelAvailable(); err != nil {
		t.Fatalf("the VM kernel must provide IPVS: %v", err)
	}
	lab := netlab.New(t)
	h := lab.AddHost("lb")
	la := netlink.NewLinkAttrs()
	la.Name = "reals"
	dummy := &netlink.Dummy{LinkAttrs: la}
	if err := h.Netlink().LinkAdd(dummy); err != nil {
		t.Fatalf("add dummy: %v", err)
	}
	for _, a := range []string{"198.51.100.1/24", "2001:db8:1::1/64"} {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Netlink().AddrAdd(dummy, addr); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	if err := h.Netlink().LinkSetUp(dummy); err != nil {
		t.Fatal(err)
	}
	var k *NetlinkKernel
	if err := h.Do(func() (err error) { k, err = NewKernel(); return err }); err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return &kernelLab{t: t, h: h, k: k}
}

// on returns l reporting to t (a subtest).
func (l *kernelLab) on(t *testing.T) *kernelLab {
	c := *l
	c.t = t
	return &c
}

// ipvsadm runs ipvsadm in the lab namespace and returns its output.
func (l *kernelLab) ipvsadm(args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := l.h.Run(ctx, append([]string{"ipvsadm"}, args...)...)
	if err != nil {
		l.t.Fatal(err)
	}
	return string(out)
}

// kernelCase is a service with its real servers, as created through
// NetlinkKernel.
type kernelCase struct {
	name  string
	svc   Service
	dests []Destination
}

func (l *kernelLab) create(cases []kernelCase) {
	l.t.Helper()
	for _, c := range cases {
		if err := l.k.NewService(c.svc); err != nil {
			l.t.Fatalf("%s: %v", c.name, err)
		}
		for _, d := range c.dests {
			if err := l.k.NewDestination(c.svc.Key, d); err != nil {
				l.t.Fatalf("%s: %v", c.name, err)
			}
		}
	}
}

// check asserts that ipvsadm's listing, save format and thresholds, and
// Services(), show exactly cases, field by field.
func (l *kernelLab) check(cases []kernelCase) {
	l.t.Helper()
	list := l.ipvsadm("-Ln")
	l.t.Logf("ipvsadm -Ln:\n%s", list)
	gotList, err := parseIpvsadmList(list)
	if err != nil {
		l.t.Fatal(err)
	}
	var wantList []ipvsadmService
	for _, c := range cases {
		wantList = append(wantList, listEntry(c))
	}
	sortList(gotList)
	sortList(wantList)
	if diff := cmp.Diff(wantList, gotList, cmpopts.EquateEmpty()); diff != "" {
		l.t.Errorf("ipvsadm -Ln (-want +got):\n%s", diff)
	}

	save := l.ipvsadm("-S", "-n")
	l.t.Logf("ipvsadm -S -n:\n%s", save)
	gotSave, err := parseIpvsadmSave(save)
	if err != nil {
		l.t.Fatal(err)
	}
	var wantSave []ipvsadmSaveLine
	for _, c := range cases {
		wantSave = append(wantSave, saveLines(c)...)
	}
	sortSaveLines(wantSave)
	if diff := cmp.Diff(wantSave, gotSave, cmpopts.EquateEmpty()); diff != "" {
		l.t.Errorf("ipvsadm -S -n (-want +got):\n%s", diff)
	}

	gotThr, err := parseIpvsadmThresholds(l.ipvsadm("-Ln", "--thresholds"))
	if err != nil {
		l.t.Fatal(err)
	}
	wantThr := map[string]map[string][2]uint32{}
	for _, c := range cases {
		le := listEntry(c)
		m := map[string][2]uint32{}
		for _, d := range c.dests {
			m[d.Key.String()] = [2]uint32{d.UpperThreshold, d.LowerThreshold}
		}
		wantThr[le.Proto+" "+le.Addr] = m
	}
	if diff := cmp.Diff(wantThr, gotThr); diff != "" {
		l.t.Errorf("ipvsadm -Ln --thresholds (-want +got):\n%s", diff)
	}

	got, err := l.k.Services()
	if err != nil {
		l.t.Fatal(err)
	}
	var want []Entry
	for _, c := range cases {
		want = append(want, entryOf(c))
	}
	if diff := cmp.Diff(sortEntries(want), sortEntries(got), cmpAddrs, cmpopts.EquateEmpty()); diff != "" {
		l.t.Errorf("Services() (-want +got):\n%s", diff)
	}
}

func sortList(svcs []ipvsadmService) {
	sort.Slice(svcs, func(a, b int) bool { return svcs[a].Proto+" "+svcs[a].Addr < svcs[b].Proto+" "+svcs[b].Addr })
}

func sortEntries(es []Entry) []Entry {
	es = append([]Entry(nil), es...)
	sort.Slice(es, func(a, b int) bool { return es[a].Service.Key.String() < es[b].Service.Key.String() })
	for i := range es {
		ds := append([]DestEntry(nil), es[i].Destinations...)
		sort.Slice(ds, func(a, b int) bool { return ds[a].Key.String() < ds[b].Key.String() })
		es[i].Destinations = ds
	}
	return es
}

// entryOf is what Services() must return for c: the kernel's defaults
// filled in, zero counters (no traffic reaches these services).
func entryOf(c kernelCase) Entry {
	e := Entry{Service: c.svc}
	if e.Service.NetmaskBits == 0 {
		e.Service.NetmaskBits = 32
		if serviceIsIPv6(c.svc.Key) {
			e.Service.NetmaskBits = 128
		}
	}
	for _, d := range c.dests {
		e.Destinations = append(e.Destinations, DestEntry{Destination: d})
	}
	return e
}

func serviceIsIPv6(k ServiceKey) bool {
	if k.FWMark != 0 {
		return k.IPv6
	}
	return k.Address.Is6()
}

func schedFlagNames(s Service) string {
	var names []string
	if s.Flags&FlagSchedSH1 != 0 {
		names = append(names, s.Scheduler+"-fallback")
	}
	if s.Flags&FlagSchedSH2 != 0 {
		names = append(names, s.Scheduler+"-port")
	}
	return strings.Join(names, ",")
}

// maskString is the netmask as ipvsadm prints it: dotted for IPv4, a
// prefix length for IPv6; "" for a full mask, which ipvsadm leaves out.
func maskString(s Service) string {
	bits := s.NetmaskBits
	if serviceIsIPv6(s.Key) {
		if bits == 0 || bits == 128 {
			return ""
		}
		return strconv.Itoa(bits)
	}
	if bits == 0 || bits == 32 {
		return ""
	}
	return net.IP(net.CIDRMask(bits, 32)).String()
}

// listEntry renders c as `ipvsadm -Ln` lists it (print_service_entry of
// ipvsadm 1.31).
func listEntry(c kernelCase) ipvsadmService {
	s := c.svc
	e := ipvsadmService{Proto: s.Key.Protocol.String(), Sched: s.Scheduler}
	if s.Key.FWMark != 0 {
		e.Addr = strconv.Itoa(int(s.Key.FWMark))
		if s.Key.IPv6 {
			e.Addr += " IPv6"
		}
	} else {
		e.Addr = netip.AddrPortFrom(s.Key.Address, s.Key.Port).String()
	}
	var flags []string
	if n := schedFlagNames(s); n != "" {
		flags = append(flags, "("+n+")")
	}
	if s.Flags&FlagPersistent != 0 {
		flags = append(flags, fmt.Sprintf("persistent %d", s.Timeout/time.Second))
		if m := maskString(s); m != "" {
			flags = append(flags, "mask "+m)
		}
	}
	if s.Flags&FlagOnePacket != 0 {
		flags = append(flags, "ops")
	}
	e.Flags = strings.Join(flags, " ")
	for _, d := range c.dests {
		e.Reals = append(e.Reals, ipvsadmReal{Addr: d.Key.String(), Forward: d.Forward.String(), Weight: d.Weight})
	}
	sort.Slice(e.Reals, func(a, b int) bool { return e.Reals[a].Addr < e.Reals[b].Addr })
	return e
}

func saveService(k ServiceKey) string {
	if k.FWMark != 0 {
		s := "-f " + strconv.Itoa(int(k.FWMark))
		if k.IPv6 {
			s += " -6"
		}
		return s
	}
	opt := map[Protocol]string{TCP: "-t", UDP: "-u", SCTP: "--sctp-service"}[k.Protocol]
	return opt + " " + netip.AddrPortFrom(k.Address, k.Port).String()
}

// saveLines renders c as `ipvsadm -S -n` saves it. ipvsadm 1.31 does not
// save thresholds; check() reads them from --thresholds.
func saveLines(c kernelCase) []ipvsadmSaveLine {
	s := c.svc
	svc := saveService(s.Key)
	a := ipvsadmSaveLine{Cmd: "-A", Service: svc, Opts: map[string]string{"-s": s.Scheduler}}
	if s.Flags&FlagPersistent != 0 {
		a.Opts["-p"] = strconv.Itoa(int(s.Timeout / time.Second))
		if m := maskString(s); m != "" {
			a.Opts["-M"] = m
		}
	}
	if s.Flags&FlagOnePacket != 0 {
		a.Opts["-o"] = ""
	}
	if n := schedFlagNames(s); n != "" {
		a.Opts["-b"] = n
	}
	lines := []ipvsadmSaveLine{a}
	for _, d := range c.dests {
		r := ipvsadmSaveLine{Cmd: "-a", Service: svc, Real: d.Key.String(), Opts: map[string]string{"-w": strconv.Itoa(d.Weight)}}
		switch d.Forward {
		case Masq:
			r.Opts["-m"] = ""
		case Route:
			r.Opts["-g"] = ""
		case Tunnel:
			r.Opts["-i"] = ""
			switch d.TunnelType {
			case TunnelIPIP:
				r.Opts["--tun-type"] = "ipip"
			case TunnelGRE:
				r.Opts["--tun-type"] = "gre"
				r.Opts["--tun-nocsum"] = "" // no checksum flags set
			}
		}
		lines = append(lines, r)
	}
	return lines
}

var (
	r4 = func(last byte, port uint16) DestKey {
		return DestKey{netip.AddrFrom4([4]byte{198, 51, 100, last}), port}
	}
	r6 = func(last byte, port uint16) DestKey {
		return DestKey{netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", last)), port}
	}
	v4 = func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, last}) }
	v6 = func(last byte) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", last)) }
)

// guestSchedulers are the schedulers of Debian's 6.1 kernel; twos
// (added in 6.x) is tried separately.
var guestSchedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}

// twosAvailable loads ip_vs_twos if the guest kernel has it.
func twosAvailable(t *testing.T) bool {
	out, err := exec.Command("/usr/sbin/modprobe", "ip_vs_twos").CombinedOutput()
	if err != nil {
		t.Logf("no twos scheduler in this kernel: %v %s", err, strings.TrimSpace(string(out)))
		return false
	}
	return true
}

// kernelMatrix is one of everything NetlinkKernel must program.
func kernelMatrix(t *testing.T) []kernelCase {
	scheds := guestSchedulers
	if twosAvailable(t) {
		scheds = append(scheds, "twos")
	}
	var cases []kernelCase
	for i, s := range scheds {
		cases = append(cases, kernelCase{
			name: "scheduler " + s,
			svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(10), Port: uint16(8000 + i)}, Scheduler: s},
			dests: []Destination{
				{Key: r4(11, 80), Forward: Masq, Weight: 1},
				{Key: r4(12, 80), Forward: Masq, Weight: 2},
			},
		})
	}
	return append(cases, []kernelCase{{
		name: "every forwarding method",
		svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(20), Port: 80}, Scheduler: "wrr"},
		dests: []Destination{
			{Key: r4(11, 80), Forward: Masq, Weight: 1},
			{Key: r4(12, 80), Forward: Route, Weight: 2},
			{Key: r4(13, 80), Forward: Tunnel, Weight: 3, TunnelType: TunnelIPIP},
			{Key: r4(14, 80), Forward: Tunnel, Weight: 4, TunnelType: TunnelGRE},
		},
	}, {
		name: "fwmark IPv4 with mh-fallback,mh-port",
		svc:  Service{Key: ServiceKey{FWMark: 7}, Scheduler: "mh", Flags: FlagSchedSH1 | FlagSchedSH2},
		dests: []Destination{
			{Key: r4(11, 0), Forward: Route, Weight: 1},
			{Key: r4(12, 0), Forward: Route, Weight: 1},
		},
	}, {
		name: "fwmark IPv6",
		svc:  Service{Key: ServiceKey{FWMark: 8, IPv6: true}, Scheduler: "rr"},
		dests: []Destination{
			{Key: r6(0x11, 0), Forward: Route, Weight: 1},
			{Key: r6(0x12, 0), Forward: Tunnel, Weight: 1},
		},
	}, {
		name:  "persistent fwmark IPv4 with mask 255.255.0.0",
		svc:   Service{Key: ServiceKey{FWMark: 9}, Scheduler: "wlc", Flags: FlagPersistent, Timeout: 120 * time.Second, NetmaskBits: 16},
		dests: []Destination{{Key: r4(11, 0), Forward: Route, Weight: 1}},
	}, {
		name:  "persistence IPv4 300 s, mask 255.255.255.0",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: v4(21), Port: 443}, Scheduler: "rr", Flags: FlagPersistent, Timeout: 300 * time.Second, NetmaskBits: 24},
		dests: []Destination{{Key: r4(11, 443), Forward: Masq, Weight: 1}},
	}, {
		name:  "persistence IPv6 600 s, /64",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: v6(0x21), Port: 443}, Scheduler: "wlc", Flags: FlagPersistent, Timeout: 600 * time.Second, NetmaskBits: 64},
		dests: []Destination{{Key: r6(0x11, 443), Forward: Route, Weight: 1}},
	}, {
		name:  "persistence without a mask",
		svc:   Service{Key: ServiceKey{Protocol: UDP, Address: v4(21), Port: 53}, Scheduler: "rr", Flags: FlagPersistent, Timeout: 360 * time.Second},
		dests: []Destination{{Key: r4(11, 53), Forward: Masq, Weight: 1}},
	}, {
		name: "one-packet UDP",
		svc:  Service{Key: ServiceKey{Protocol: UDP, Address: v4(22), Port: 53}, Scheduler: "rr", Flags: FlagOnePacket},
		dests: []Destination{
			{Key: r4(11, 53), Forward: Masq, Weight: 1},
			{Key: r4(12, 53), Forward: Masq, Weight: 1},
		},
	}, {
		name:  "sh-fallback,sh-port",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: v4(23), Port: 80}, Scheduler: "sh", Flags: FlagSchedSH1 | FlagSchedSH2},
		dests: []Destination{{Key: r4(11, 80), Forward: Route, Weight: 1}},
	}, {
		name: "sh-fallback alone",
		svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(23), Port: 81}, Scheduler: "sh", Flags: FlagSchedSH1},
	}, {
		name: "mh-port alone, persistent, one-packet",
		svc:  Service{Key: ServiceKey{Protocol: UDP, Address: v4(23), Port: 82}, Scheduler: "mh", Flags: FlagSchedSH2 | FlagPersistent | FlagOnePacket, Timeout: 30 * time.Second},
	}, {
		name: "IPv6 service and reals",
		svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v6(0x24), Port: 80}, Scheduler: "wlc"},
		dests: []Destination{
			{Key: r6(0x11, 8080), Forward: Masq, Weight: 1},
			{Key: r6(0x12, 8080), Forward: Masq, Weight: 3},
			{Key: r6(0x13, 8080), Forward: Tunnel, Weight: 3, TunnelType: TunnelGRE},
		},
	}, {
		name: "weights and thresholds",
		svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(25), Port: 80}, Scheduler: "wlc"},
		dests: []Destination{
			{Key: r4(11, 80), Forward: Masq, Weight: 0},
			{Key: r4(12, 80), Forward: Masq, Weight: 5, UpperThreshold: 10, LowerThreshold: 5},
			{Key: r4(13, 80), Forward: Masq, Weight: 100, UpperThreshold: 1000},
			{Key: r4(14, 80), Forward: Route, Weight: 65535, UpperThreshold: 100, LowerThreshold: 100},
		},
	}, {
		name: "IPv6 tunnel real behind an IPv4 service",
		svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(26), Port: 80}, Scheduler: "rr"},
		dests: []Destination{
			{Key: r6(0x14, 80), Forward: Tunnel, Weight: 1},
			{Key: r4(14, 80), Forward: Tunnel, Weight: 1},
		},
	}, {
		name:  "IPv4 GRE tunnel real behind an IPv6 service",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: v6(0x26), Port: 80}, Scheduler: "rr"},
		dests: []Destination{{Key: r4(14, 80), Forward: Tunnel, Weight: 2, TunnelType: TunnelGRE}},
	}, {
		name:  "SCTP",
		svc:   Service{Key: ServiceKey{Protocol: SCTP, Address: v4(27), Port: 9}, Scheduler: "rr"},
		dests: []Destination{{Key: r4(11, 9), Forward: Masq, Weight: 1}},
	}}...)
}

// TestGuestKernelMatrix: every scheduler, forwarding method and service
// option created through NetlinkKernel is what ipvsadm shows and what
// Services() reads back.
func TestGuestKernelMatrix(t *testing.T) {
	l := newKernelLab(t)
	cases := kernelMatrix(t)
	l.create(cases)
	l.check(cases)

	// The handle stays in the namespace it was opened in, whichever
	// thread uses it: the initial namespace's table is untouched.
	out, err := exec.Command("ipvsadm", "-Ln").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -Ln in the initial namespace: %v\n%s", err, out)
	}
	if svcs, err := parseIpvsadmList(string(out)); err != nil || len(svcs) != 0 {
		t.Errorf("initial namespace: %v %v, want an empty table", svcs, err)
	}
}

// TestGuestKernelUpdateAndDelete: updates change fields in place,
// deletions remove exactly their item, and services written by ipvsadm
// are read correctly and survive.
func TestGuestKernelUpdateAndDelete(t *testing.T) {
	l := newKernelLab(t)
	a := kernelCase{
		name: "A",
		svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(30), Port: 80}, Scheduler: "wrr"},
		dests: []Destination{
			{Key: r4(11, 80), Forward: Masq, Weight: 1},
			{Key: r4(12, 80), Forward: Masq, Weight: 2},
			{Key: r4(13, 80), Forward: Route, Weight: 3},
		},
	}
	b := kernelCase{
		name:  "B",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: v4(31), Port: 80}, Scheduler: "rr"},
		dests: []Destination{{Key: r4(11, 80), Forward: Masq, Weight: 1}},
	}
	l.create([]kernelCase{a, b})

	// Services another tool wrote, read back through NetlinkKernel.
	for _, cmd := range [][]string{
		{"-A", "-t", "192.0.2.32:80", "-s", "lc", "-p", "120", "-M", "255.255.0.0"},
		{"-a", "-t", "192.0.2.32:80", "-r", "198.51.100.15:80", "-g", "-w", "7", "-x", "20", "-y", "10"},
		{"-A", "-f", "10", "-6", "-s", "sh", "-b", "sh-port"},
		{"-a", "-f", "10", "-6", "-r", "[2001:db8:1::15]:0", "-i", "-w", "2", "--tun-type", "gre"},
		{"-a", "-f", "10", "-6", "-r", "198.51.100.15:0", "-i", "-w", "3"},
	} {
		l.ipvsadm(cmd...)
	}
	foreign := []kernelCase{{
		name:  "foreign TCP",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: v4(32), Port: 80}, Scheduler: "lc", Flags: FlagPersistent, Timeout: 120 * time.Second, NetmaskBits: 16},
		dests: []Destination{{Key: r4(15, 80), Forward: Route, Weight: 7, UpperThreshold: 20, LowerThreshold: 10}},
	}, {
		name: "foreign fwmark IPv6",
		svc:  Service{Key: ServiceKey{FWMark: 10, IPv6: true}, Scheduler: "sh", Flags: FlagSchedSH2},
		dests: []Destination{
			{Key: r6(0x15, 0), Forward: Tunnel, Weight: 2, TunnelType: TunnelGRE},
			{Key: r4(15, 0), Forward: Tunnel, Weight: 3},
		},
	}}
	l.check(append([]kernelCase{a, b}, foreign...))

	t.Run("UpdateService to persistent sh", func(t *testing.T) {
		l := l.on(t)
		a.svc = Service{Key: a.svc.Key, Scheduler: "sh", Flags: FlagPersistent | FlagSchedSH1, Timeout: 900 * time.Second, NetmaskBits: 28}
		if err := l.k.UpdateService(a.svc); err != nil {
			t.Fatal(err)
		}
		l.check(append([]kernelCase{a, b}, foreign...))
	})
	t.Run("UpdateService clears flags", func(t *testing.T) {
		l := l.on(t)
		a.svc = Service{Key: a.svc.Key, Scheduler: "wrr", Flags: FlagOnePacket}
		if err := l.k.UpdateService(a.svc); err != nil {
			t.Fatal(err)
		}
		l.check(append([]kernelCase{a, b}, foreign...))
	})
	t.Run("UpdateDestination", func(t *testing.T) {
		l := l.on(t)
		a.dests[0] = Destination{Key: r4(11, 80), Forward: Route, Weight: 9, UpperThreshold: 50, LowerThreshold: 25}
		a.dests[2] = Destination{Key: r4(13, 80), Forward: Tunnel, Weight: 0, TunnelType: TunnelGRE}
		for _, d := range []Destination{a.dests[0], a.dests[2]} {
			if err := l.k.UpdateDestination(a.svc.Key, d); err != nil {
				t.Fatal(err)
			}
		}
		l.check(append([]kernelCase{a, b}, foreign...))
		// And back from tunnel to masq: the tunnel type goes with it.
		a.dests[2] = Destination{Key: r4(13, 80), Forward: Masq, Weight: 4}
		if err := l.k.UpdateDestination(a.svc.Key, a.dests[2]); err != nil {
			t.Fatal(err)
		}
		l.check(append([]kernelCase{a, b}, foreign...))
	})
	t.Run("DelDestination", func(t *testing.T) {
		l := l.on(t)
		if err := l.k.DelDestination(a.svc.Key, a.dests[1].Key); err != nil {
			t.Fatal(err)
		}
		a.dests = append(a.dests[:1], a.dests[2:]...)
		l.check(append([]kernelCase{a, b}, foreign...))
		// A real of the other family than its service's: found only
		// with its address family sent along.
		f := &foreign[1]
		f.dests[1] = Destination{Key: r4(15, 0), Forward: Tunnel, Weight: 8, TunnelType: TunnelGRE}
		if err := l.k.UpdateDestination(f.svc.Key, f.dests[1]); err != nil {
			t.Fatal(err)
		}
		l.check(append([]kernelCase{a, b}, foreign...))
		if err := l.k.DelDestination(f.svc.Key, f.dests[1].Key); err != nil {
			t.Fatal(err)
		}
		f.dests = f.dests[:1]
		l.check(append([]kernelCase{a, b}, foreign...))
	})
	t.Run("DelService", func(t *testing.T) {
		l := l.on(t)
		if err := l.k.DelService(b.svc.Key); err != nil {
			t.Fatal(err)
		}
		l.check(append([]kernelCase{a}, foreign...))
		if err := l.k.DelService(foreign[1].svc.Key); err != nil {
			t.Fatal(err)
		}
		l.check([]kernelCase{a, foreign[0]})
	})
}

var ipvsadmTimeoutRE = regexp.MustCompile(`^Timeout \(tcp tcpfin udp\): (\d+) (\d+) (\d+)\n$`)

func (l *kernelLab) ipvsadmTimeouts() Timeouts {
	l.t.Helper()
	out := l.ipvsadm("-L", "--timeout")
	m := ipvsadmTimeoutRE.FindStringSubmatch(out)
	if m == nil {
		l.t.Fatalf("unexpected ipvsadm -L --timeout output %q", out)
	}
	sec := func(s string) time.Duration {
		n, _ := strconv.Atoi(s)
		return time.Duration(n) * time.Second
	}
	return Timeouts{TCP: sec(m[1]), TCPFin: sec(m[2]), UDP: sec(m[3])}
}

// TestGuestKernelTimeouts: Timeouts and SetTimeouts round-trip against
// `ipvsadm -L --timeout` and `ipvsadm --set`.
func TestGuestKernelTimeouts(t *testing.T) {
	l := newKernelLab(t)
	got, err := l.k.Timeouts()
	if err != nil {
		t.Fatal(err)
	}
	if want := l.ipvsadmTimeouts(); got != want {
		t.Errorf("Timeouts() = %+v, ipvsadm says %+v", got, want)
	}
	if want := (Timeouts{TCP: 900 * time.Second, TCPFin: 120 * time.Second, UDP: 300 * time.Second}); got != want {
		t.Errorf("a fresh namespace has %+v, want the kernel defaults %+v", got, want)
	}

	// Zero fields stay as they are.
	if err := l.k.SetTimeouts(Timeouts{TCP: 1000 * time.Second, UDP: 45 * time.Second}); err != nil {
		t.Fatal(err)
	}
	want := Timeouts{TCP: 1000 * time.Second, TCPFin: 120 * time.Second, UDP: 45 * time.Second}
	if got := l.ipvsadmTimeouts(); got != want {
		t.Errorf("after SetTimeouts, ipvsadm says %+v, want %+v", got, want)
	}
	if got, err := l.k.Timeouts(); err != nil || got != want {
		t.Errorf("Timeouts() = %+v, %v; want %+v", got, err, want)
	}
	if err := l.k.SetTimeouts(Timeouts{}); err != nil {
		t.Errorf("SetTimeouts of nothing: %v", err)
	}
	if err := l.k.SetTimeouts(Timeouts{TCPFin: 1500 * time.Millisecond}); err == nil {
		t.Error("SetTimeouts accepted a fractional second")
	}

	l.ipvsadm("--set", "111", "22", "33")
	want = Timeouts{TCP: 111 * time.Second, TCPFin: 22 * time.Second, UDP: 33 * time.Second}
	if got, err := l.k.Timeouts(); err != nil || got != want {
		t.Errorf("after ipvsadm --set 111 22 33: Timeouts() = %+v, %v", got, err)
	}
}

// TestGuestKernelStats: connections through a masq service to a local
// listener count in the 64-bit counters of the service and its real, as
// ipvsadm --stats shows them, and appear in the connection table.
func TestGuestKernelStats(t *testing.T) {
	l := newKernelLab(t)
	const conns = 5
	vip := netip.MustParseAddrPort("198.51.100.1:8080")
	rip := netip.MustParseAddrPort("198.51.100.1:9090")
	key := ServiceKey{Protocol: TCP, Address: vip.Addr(), Port: vip.Port()}
	l.create([]kernelCase{{
		name:  "stats",
		svc:   Service{Key: key, Scheduler: "rr"},
		dests: []Destination{{Key: DestKey{rip.Addr(), rip.Port()}, Forward: Masq, Weight: 1}},
	}})

	var ln net.Listener
	if err := l.h.Do(func() (err error) { ln, err = net.Listen("tcp", rip.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from the real server\n"))
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		err := l.h.Do(func() error {
			c, err := net.DialTimeout("tcp", vip.String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("hello\n"))
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil || !strings.HasPrefix(string(b[:n]), "hello from the real server") {
				return fmt.Errorf("read %q, %v", b[:n], err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("connection %d through %s: %v", i, vip, err)
		}
	}

	// The kernel folds per-CPU counters into the totals every 2 s.
	var e Entry
	deadline := time.Now().Add(20 * time.Second)
	for {
		es, err := l.k.Services()
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 || len(es[0].Destinations) != 1 {
			t.Fatalf("Services() = %+v, want one service with one real", es)
		}
		e = es[0]
		if e.Stats.Conns >= conns || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("service stats %+v; real %+v", e.Stats, e.Destinations[0])
	st, d := e.Stats, e.Destinations[0]
	if st.Conns != conns || d.Stats.Conns != conns {
		t.Errorf("Conns: service %d, real %d; want %d", st.Conns, d.Stats.Conns, conns)
	}
	// Each connection: at least SYN, ACK+data, FIN in; SYN-ACK, data, FIN out.
	if st.InPkts < 3*conns || st.OutPkts < 3*conns || st.InBytes < st.InPkts*40 || st.OutBytes < st.OutPkts*40 {
		t.Errorf("implausible counters %+v", st)
	}
	if d.Stats.InPkts != st.InPkts || d.Stats.OutBytes != st.OutBytes {
		t.Errorf("the only real's counters %+v differ from the service's %+v", d.Stats, st)
	}
	if d.ActiveConns+d.InactiveConns != conns {
		t.Errorf("active %d + inactive %d connections, want %d", d.ActiveConns, d.InactiveConns, conns)
	}

	// ipvsadm agrees (exact numbers).
	out := l.ipvsadm("-Ln", "--stats", "--exact")
	t.Logf("ipvsadm -Ln --stats --exact:\n%s", out)
	var found bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 7 && f[0] == "TCP" && f[1] == vip.String() {
			found = true
			want := []uint64{st.Conns, st.InPkts, st.OutPkts, st.InBytes, st.OutBytes}
			for i, w := range want {
				if n, err := strconv.ParseUint(f[2+i], 10, 64); err != nil || n < w {
					t.Errorf("ipvsadm --stats column %d = %s, Services() read %d a moment earlier", i+2, f[2+i], w)
				}
			}
		}
	}
	if !found {
		t.Error("service not in ipvsadm --stats")
	}

	// Counters never go backwards.
	es, err := l.k.Services()
	if err != nil {
		t.Fatal(err)
	}
	if s2 := es[0].Stats; s2.Conns < st.Conns || s2.InPkts < st.InPkts || s2.OutBytes < st.OutBytes {
		t.Errorf("counters went backwards: %+v then %+v", st, s2)
	}

	// The connection table, read in the lab namespace (/proc/net is the
	// main thread's namespace), lists the same connections as ipvsadm -Lnc.
	var table []Connection
	if err := l.h.Do(func() (err error) {
		table, err = ReadConnections("/proc/thread-self/net/ip_vs_conn")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lnc := l.ipvsadm("-Lnc")
	t.Logf("ipvsadm -Lnc:\n%s", lnc)
	if len(table) != conns {
		t.Errorf("%d connections in the table, want %d: %+v", len(table), conns, table)
	}
	for _, c := range table {
		if c.Protocol != "TCP" || c.Virtual != vip || c.Dest != rip || c.Client.Addr() != vip.Addr() ||
			c.Expires <= 0 || c.Expires > 120*time.Second {
			t.Errorf("unexpected entry %+v", c)
		}
		// ipvsadm -Lnc: "TCP 01:59  TIME_WAIT   198.51.100.1:50562 198.51.100.1:8080  198.51.100.1:9090"
		if !regexp.MustCompile(`(?m)^TCP\s+\d\d:\d\d\s+` + regexp.QuoteMeta(c.State) + `\s+` +
			regexp.QuoteMeta(c.Client.String()) + `\s+` + regexp.QuoteMeta(vip.String()) + `\s+` + regexp.QuoteMeta(rip.String()) + `\s*$`).MatchString(lnc) {
			t.Errorf("entry %+v not in ipvsadm -Lnc", c)
		}
	}
	if root, err := ReadConnections(ConnectionsPath); err != nil || len(root) != 0 {
		t.Errorf("the initial namespace's table: %v, %v; want empty", root, err)
	}
}

// TestGuestKernelErrors: the kernel's refusals come back wrapped, in
// operator words, with the errno kept for errors.Is, and leave the table
// as it was.
func TestGuestKernelErrors(t *testing.T) {
	l := newKernelLab(t)
	k := l.k
	good := kernelCase{
		name:  "good",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: vip4, Port: 80}, Scheduler: "rr"},
		dests: []Destination{{Key: r4(11, 80), Forward: Masq, Weight: 1}},
	}
	l.create([]kernelCase{good})
	other := ServiceKey{Protocol: TCP, Address: vip4, Port: 81}
	for _, tc := range []struct {
		name  string
		err   error
		errno syscall.Errno
		want  string // the whole message, or a regexp of it
	}{{
		name: "unknown scheduler", errno: syscall.ENOENT,
		err:  k.NewService(Service{Key: other, Scheduler: "foo"}),
		want: `^new service TCP 192\.0\.2\.50:81: no such file or directory \(scheduler "foo" not available in this kernel\?\)$`,
	}, {
		name: "duplicate service", errno: syscall.EEXIST,
		err:  k.NewService(good.svc),
		want: `^new service TCP 192\.0\.2\.50:80: file exists \(service already exists\)$`,
	}, {
		name: "real server in a missing service", errno: syscall.ESRCH,
		err:  k.NewDestination(other, Destination{Key: r4(11, 80), Weight: 1}),
		want: `^new destination 198\.51\.100\.11:80 in TCP 192\.0\.2\.50:81: no such process \(no such service\)$`,
	}, {
		name: "update of a missing service", errno: syscall.ESRCH,
		err:  k.UpdateService(Service{Key: other, Scheduler: "rr"}),
		want: `^update service TCP 192\.0\.2\.50:81: .*\(no such service\)$`,
	}, {
		name: "delete of a missing service", errno: syscall.ESRCH,
		err:  k.DelService(other),
		want: `^delete service TCP 192\.0\.2\.50:81: .*\(no such service\)$`,
	}, {
		name: "multicast real", errno: syscall.EINVAL,
		err:  k.NewDestination(good.svc.Key, Destination{Key: DestKey{netip.MustParseAddr("224.1.1.1"), 80}, Weight: 1}),
		want: `^new destination 224\.1\.1\.1:80 in TCP 192\.0\.2\.50:80: invalid argument \(real server address not routable in this network namespace`,
	}, {
		name: "broadcast real", errno: syscall.EINVAL,
		err:  k.NewDestination(good.svc.Key, Destination{Key: r4(255, 80), Weight: 1}),
		want: `not routable in this network namespace`,
	}, {
		name: "IPv6 masq real behind an IPv4 service", errno: syscall.EINVAL,
		err:  k.NewDestination(good.svc.Key, Destination{Key: r6(0x11, 80), Forward: Masq, Weight: 1}),
		want: `^new destination \[2001:db8:1::11\]:80 in TCP 192\.0\.2\.50:80: invalid argument \(a real server of the other address family needs tunnel forwarding`,
	}, {
		name: "duplicate real", errno: syscall.EEXIST,
		err:  k.NewDestination(good.svc.Key, good.dests[0]),
		want: `\(real server already in this service\)$`,
	}, {
		name: "update of a missing real", errno: syscall.ENOENT,
		err:  k.UpdateDestination(good.svc.Key, Destination{Key: r4(99, 80), Weight: 1}),
		want: `^update destination 198\.51\.100\.99:80 in TCP 192\.0\.2\.50:80: no such file or directory \(no such real server in this service\)$`,
	}, {
		name: "delete of a missing real", errno: syscall.ENOENT,
		err:  k.DelDestination(good.svc.Key, r4(99, 80)),
		want: `\(no such real server in this service\)$`,
	}} {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, tc.err)
		if !errors.Is(tc.err, tc.errno) {
			t.Errorf("%s: %v is not %v", tc.name, tc.err, tc.errno)
		}
		if !regexp.MustCompile(tc.want).MatchString(tc.err.Error()) {
			t.Errorf("%s: error %q does not match %q", tc.name, tc.err, tc.want)
		}
	}
	if !twosAvailable(t) {
		err := k.NewService(Service{Key: other, Scheduler: "twos"})
		if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), `scheduler "twos" not available`) {
			t.Errorf("twos on a kernel without it: %v", err)
		}
	}
	// Nothing of that reached the table.
	l.check([]kernelCase{good})

	// In a namespace without any address the kernel refuses every IPv4
	// real server: nothing is unicast there yet.
	inNewNetns(t, func() {
		k, err := NewKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if err := k.NewService(good.svc); err != nil {
			t.Fatal(err)
		}
		err = k.NewDestination(good.svc.Key, good.dests[0])
		t.Logf("empty namespace: %v", err)
		if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "not routable in this network namespace") {
			t.Errorf("real server in a namespace without addresses: %v", err)
		}
	})
}

// TestGuestKernelLargeTable: dumps that span many netlink reads (hundreds
// of services; a service with hundreds of reals) come back complete.
func TestGuestKernelLargeTable(t *testing.T) {
	l := newKernelLab(t)
	var cases []kernelCase
	for i := 0; i < 150; i++ { // about 300 bytes each: more than one 32 KiB dump read
		cases = append(cases, kernelCase{
			name: fmt.Sprintf("service %d", i),
			svc:  Service{Key: ServiceKey{Protocol: TCP, Address: v4(byte(100 + i/100)), Port: uint16(1000 + i)}, Scheduler: "wlc"},
			dests: []Destination{
				{Key: r4(11, uint16(i)), Forward: Masq, Weight: i},
				{Key: r6(0x12, uint16(i)), Forward: Tunnel, Weight: 1},
			},
		})
	}
	big := kernelCase{name: "many reals", svc: Service{Key: ServiceKey{FWMark: 42}, Scheduler: "rr"}}
	for i := 0; i < 200; i++ { // about 340 bytes each
		big.dests = append(big.dests, Destination{Key: r4(byte(2+i), 0), Forward: Route, Weight: i, UpperThreshold: uint32(i)})
	}
	cases = append(cases, big)
	l.create(cases)
	l.check(cases)
}

// TestGuestKernelConcurrentUse: one handle shared by goroutines
// serializes its requests (each reply matches its request).
func TestGuestKernelConcurrentUse(t *testing.T) {
	l := newKernelLab(t)
	c := kernelCase{
		name:  "shared",
		svc:   Service{Key: ServiceKey{Protocol: TCP, Address: vip4, Port: 80}, Scheduler: "wrr"},
		dests: []Destination{{Key: r4(11, 80), Forward: Masq, Weight: 1}},
	}
	l.create([]kernelCase{c})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if err := l.k.UpdateDestination(c.svc.Key, Destination{Key: r4(11, 80), Forward: Masq, Weight: g*100 + i}); err != nil {
					errs <- err
					return
				}
				es, err := l.k.Services()
				if err != nil {
					errs <- err
					return
				}
				if len(es) != 1 || len(es[0].Destinations) != 1 {
					errs <- fmt.Errorf("Services() = %+v", es)
					return
				}
				if _, err := l.k.Timeouts(); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestGuestKernelNewKernelDetectsIPVS: in the VM NewKernel finds the
// family; its absence is tested on the host (TestNewKernelWithoutIPVS).
func TestGuestKernelNewKernelDetectsIPVS(t *testing.T) {
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Fatalf("the VM kernel has no IPVS: %v", err)
	}
	k, err := NewKernel()
	if err != nil {
		t.Fatal(err)
	}
	if k.family == 0 {
		t.Errorf("generic netlink family id 0")
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Services(); !errors.Is(err, errClosed) {
		t.Errorf("Services after Close: %v", err)
	}
}
