package ipvs_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/ipvs"
)

var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// entry is a service as the kernel lists it: FlagHashed set, destinations
// in whatever order.
func entry(s ipvs.Service, dests ...ipvs.Destination) ipvs.Entry {
	s.Flags |= ipvs.FlagHashed
	e := ipvs.Entry{Service: s}
	for _, d := range dests {
		e.Destinations = append(e.Destinations, ipvs.DestEntry{Destination: d, ActiveConns: 12})
	}
	return e
}

func table(services ...ipvs.DesiredService) ipvs.Table { return ipvs.Table{Services: services} }

func owned(keys ...ipvs.ServiceKey) map[ipvs.ServiceKey]bool {
	m := map[ipvs.ServiceKey]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func TestPlan(t *testing.T) {
	web, api, hand := tcp("192.0.2.50:80"), tcp("192.0.2.50:8080"), tcp("192.0.2.99:80")
	r1, r2, r3 := dr("198.51.100.11:80", 1), dr("198.51.100.12:80", 1), dr("198.51.100.13:80", 1)
	sorry := nat("127.0.0.1:8080", 1)
	webRR := wlc(web)
	webRR.Scheduler = "rr"
	webPersistent := wlc(web)
	webPersistent.Flags, webPersistent.Timeout, webPersistent.NetmaskBits = ipvs.FlagPersistent, 300*time.Second, 24
	r1w3 := r1
	r1w3.Weight = 3
	r1w0 := r1
	r1w0.Weight = 0
	r1nat := r1
	r1nat.Forward = ipvs.Masq
	r1gre := r1
	r1gre.Forward, r1gre.TunnelType = ipvs.Tunnel, ipvs.TunnelGRE
	r1ipip := r1gre
	r1ipip.TunnelType = ipvs.TunnelIPIP
	r1limits := r1
	r1limits.UpperThreshold, r1limits.LowerThreshold = 100, 10

	for _, tc := range []struct {
		name    string
		desired ipvs.Table
		actual  []ipvs.Entry
		owned   map[ipvs.ServiceKey]bool
		want    []ipvs.Op
	}{{
		name:    "identical tables: no operations at all",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1, r2}}),
		actual:  []ipvs.Entry{entry(wlc(web), r2, r1)},
		owned:   owned(web),
	}, {
		name:    "first start on an empty table: the service, then its real servers",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1, r2}}),
		want: []ipvs.Op{
			{Kind: ipvs.NewService, Name: "web", Key: web, Service: wlc(web)},
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r1, DestKey: r1.Key},
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r2, DestKey: r2.Key},
		},
	}, {
		name:    "reload adds one real server: exactly one NewDest",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1, r2, r3}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1, r2)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r3, DestKey: r3.Key}},
	}, {
		name:    "reload changes a weight: one UpdateDest",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1w3, r2}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1, r2)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1w3, OldDest: r1, DestKey: r1.Key}},
	}, {
		name:    "reload removes a real server: one DelDest",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1, r2)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.DelDest, Name: "web", Key: web, Dest: r2, DestKey: r2.Key}},
	}, {
		name:    "forwarding dr -> nat is edited in place (the kernel rehashes the destination)",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1nat}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1nat, OldDest: r1, DestKey: r1.Key}},
	}, {
		name:    "tunnel type ipip -> gre is an edit",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1gre}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1ipip)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1gre, OldDest: r1ipip, DestKey: r1.Key}},
	}, {
		name:    "thresholds are an edit",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1limits}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1limits, OldDest: r1, DestKey: r1.Key}},
	}, {
		name:    "scheduler change edits the service in place: connections survive",
		desired: table(ipvs.DesiredService{Name: "web", Service: webRR, Destinations: []ipvs.Destination{r1}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateService, Name: "web", Key: web, Service: webRR, OldService: wlc(web)}},
	}, {
		name:    "persistence turned on: one UpdateService",
		desired: table(ipvs.DesiredService{Name: "web", Service: webPersistent, Destinations: []ipvs.Destination{r1}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateService, Name: "web", Key: web, Service: webPersistent, OldService: wlc(web)}},
	}, {
		name:    "a real server fails under quiesce: weight 0, not removed",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1w0, r2}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1, r2)},
		owned:   owned(web),
		want:    []ipvs.Op{{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1w0, OldDest: r1, DestKey: r1.Key}},
	}, {
		name:    "last real servers fail: the sorry server is added before they are deleted",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{sorry}}),
		actual:  []ipvs.Entry{entry(wlc(web), r2, r1)},
		owned:   owned(web),
		want: []ipvs.Op{
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: sorry, DestKey: sorry.Key},
			{Kind: ipvs.DelDest, Name: "web", Key: web, Dest: r1, DestKey: r1.Key},
			{Kind: ipvs.DelDest, Name: "web", Key: web, Dest: r2, DestKey: r2.Key},
		},
	}, {
		name:    "a real server recovers: it is added before the sorry server is deleted",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1}}),
		actual:  []ipvs.Entry{entry(wlc(web), sorry)},
		owned:   owned(web),
		want: []ipvs.Op{
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r1, DestKey: r1.Key},
			{Kind: ipvs.DelDest, Name: "web", Key: web, Dest: sorry, DestKey: sorry.Key},
		},
	}, {
		name: "additions, then edits, then deletions within a service",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{r3, r1w3}}),
		actual: []ipvs.Entry{entry(wlc(web), r2, r1)},
		owned:  owned(web),
		want: []ipvs.Op{
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r3, DestKey: r3.Key},
			{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1w3, OldDest: r1, DestKey: r1.Key},
			{Kind: ipvs.DelDest, Name: "web", Key: web, Dest: r2, DestKey: r2.Key},
		},
	}, {
		name:    "a hand-made service (not owned, not configured) survives",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1}}),
		actual:  []ipvs.Entry{entry(wlc(web), r1), entry(wlc(hand), r2)},
		owned:   owned(web),
	}, {
		name:    "an owned service no longer configured is deleted, after the rest",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1, r2}}),
		actual:  []ipvs.Entry{entry(wlc(api), r1), entry(wlc(web), r1)},
		owned:   owned(web, api),
		want: []ipvs.Op{
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r2, DestKey: r2.Key},
			{Kind: ipvs.DelService, Key: api, Service: wlc(api)},
		},
	}, {
		name:    "services are deleted in key order",
		desired: table(),
		actual:  []ipvs.Entry{entry(wlc(hand)), entry(wlc(api)), entry(wlc(web))},
		owned:   owned(web, api, hand),
		want: []ipvs.Op{
			{Kind: ipvs.DelService, Key: web, Service: wlc(web)},
			{Kind: ipvs.DelService, Key: api, Service: wlc(api)},
			{Kind: ipvs.DelService, Key: hand, Service: wlc(hand)},
		},
	}, {
		name:    "a hand-made service with a configured key is adopted: settings and real servers reconciled",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1}}),
		actual:  []ipvs.Entry{entry(webRR, r1w3, r2)},
		want: []ipvs.Op{
			{Kind: ipvs.UpdateService, Name: "web", Key: web, Service: wlc(web), OldService: webRR},
			{Kind: ipvs.UpdateDest, Name: "web", Key: web, Dest: r1, OldDest: r1w3, DestKey: r1.Key},
			{Kind: ipvs.DelDest, Name: "web", Key: web, Dest: r2, DestKey: r2.Key},
		},
	}, {
		name:    "owned but missing (ipvsadm -C): added again",
		desired: table(ipvs.DesiredService{Name: "web", Service: wlc(web), Destinations: []ipvs.Destination{r1}}),
		owned:   owned(web),
		want: []ipvs.Op{
			{Kind: ipvs.NewService, Name: "web", Key: web, Service: wlc(web)},
			{Kind: ipvs.NewDest, Name: "web", Key: web, Dest: r1, DestKey: r1.Key},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := ipvs.Plan(tc.desired, tc.actual, tc.owned)
			if diff := cmp.Diff(tc.want, got, addrEq); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
		})
	}
}

