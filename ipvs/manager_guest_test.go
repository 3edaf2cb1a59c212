//go:build vmguest

package ipvs

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/directord/directord/internal/config"
)

// The desired table and the kernel's read-back must agree on every field's
// canonical form, or each resync would "repair" a correct table forever.
// The Manager applies a configuration with every shape of service to the
// real kernel, and a second Apply plans nothing. A reload that adds one
// real server then changes exactly one destination, and a service created
// by hand with ipvsadm survives both.
func TestGuestManagerIsIdempotentOnTheRealKernel(t *testing.T) {
	l := newKernelLab(t)
	const yaml = `ipvs:
  virtual_services:
    - {name: web, address: "192.0.2.50:80", scheduler: wrr, forwarding: nat,
       real_servers: [{address: "198.51.100.11:80", weight: 3, upper_threshold: 100, lower_threshold: 50}, {address: "198.51.100.12:8080"}]}
    - {name: dr, address: "192.0.2.51:443", scheduler: sh, scheduler_flags: [sh-fallback, sh-port], forwarding: dr,
       persistence: {timeout: 300s, netmask: 255.255.255.0}, real_servers: [{address: 198.51.100.11}, {address: 198.51.100.12}]}
    - {name: dns, address: "192.0.2.50:53", protocol: udp, scheduler: rr, one_packet: true, forwarding: dr,
       real_servers: [{address: 198.51.100.11}]}
    - {name: mark, fwmark: 7, scheduler: mh, scheduler_flags: [mh-port], forwarding: tun, check: {port: 80},
       real_servers: [{address: 198.51.100.11}, {address: "2001:db8:1::11"}]}
    - {name: mark6, fwmark: 8, family: ipv6, scheduler: lc, forwarding: dr, persistence: {timeout: 60s, netmask: "64"}, check: {port: 80},
       real_servers: [{address: "2001:db8:1::11"}]}
    - {name: web6, address: "[2001:db8::50]:80", protocol: sctp, scheduler: lblcr, forwarding: nat,
       real_servers: [{address: "[2001:db8:1::11]:80", weight: 0}]}
`
	cfg, err := config.Parse("manager.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	l.ipvsadm("-A", "-t", "203.0.113.9:22", "-s", "rr") // made by hand
	m, err := NewManager(l.k, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Apply(Desired(cfg, nil))
	if err != nil {
		t.Fatalf("first apply: %v", err)
	}
	if len(res.Applied) != 6+9 {
		t.Errorf("first apply: %d operations, want 15 (6 services, 9 real servers):\n%v", len(res.Applied), res.Applied)
	}
	res, err = m.Apply(Desired(cfg, nil))
	if err != nil || len(res.Applied) != 0 {
		t.Fatalf("second apply of the same table: %v, operations:\n%v", err, res.Applied)
	}
	res, err = m.Resync()
	if err != nil || len(res.Applied) != 0 {
		t.Fatalf("resync of a correct table: %v, operations:\n%v", err, res.Applied)
	}

	cfg2, err := config.Parse("manager.yaml", []byte(strings.Replace(yaml,
		`{address: "198.51.100.12:8080"}]}`, `{address: "198.51.100.12:8080"}, {address: "198.51.100.13:80"}]}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	res, err = m.Apply(Desired(cfg2, nil))
	if err != nil || len(res.Applied) != 1 || res.Applied[0].Kind != NewDest {
		t.Fatalf("reload with one real server added: %v, operations:\n%v", err, res.Applied)
	}
	if out := l.ipvsadm("-Ln"); !strings.Contains(out, "203.0.113.9:22") || !strings.Contains(out, "198.51.100.13:80") {
		t.Errorf("after the reload ipvsadm -Ln shows:\n%s", out)
	}
	// Reading one service: found with its destinations, or cleanly absent.
	if e, ok, err := l.k.Service(ServiceKey{Protocol: TCP, Address: netip.MustParseAddr("192.0.2.50"), Port: 80}); err != nil || !ok || len(e.Destinations) != 3 {
		t.Errorf("Service(web): %v %v, %d destinations, want found with 3", ok, err, len(e.Destinations))
	}
	if _, ok, err := l.k.Service(ServiceKey{Protocol: TCP, Address: netip.MustParseAddr("192.0.2.99"), Port: 80}); err != nil || ok {
		t.Errorf("Service(missing): %v %v, want not found and no error", ok, err)
	}

	// ipvsadm -C, then a resync puts back exactly what directord owns.
	l.ipvsadm("-C")
	res, err = m.Resync()
	if err != nil || len(res.Applied) != 6+10 {
		t.Fatalf("resync after ipvsadm -C: %v, %d operations, want 16:\n%v", err, len(res.Applied), res.Applied)
	}
	if out := l.ipvsadm("-Ln"); strings.Contains(out, "203.0.113.9:22") {
		t.Errorf("the resync re-created a service directord does not own:\n%s", out)
	}
	res, err = m.Resync()
	if err != nil || len(res.Applied) != 0 {
		t.Fatalf("resync after the repair: %v, operations:\n%v", err, res.Applied)
	}
}

// Bad input the kernel refuses (a scheduler it lacks) fails that service
// alone with a clear error: the rest of the table is applied, nothing else
// is disturbed, and every resync tries again.
func TestGuestManagerKernelErrorMidApply(t *testing.T) {
	l := newKernelLab(t)
	cfg, err := config.Parse("bad.yaml", []byte(`ipvs:
  virtual_services:
    - {name: a, address: "192.0.2.50:80", forwarding: nat, real_servers: [{address: "198.51.100.11:80"}]}
    - {name: b, address: "192.0.2.51:80", forwarding: nat, real_servers: [{address: "198.51.100.11:80"}]}
    - {name: c, address: "192.0.2.52:80", forwarding: nat, real_servers: [{address: "198.51.100.12:80"}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(l.k, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A scheduler no kernel has; configuration validation only lets known
	// names through, so it is set on the desired table.
	desired := Desired(cfg, nil)
	desired.Services[1].Service.Scheduler = "nosuch"
	res, err := m.Apply(desired)
	if err == nil || !strings.Contains(err.Error(), `scheduler "nosuch" not available in this kernel`) {
		t.Fatalf("apply error %v, want one naming the missing scheduler", err)
	}
	if len(res.Failed) != 1 || res.Failed[0].Op.Key.Port != 80 || res.Failed[0].Op.Key.Address.String() != "192.0.2.51" {
		t.Errorf("failed operations %v, want the twos service only", res.Failed)
	}
	out := l.ipvsadm("-Ln")
	if !strings.Contains(out, "192.0.2.50:80") || !strings.Contains(out, "192.0.2.52:80") || strings.Contains(out, "192.0.2.51:80") {
		t.Errorf("the rest of the table was not applied:\n%s", out)
	}
	res, err = m.Resync()
	if err == nil || len(res.Failed) != 1 {
		t.Errorf("resync did not try the refused service again: %v %v", err, res.Failed)
	}
	if len(res.Applied) != 0 {
		t.Errorf("resync disturbed the applied services: %v", res.Applied)
	}
}
