package ipvs_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/ipvs"
)

// parse reads a configuration written as its ipvs section.
func parse(t *testing.T, ipvsYAML string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte("node: {name: lb1}\n"+ipvsYAML))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, ipvsYAML)
	}
	return cfg
}

// health is a Health answering from a map keyed "service real"; a real
// server not listed is up at its configured weight.
type health map[string]ipvs.RealStatus

func (h health) Real(service string, dest ipvs.DestKey) ipvs.RealStatus {
	if st, ok := h[service+" "+dest.String()]; ok {
		return st
	}
	return ipvs.RealStatus{Up: true}
}

var down = ipvs.RealStatus{Up: false}

func tcp(ap string) ipvs.ServiceKey {
	a := netip.MustParseAddrPort(ap)
	return ipvs.ServiceKey{Protocol: ipvs.TCP, Address: a.Addr(), Port: a.Port()}
}

func dk(ap string) ipvs.DestKey {
	a := netip.MustParseAddrPort(ap)
	return ipvs.DestKey{Address: a.Addr(), Port: a.Port()}
}

func dr(ap string, w int) ipvs.Destination {
	return ipvs.Destination{Key: dk(ap), Forward: ipvs.Route, Weight: w}
}

func nat(ap string, w int) ipvs.Destination {
	return ipvs.Destination{Key: dk(ap), Forward: ipvs.Masq, Weight: w}
}

func wlc(k ipvs.ServiceKey) ipvs.Service {
	bits := 32
	if k.IPv6 || k.Address.Is6() {
		bits = 128
	}
	return ipvs.Service{Key: k, Scheduler: "wlc", NetmaskBits: bits}
}

const webYAML = `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      sorry_server: {address: "127.0.0.1:8080", forwarding: nat}
      real_servers:
        - {address: 198.51.100.11}
        - {address: 198.51.100.12, weight: 3}
`

const quiesceYAML = `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      on_failure: quiesce
      real_servers:
        - {address: 198.51.100.11}
        - {address: 198.51.100.12, weight: 3}
`