// The kernel reports services in its own spelling; none of it is a
// difference.
func TestPlanReadsTheKernelsSpelling(t *testing.T) {
	web6 := tcp("[2001:db8::50]:80")
	mark := ipvs.ServiceKey{FWMark: 7}
	r6 := dr("[2001:db8::11]:80", 1)
	for _, tc := range []struct {
		name    string
		desired ipvs.DesiredService
		actual  ipvs.Entry
	}{{
		name: "IPv6 address service desired with the family flag, listed without it",
		desired: ipvs.DesiredService{Name: "web6", Service: ipvs.Service{
			Key: ipvs.ServiceKey{Protocol: ipvs.TCP, Address: web6.Address, Port: 80, IPv6: true}, Scheduler: "wlc", NetmaskBits: 128},
			Destinations: []ipvs.Destination{r6}},
		actual: entry(wlc(web6), r6),
	}, {
		name:    "firewall-mark service listed with protocol TCP (the kernel stores it)",
		desired: ipvs.DesiredService{Name: "mark", Service: wlc(mark)},
		actual:  entry(ipvs.Service{Key: ipvs.ServiceKey{FWMark: 7, Protocol: ipvs.TCP}, Scheduler: "wlc", NetmaskBits: 32}),
	}, {
		name:    "IPv4-mapped addresses",
		desired: ipvs.DesiredService{Name: "web", Service: wlc(tcp("192.0.2.50:80")), Destinations: []ipvs.Destination{dr("198.51.100.11:80", 1)}},
		actual: entry(ipvs.Service{Key: tcp("[::ffff:192.0.2.50]:80"), Scheduler: "wlc", NetmaskBits: 32},
			dr("[::ffff:198.51.100.11]:80", 1)),
	}, {
		name:    "non-persistent service with whatever timeout and netmask ipvsadm left",
		desired: ipvs.DesiredService{Name: "web", Service: wlc(tcp("192.0.2.50:80"))},
		actual:  entry(ipvs.Service{Key: tcp("192.0.2.50:80"), Scheduler: "wlc", Timeout: 300 * time.Second, NetmaskBits: 0}),
	}, {
		name:    "tunnel type of a non-tunnel destination",
		desired: ipvs.DesiredService{Name: "web", Service: wlc(tcp("192.0.2.50:80")), Destinations: []ipvs.Destination{dr("198.51.100.11:80", 1)}},
		actual: entry(wlc(tcp("192.0.2.50:80")),
			ipvs.Destination{Key: dk("198.51.100.11:80"), Forward: ipvs.Route, Weight: 1, TunnelType: ipvs.TunnelGUE}),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.desired.Service.Key
			if got := ipvs.Plan(table(tc.desired), []ipvs.Entry{tc.actual}, owned(key)); len(got) != 0 {
				t.Errorf("Plan = %v, want no operations", got)
			}
		})
	}
}

func TestReconcileOpString(t *testing.T) {
	web := tcp("192.0.2.50:80")
	r1 := dr("198.51.100.11:80", 1)
	r1w3 := r1
	r1w3.Weight = 3
	persistent := ipvs.Service{Key: web, Scheduler: "sh", Flags: ipvs.FlagPersistent | ipvs.FlagSchedSH1, Timeout: 300 * time.Second, NetmaskBits: 24}
	for _, tc := range []struct {
		op   ipvs.Op
		want string
	}{
		{ipvs.Op{Kind: ipvs.NewService, Key: web, Service: wlc(web)}, "add service TCP 192.0.2.50:80 (wlc)"},
		{ipvs.Op{Kind: ipvs.NewService, Key: web, Service: persistent}, "add service TCP 192.0.2.50:80 (sh, persistent 300s, netmask /24, sh-fallback)"},
		{ipvs.Op{Kind: ipvs.UpdateService, Key: web, Service: persistent, OldService: wlc(web)},
			"edit service TCP 192.0.2.50:80: scheduler wlc -> sh, persistence off -> 300s, netmask /32 -> /24, flags none -> sh-fallback"},
		{ipvs.Op{Kind: ipvs.DelService, Key: ipvs.ServiceKey{FWMark: 7, IPv6: true}}, "delete service FWM 7 IPv6"},
		{ipvs.Op{Kind: ipvs.NewDest, Key: web, Dest: r1, DestKey: r1.Key}, "add destination 198.51.100.11:80 to TCP 192.0.2.50:80 (Route, weight 1)"},
		{ipvs.Op{Kind: ipvs.UpdateDest, Key: web, Dest: r1w3, OldDest: r1, DestKey: r1.Key}, "edit destination 198.51.100.11:80 of TCP 192.0.2.50:80: weight 1 -> 3"},
		{ipvs.Op{Kind: ipvs.UpdateDest, Key: web, Dest: nat("198.51.100.11:80", 0), OldDest: r1, DestKey: r1.Key},
			"edit destination 198.51.100.11:80 of TCP 192.0.2.50:80: forwarding Route -> Masq, weight 1 -> 0"},
		{ipvs.Op{Kind: ipvs.DelDest, Key: web, Dest: r1, DestKey: r1.Key}, "delete destination 198.51.100.11:80 from TCP 192.0.2.50:80"},
		{ipvs.Op{Kind: ipvs.SetTimeouts, Timeouts: ipvs.Timeouts{UDP: time.Minute}, OldTimeouts: ipvs.Timeouts{TCP: 900 * time.Second, UDP: 300 * time.Second}},
			"set timeouts: udp 300s -> 60s"},
	} {
		if got := tc.op.String(); got != tc.want {
			t.Errorf("%v.String()\n got %q\nwant %q", tc.op.Kind, got, tc.want)
		}
	}
}

func TestPlanTimeouts(t *testing.T) {
	kernel := ipvs.Timeouts{TCP: 900 * time.Second, TCPFin: 120 * time.Second, UDP: 300 * time.Second}
	for _, tc := range []struct {
		name    string
		desired config.Timeouts
		want    ipvs.Timeouts
		needed  bool
	}{
		{"nothing configured: the kernel's values are left alone", config.Timeouts{}, ipvs.Timeouts{}, false},
		{"configured equal to the kernel's: nothing to set", config.Timeouts{TCP: 900 * time.Second, UDP: 300 * time.Second}, ipvs.Timeouts{}, false},
		{"udp differs: only udp is set", config.Timeouts{TCP: 900 * time.Second, UDP: time.Minute}, ipvs.Timeouts{UDP: time.Minute}, true},
		{"all three differ", config.Timeouts{TCP: time.Hour, TCPFin: time.Minute, UDP: time.Minute},
			ipvs.Timeouts{TCP: time.Hour, TCPFin: time.Minute, UDP: time.Minute}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, needed := ipvs.PlanTimeouts(tc.desired, kernel)
			if needed != tc.needed {
				t.Errorf("needed = %v, want %v", needed, tc.needed)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("timeouts to set (-want +got):\n%s", diff)
			}
		})
	}
}