func TestDesired(t *testing.T) {
	web := tcp("192.0.2.50:80")
	for _, tc := range []struct {
		name   string
		yaml   string
		health ipvs.Health
		want   []ipvs.DesiredService
	}{{
		name: "defaults: wlc, dr, port left out is the service's, weight 1",
		yaml: webYAML,
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("198.51.100.11:80", 1), dr("198.51.100.12:80", 3)}}},
	}, {
		name: "persistence with a dotted netmask (ipvsadm -p 300 -M 255.255.255.0)",
		yaml: `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:443
      scheduler: rr
      persistence: {timeout: 300s, netmask: 255.255.255.0}
`,
		want: []ipvs.DesiredService{{Name: "web", Service: ipvs.Service{
			Key: tcp("192.0.2.50:443"), Scheduler: "rr", Flags: ipvs.FlagPersistent, Timeout: 300 * time.Second, NetmaskBits: 24}}},
	}, {
		name: "IPv6 persistence without netmask is per client (/128)",
		yaml: `ipvs:
  virtual_services:
    - name: web6
      address: "[2001:db8::50]:80"
      persistence: {timeout: 60s}
      real_servers: [{address: "2001:db8::11"}]
`,
		want: []ipvs.DesiredService{{Name: "web6", Service: ipvs.Service{
			Key: tcp("[2001:db8::50]:80"), Scheduler: "wlc", Flags: ipvs.FlagPersistent, Timeout: time.Minute, NetmaskBits: 128},
			Destinations: []ipvs.Destination{dr("[2001:db8::11]:80", 1)}}},
	}, {
		name: "firewall-mark service: real servers without port get port 0",
		yaml: `ipvs:
  virtual_services:
    - name: mark
      fwmark: 7
      family: ipv6
      check: {type: tcp, port: 80}
      real_servers: [{address: "2001:db8::11"}, {address: "2001:db8::12", forwarding: tun}]
`,
		want: []ipvs.DesiredService{{Name: "mark", Service: ipvs.Service{
			Key: ipvs.ServiceKey{FWMark: 7, IPv6: true}, Scheduler: "wlc", NetmaskBits: 128},
			Destinations: []ipvs.Destination{dr("[2001:db8::11]:0", 1),
				{Key: dk("[2001:db8::12]:0"), Forward: ipvs.Tunnel, TunnelType: ipvs.TunnelIPIP, Weight: 1}}}},
	}, {
		name: "scheduler flags and one-packet UDP (ipvsadm -s sh -b sh-fallback,sh-port -o)",
		yaml: `ipvs:
  virtual_services:
    - name: dns
      address: 192.0.2.53:53
      protocol: udp
      scheduler: sh
      scheduler_flags: [sh-fallback, sh-port]
      one_packet: true
      forwarding: nat
      check: {type: none}
      real_servers:
        - {address: "198.51.100.11:5353", upper_threshold: 100, lower_threshold: 10}
        - {address: "198.51.100.12:5353", forwarding: dr}
`,
		want: []ipvs.DesiredService{{Name: "dns", Service: ipvs.Service{
			Key:       ipvs.ServiceKey{Protocol: ipvs.UDP, Address: netip.MustParseAddr("192.0.2.53"), Port: 53},
			Scheduler: "sh", Flags: ipvs.FlagOnePacket | ipvs.FlagSchedSH1 | ipvs.FlagSchedSH2, NetmaskBits: 32},
			Destinations: []ipvs.Destination{
				{Key: dk("198.51.100.11:5353"), Forward: ipvs.Masq, Weight: 1, UpperThreshold: 100, LowerThreshold: 10},
				dr("198.51.100.12:5353", 1)}}},
	}, {
		name:   "on_failure remove: a failed real server leaves the table",
		yaml:   webYAML,
		health: health{"web 198.51.100.11:80": down},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("198.51.100.12:80", 3)}}},
	}, {
		name:   "on_failure quiesce: a failed real server stays at weight 0",
		yaml:   quiesceYAML,
		health: health{"web 198.51.100.12:80": down},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("198.51.100.11:80", 1), dr("198.51.100.12:80", 0)}}},
	}, {
		name:   "all real servers down: the sorry server is the only destination",
		yaml:   webYAML,
		health: health{"web 198.51.100.11:80": down, "web 198.51.100.12:80": down},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{nat("127.0.0.1:8080", 1)}}},
	}, {
		name: "all real servers down under quiesce: the sorry server alone, quiesced ones removed",
		yaml: `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      on_failure: quiesce
      sorry_server: {address: 127.0.0.1}
      real_servers: [{address: 198.51.100.11}]
`,
		health: health{"web 198.51.100.11:80": down},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("127.0.0.1:80", 1)}}},
	}, {
		name:   "one real server recovers: the sorry server goes away",
		yaml:   webYAML,
		health: health{"web 198.51.100.11:80": down},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("198.51.100.12:80", 3)}}},
	}, {
		name: "no real servers at all: the sorry server serves",
		yaml: `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      sorry_server: {address: "127.0.0.1:8080", forwarding: nat}
`,
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{nat("127.0.0.1:8080", 1)}}},
	}, {
		name: "exec dynamic_weight sets the weight; other checks cannot",
		yaml: `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      real_servers:
        - {address: 198.51.100.11, check: {type: exec, command: [/bin/true], dynamic_weight: true}}
        - {address: 198.51.100.12}
`,
		health: health{
			"web 198.51.100.11:80": {Up: true, Weight: 7, WeightSet: true},
			"web 198.51.100.12:80": {Up: true, Weight: 9, WeightSet: true},
		},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("198.51.100.11:80", 7), dr("198.51.100.12:80", 1)}}},
	}, {
		name: "check type none: never taken out, whatever health says",
		yaml: `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      check: {type: none}
      real_servers: [{address: 198.51.100.11}]
`,
		health: health{"web 198.51.100.11:80": down},
		want: []ipvs.DesiredService{{Name: "web", Service: wlc(web),
			Destinations: []ipvs.Destination{dr("198.51.100.11:80", 1)}}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := ipvs.Desired(parse(t, tc.yaml), tc.health)
			if diff := cmp.Diff(tc.want, got.Services, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Desired (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredKeepsConfigOrderAndTimeouts(t *testing.T) {
	cfg := parse(t, `ipvs:
  timeouts: {tcp: 900s, udp: 60s}
  virtual_services:
    - {name: b, address: "192.0.2.60:80"}
    - {name: a, address: "192.0.2.50:80"}
`)
	got := ipvs.Desired(cfg, nil)
	var names []string
	for _, s := range got.Services {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"b", "a"}, names); diff != "" {
		t.Errorf("service order (-want +got):\n%s", diff)
	}
	if want := (config.Timeouts{TCP: 900 * time.Second, UDP: time.Minute}); got.Timeouts != want {
		t.Errorf("Timeouts = %+v, want %+v", got.Timeouts, want)
	}
}

func TestQuorum(t *testing.T) {
	const yaml = `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      quorum: 4
      real_servers:
        - {address: 198.51.100.11, weight: 2}
        - {address: 198.51.100.12, weight: 2}
        - {address: 198.51.100.13, weight: 1, check: {type: exec, command: [/bin/true], dynamic_weight: true}}
    - name: any
      address: 192.0.2.50:443
      quorum: 0
      real_servers: [{address: 198.51.100.11}]
`
	for _, tc := range []struct {
		name   string
		health ipvs.Health
		want   map[string]bool
	}{
		{"all up: 2+2+1 >= 4", nil, map[string]bool{"web": true, "any": true}},
		{"one weight-2 server down: 2+1 < 4", health{"web 198.51.100.11:80": down},
			map[string]bool{"web": false, "any": true}},
		{"dynamic weight lifts it back: 2+3 >= 4", health{
			"web 198.51.100.11:80": down,
			"web 198.51.100.13:80": {Up: true, Weight: 3, WeightSet: true},
		}, map[string]bool{"web": true, "any": true}},
		{"everything down: quorum 0 is still met", health{
			"web 198.51.100.11:80": down, "web 198.51.100.12:80": down, "web 198.51.100.13:80": down,
			"any 198.51.100.11:443": down,
		}, map[string]bool{"web": false, "any": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ipvs.Quorum(parse(t, yaml), tc.health)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Quorum (-want +got):\n%s", diff)
			}
		})
	}
}
