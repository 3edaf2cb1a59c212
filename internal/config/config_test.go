package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// parseErrs parses src and returns its errors as strings without the file
// name, failing the test if src does not fail.
func parseErrs(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse("t.yaml", []byte(src))
	if err == nil {
		t.Fatalf("config parsed without error:\n%s", src)
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, not Errors: %v", err, err)
	}
	out := make([]string, len(errs))
	for i, e := range errs {
		if e.Line < 1 || e.Column < 1 {
			t.Errorf("error without position: %#v", e)
		}
		out[i] = strings.TrimPrefix(e.Error(), "t.yaml:")
	}
	return out
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatalf("unexpected errors:\n%v\nin:\n%s", err, src)
	}
	return cfg
}

// instance wraps instance keys (indented 6 spaces, as list-item fields) into
// a file with one VRRP instance.
func instance(fields string) string {
	return "vrrp:\n  instances:\n    - name: VI_1\n      interface: eth0\n" + fields
}

// service wraps service keys into a file with one virtual service.
func service(fields string) string {
	return "ipvs:\n  virtual_services:\n    - name: web\n" + fields
}

func TestContractExampleValidates(t *testing.T) {
	// The annotated example of shared/CONFIG.md, verbatim.
	data, err := os.ReadFile("testdata/contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("contract.yaml", data)
	if err != nil {
		t.Fatalf("CONFIG.md example does not validate:\n%v", err)
	}
	// It names an instance it does not define (VI_2) and puts VRRPv2
	// authentication on a v3 instance: both are ignored with a warning.
	var warns []string
	for _, w := range cfg.Warnings() {
		warns = append(warns, w.Path)
	}
	if diff := cmp.Diff([]string{"vrrp.instances[0].authentication", "vrrp.sync_groups[0].instances[1]"}, warns); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	rs := cfg.IPVS.VirtualServices[0].RealServers[0]
	if rs.Check.Type != "http" || rs.Check.Port != 8080 || rs.Check.Interval != 2*time.Second || rs.Check.Fall != 3 {
		t.Errorf("real server check not merged over the service check: %+v", rs.Check)
	}
	if cfg.Sync == nil || cfg.Sync.Relay == nil || cfg.Sync.Relay.Peer.String() != "192.0.2.12:8849" {
		t.Errorf("sync relay: %+v", cfg.Sync)
	}
}

func TestExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no files in deploy/examples")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if w := cfg.Warnings(); len(w) > 0 {
				t.Errorf("warnings: %v", w)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, instance("      vrid: 51\n      virtual_addresses: [192.0.2.50]\n")+
		"ipvs:\n  virtual_services:\n    - name: web\n      address: 192.0.2.50:80\n      real_servers:\n        - address: 198.51.100.11\n"+
		"sync:\n  interface: eth1\n")
	host, _ := os.Hostname()
	if n := cfg.Node; n.Name != host || n.ControlSocket != "/run/directord/directord.sock" || n.StateDir != "/run/directord" || n.Log != (Log{"info", "text"}) ||
		n.VRRPRTPriority != 10 || !n.LockMemory {
		t.Errorf("node defaults: %+v", n)
	}
	in := cfg.VRRP.Instances[0]
	if in.Priority != 100 || in.Version != 3 || in.AdvertInterval != time.Second || !in.Preempt || in.ChecksumCompat != "rfc" {
		t.Errorf("instance defaults: %+v", in)
	}
	if in.GARP != (GARP{Repeat: 5, MasterDelay: 5 * time.Second}) {
		t.Errorf("garp defaults: %+v", in.GARP)
	}
	if want := netip.MustParsePrefix("192.0.2.50/32"); in.VirtualAddresses[0].Address != want {
		t.Errorf("short-form VIP = %v, want %v", in.VirtualAddresses[0].Address, want)
	}
	vs := cfg.IPVS.VirtualServices[0]
	if vs.Protocol != "tcp" || vs.Scheduler != "wlc" || vs.Forwarding != "dr" || vs.Quorum != 1 || vs.OnFailure != "remove" {
		t.Errorf("service defaults: %+v", vs)
	}
	rs := vs.RealServers[0]
	if rs.Weight != 1 || rs.Forwarding != "dr" || rs.Address.HasPort {
		t.Errorf("real server defaults: %+v", rs)
	}
	if c := rs.Check; c.Type != "tcp" || c.Interval != 2*time.Second || c.Timeout != time.Second || c.Rise != 2 || c.Fall != 3 {
		t.Errorf("check defaults: %+v", c)
	}
	s := cfg.Sync
	if s.Group != netip.MustParseAddr("224.0.0.81") || s.Port != 8848 || s.TTL != 1 || !s.ResyncOnBackup {
		t.Errorf("sync defaults: %+v", s)
	}
	if cfg.Has("vrrp.instances[0].priority") || !cfg.Has("vrrp.instances[0].vrid") {
		t.Error("Has does not tell written keys from defaults")
	}
}

// TestRules has a case for every validation rule. Each case lists the errors
// it must produce, in file order, as "line:col: path: message" (a message may
// be cut short: the prefix must match).
func TestRules(t *testing.T) {
	vip := "      vrid: 51\n      virtual_addresses: [192.0.2.50]\n"
	svc := "      address: 192.0.2.50:80\n"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		// Strict decoding.
		{"unknown top-level key", "nodes: {}\n", []string{`1:1: nodes: unknown key "nodes" (did you mean "node"?)`}},
		{"unknown nested key", instance(vip + "      prioirty: 10\n"), []string{`7:7: vrrp.instances[0].prioirty: unknown key "prioirty" (did you mean "priority"?)`}},
		{"unknown key lists valid ones", "node:\n  log: {colour: red}\n", []string{`2:9: node.log.colour: unknown key "colour" (valid: format, level)`}},
		{"duplicate key", "node:\n  name: a\n  name: b\n", []string{`3:3: node.name: duplicate key (first set at line 2)`}},
		{"merge keys", "node:\n  <<: {name: a}\n", []string{`2:3: node: YAML merge keys (<<) are not supported`}},
		{"syntax error", "node:\n  name: a: b\n", []string{`2:1: YAML syntax: mapping values are not allowed in this context`}},
		{"two documents", "node: {}\n---\nnode: {}\n", []string{`3:1: YAML syntax: a second YAML document; the file must hold exactly one`}},
		{"empty file", "# nothing\n", []string{`1:1: the file is empty`}},
		{"not a mapping", "- a\n", []string{`1:1: expected a mapping, got a list`}},
		{"integer expected", instance("      vrid: fifty\n      virtual_addresses: [192.0.2.50]\n"), []string{`5:7: vrrp.instances[0].vrid: expected an integer, got "fifty"`}},
		{"bool expected", instance(vip + "      preempt: maybe\n"), []string{`7:7: vrrp.instances[0].preempt: expected true or false, got "maybe"`}},
		{"list expected", instance("      vrid: 51\n      virtual_addresses: 192.0.2.50\n"), []string{`6:7: vrrp.instances[0].virtual_addresses: expected a list, got "192.0.2.50"`}},
		{"duration without unit", instance(vip + "      advert_interval: 1\n"), []string{`7:7: vrrp.instances[0].advert_interval: expected a duration with a unit like "1s"`}},
		{"bad duration", instance(vip + "      advert_interval: 1 second\n"), []string{`7:7: vrrp.instances[0].advert_interval: expected a duration like "1s" or "250ms", got "1 second"`}},
		{"bad address", instance("      vrid: 51\n      virtual_addresses: [192.0.2.500]\n"), []string{`6:27: vrrp.instances[0].virtual_addresses[0]: "192.0.2.500" is not an IP address`}},
		{"uint out of range", service("      fwmark: -1\n"), []string{`4:7: ipvs.virtual_services[0].fwmark: -1 is out of range 0..4294967295`}},

		// node
		{"node paths absolute", "node:\n  state_dir: run/directord\n  control_socket: ''\n", []string{
			`2:3: node.state_dir: "run/directord" must be an absolute path`,
			`3:3: node.control_socket: required`}},
		{"control socket too long", "node:\n  control_socket: /run/" + strings.Repeat("d", 104) + "\n", []string{
			`2:3: node.control_socket: "/run/` + strings.Repeat("d", 104) + `" is 109 bytes long; a unix socket path has at most 107`}},
		{"metrics address", "node:\n  metrics_address: localhost9580\n", []string{`2:3: node.metrics_address: "localhost9580" is not HOST:PORT`}},
		{"log level", "node:\n  log: {level: verbose, format: xml}\n", []string{
			`2:9: node.log.level: "verbose" is not one of debug, info, warn, error`,
			`2:25: node.log.format: "xml" is not one of text, json`}},
		{"vrrp_rt_priority range", "node:\n  vrrp_rt_priority: 50\n", []string{
			`2:3: node.vrrp_rt_priority: 50 is out of range 0..49 (0 = no real-time scheduling;`}},
		{"vrrp_rt_priority negative", "node:\n  vrrp_rt_priority: -1\n", []string{`2:3: node.vrrp_rt_priority: -1 is out of range 0..49`}},
		{"vrrp_rt_priority integer", "node:\n  vrrp_rt_priority: high\n", []string{`2:3: node.vrrp_rt_priority: expected an integer, got "high"`}},
		{"lock_memory bool", "node:\n  lock_memory: sometimes\n", []string{`2:3: node.lock_memory: expected true or false, got "sometimes"`}},

		// VRRP instances.
		{"name and interface required", "vrrp:\n  instances:\n    - vrid: 1\n      virtual_addresses: [192.0.2.50]\n", []string{
			`3:7: vrrp.instances[0].name: required`, `3:7: vrrp.instances[0].interface: required`}},
		{"vrid out of range", instance("      vrid: 300\n      virtual_addresses: [192.0.2.50]\n"), []string{`5:7: vrrp.instances[0].vrid: 300 is out of range 1..255`}},
		{"vrid missing", instance("      virtual_addresses: [192.0.2.50]\n"), []string{`3:7: vrrp.instances[0].vrid: 0 is out of range 1..255`}},
		{"vrid unique per interface", instance(vip) + "    - name: VI_2\n      interface: eth0\n      vrid: 51\n      virtual_addresses: [192.0.2.51]\n", []string{
			`9:7: vrrp.instances[1].vrid: vrid 51 is already used on eth0 by VI_1`}},
		{"instance names unique", instance(vip) + "    - name: VI_1\n      interface: eth1\n      vrid: 51\n      virtual_addresses: [192.0.2.51]\n", []string{
			`7:7: vrrp.instances[1].name: duplicate instance name "VI_1" (also vrrp.instances[0])`}},
		{"interface name", "vrrp:\n  instances:\n    - name: VI_1\n      interface: averyveryverylongname\n" + vip, []string{
			`4:7: vrrp.instances[0].interface: interface name "averyveryverylongname" is longer than 15 characters`}},
		{"priority range", instance(vip + "      priority: 0\n"), []string{`7:7: vrrp.instances[0].priority: 0 is out of range 1..255`}},
		{"version", instance(vip + "      version: 4\n"), []string{`7:7: vrrp.instances[0].version: 4 is not one of 2, 3`}},
		{"IPv6 requires version 3", instance("      vrid: 1\n      version: 2\n      virtual_addresses: ['2001:db8::50']\n"), []string{
			`6:7: vrrp.instances[0].version: IPv6 instances require VRRP version 3`}},
		{"one family per instance", instance("      vrid: 1\n      virtual_addresses: [192.0.2.50, '2001:db8::50']\n"), []string{
			`6:39: vrrp.instances[0].virtual_addresses[1]: 2001:db8::50 is IPv6 but 192.0.2.50 is IPv4`}},
		{"VIPs required", instance("      vrid: 1\n"), []string{`3:7: vrrp.instances[0].virtual_addresses: at least one virtual address is required`}},
		{"VIP not twice", instance(vip) + "    - name: VI_2\n      interface: eth0\n      vrid: 52\n      virtual_addresses: [192.0.2.50]\n", []string{
			`10:27: vrrp.instances[1].virtual_addresses[0]: 192.0.2.50 is already a virtual address of vrrp.instances[0]`}},
		{"VIP kind", instance("      vrid: 1\n      virtual_addresses: [224.0.0.18]\n"), []string{`6:27: vrrp.instances[0].virtual_addresses[0]: 224.0.0.18 cannot be a virtual address`}},
		{"v2 interval whole seconds", instance(vip + "      version: 2\n      advert_interval: 1500ms\n"), []string{
			`8:7: vrrp.instances[0].advert_interval: 1.5s: VRRPv2 adverts are whole seconds 1s..255s`}},
		{"v2 interval max", instance(vip + "      version: 2\n      advert_interval: 256s\n"), []string{`8:7: vrrp.instances[0].advert_interval: 4m16s: VRRPv2`}},
		{"v3 interval steps", instance(vip + "      advert_interval: 15ms\n"), []string{`7:7: vrrp.instances[0].advert_interval: 15ms: VRRPv3 adverts are 10ms..40.95s in steps of 10ms`}},
		{"v3 interval min", instance(vip + "      advert_interval: 5ms\n"), []string{`7:7: vrrp.instances[0].advert_interval: 5ms: VRRPv3`}},
		{"v3 interval max", instance(vip + "      advert_interval: 41s\n"), []string{`7:7: vrrp.instances[0].advert_interval: 41s: VRRPv3`}},
		{"preempt_delay range", instance(vip + "      preempt_delay: 1001s\n"), []string{`7:7: vrrp.instances[0].preempt_delay: 16m41s is out of range 0s..16m40s`}},
		{"preempt_delay needs preempt", instance(vip + "      preempt: false\n      preempt_delay: 10s\n"), []string{`8:7: vrrp.instances[0].preempt_delay: preempt_delay is set but preempt is false`}},
		{"owner always preempts", instance(vip + "      priority: 255\n      preempt: false\n"), []string{`8:7: vrrp.instances[0].preempt: priority 255 is the address owner`}},
		{"auth password length", instance(vip + "      version: 2\n      authentication: {type: pass, password: toolongpassword}\n"), []string{
			`8:36: vrrp.instances[0].authentication.password: is 15 bytes; VRRPv2 simple-text passwords hold at most 8`}},
		{"auth type", instance(vip + "      version: 2\n      authentication: {type: ah, password: x}\n"), []string{
			`8:24: vrrp.instances[0].authentication.type: "ah" is not one of pass`}},
		{"source address family", instance(vip + "      source_address: '2001:db8::1'\n"), []string{`7:7: vrrp.instances[0].source_address: 2001:db8::1 is not IPv4`}},
		{"unicast peers", instance(vip + "      source_address: 192.0.2.11\n      unicast_peers: ['2001:db8::12', 192.0.2.12, 192.0.2.12, 192.0.2.11]\n"), []string{
			`8:23: vrrp.instances[0].unicast_peers[0]: 2001:db8::12 is not IPv4`,
			`8:51: vrrp.instances[0].unicast_peers[2]: duplicate peer 192.0.2.12`,
			`8:63: vrrp.instances[0].unicast_peers[3]: 192.0.2.11 is this node's own source_address`}},
		{"checksum_compat", instance("      vrid: 1\n      virtual_addresses: ['2001:db8::50']\n      checksum_compat: v2\n"), []string{
			`7:7: vrrp.instances[0].checksum_compat: v2 applies to IPv4 only`}},
		{"label rules", instance("      vrid: 1\n      virtual_addresses:\n        - {address: 192.0.2.50, label: 'lo:x'}\n        - {address: 192.0.2.51, interface: eth1, label: 'eth1:averylonglabel'}\n"), []string{
			`7:33: vrrp.instances[0].virtual_addresses[0].label: "lo:x" must start with the interface name "eth0"`,
			`8:50: vrrp.instances[0].virtual_addresses[1].label: "eth1:averylonglabel" is longer than 15 characters`}},
		{"garp", instance(vip + "      garp: {repeat: -1, refresh: 10ms}\n"), []string{
			`7:14: vrrp.instances[0].garp.repeat: -1 is out of range 0..1000`,
			`7:26: vrrp.instances[0].garp.refresh: 10ms would flood the segment`}},
		{"track names must exist", instance(vip + "      track:\n        scripts: [{name: chk_x}]\n        services: [{name: web, weight: 300}]\n        interfaces: [{name: 'eth/1'}]\n"), []string{
			`8:20: vrrp.instances[0].track.scripts[0].name: no vrrp.scripts named "chk_x"`,
			`9:21: vrrp.instances[0].track.services[0].name: no ipvs.virtual_services named "web"`,
			`9:32: vrrp.instances[0].track.services[0].weight: 300 is out of range -253..253`,
			`10:23: vrrp.instances[0].track.interfaces[0].name: "eth/1" is not a valid interface name`}},
		{"notify argv", instance(vip + "      notify: {master: ['/usr/local/bin/notify.sh master']}\n"), []string{
			`7:25: vrrp.instances[0].notify.master[0]: "/usr/local/bin/notify.sh master" looks like a shell command line`}},

		// Sync groups and scripts.
		{"instance in one group", instance(vip) + "  sync_groups:\n    - {name: G1, instances: [VI_1]}\n    - {name: G2, instances: [VI_1]}\n", []string{
			`9:30: vrrp.sync_groups[1].instances[0]: "VI_1" is already in sync group "G1"`}},
		{"script rules", "vrrp:\n  scripts:\n    - name: chk\n      command: []\n      interval: 1s\n      timeout: 2s\n      rise: 0\n      user: 'Bad User'\n    - name: chk\n      command: [/bin/true]\n", []string{
			`4:7: vrrp.scripts[0].command: required: the command as a list`,
			`6:7: vrrp.scripts[0].timeout: 2s is longer than interval 1s`,
			`7:7: vrrp.scripts[0].rise: 0 is out of range 1..1000`,
			`8:7: vrrp.scripts[0].user: "Bad User" is not a valid user name`,
			`9:7: vrrp.scripts[1].name: duplicate script name "chk" (also vrrp.scripts[0])`}},

		// IPVS.
		{"address or fwmark", service(""), []string{`3:7: ipvs.virtual_services[0].address: required: IP:port, or fwmark`}},
		{"fwmark has no address", service(svc + "      fwmark: 1\n"), []string{`4:7: ipvs.virtual_services[0].address: a firewall-mark service has no address`}},
		{"fwmark family", service("      fwmark: 1\n      family: inet\n"), []string{`5:7: ipvs.virtual_services[0].family: "inet" is not one of ipv4, ipv6`}},
		{"family contradicts address", service(svc + "      family: ipv6\n"), []string{`5:7: ipvs.virtual_services[0].family: ipv6 contradicts the address 192.0.2.50`}},
		{"service port required", service("      address: 192.0.2.50\n"), []string{`4:7: ipvs.virtual_services[0].address: 192.0.2.50 has no port`}},
		{"port 0 only persistent", service("      address: 192.0.2.50:0\n"), []string{`4:7: ipvs.virtual_services[0].address: port 0 (all ports) is only allowed for persistent services`}},
		{"service address syntax", service("      address: 192.0.2.50:http\n"), []string{`4:7: ipvs.virtual_services[0].address: "192.0.2.50:http" is not an address: port must be a number`}},
		{"duplicate service", service(svc) + "    - name: web2\n      address: 192.0.2.50:80\n", []string{`5:7: ipvs.virtual_services[1]: same virtual service as web`}},
		{"protocol", service(svc + "      protocol: icmp\n"), []string{`5:7: ipvs.virtual_services[0].protocol: "icmp" is not one of tcp, udp, sctp`}},
		{"scheduler", service(svc + "      scheduler: fastest\n"), []string{`5:7: ipvs.virtual_services[0].scheduler: "fastest" is not one of rr, wrr`}},
		{"scheduler flags", service(svc + "      scheduler: sh\n      scheduler_flags: [sh-port, mh-port, sh-port, fast]\n"), []string{
			`6:34: ipvs.virtual_services[0].scheduler_flags[1]: mh-port applies to the mh scheduler, not sh`,
			`6:43: ipvs.virtual_services[0].scheduler_flags[2]: sh-port is listed twice`,
			`6:52: ipvs.virtual_services[0].scheduler_flags[3]: "fast" is not one of`}},
		{"persistence", service(svc + "      persistence: {timeout: 1.5s, netmask: 255.0.255.0}\n"), []string{
			`5:21: ipvs.virtual_services[0].persistence.timeout: 1.5s is not a whole number of seconds`,
			`5:36: ipvs.virtual_services[0].persistence.netmask: "255.0.255.0" is not a contiguous netmask`}},
		{"netmask needs timeout", service(svc + "      persistence: {netmask: 24}\n"), []string{`5:21: ipvs.virtual_services[0].persistence.netmask: netmask applies only to persistent services`}},
		{"one_packet is udp", service(svc + "      one_packet: true\n"), []string{`5:7: ipvs.virtual_services[0].one_packet: one-packet scheduling is for UDP services, not tcp`}},
		{"forwarding and on_failure", service(svc + "      forwarding: direct\n      on_failure: drop\n      quorum: -1\n"), []string{
			`5:7: ipvs.virtual_services[0].forwarding: "direct" is not one of nat, dr, tun`,
			`6:7: ipvs.virtual_services[0].on_failure: "drop" is not one of remove, quiesce`,
			`7:7: ipvs.virtual_services[0].quorum: must not be negative, got -1`}},
		{"resync interval", "ipvs:\n  resync_interval: 100ms\n", []string{`2:3: ipvs.resync_interval: 100ms is too often`}},
		{"timeouts whole seconds", "ipvs:\n  timeouts: {tcp: 900500ms, udp: -1s}\n", []string{
			`2:14: ipvs.timeouts.tcp: 15m0.5s is not a whole number of seconds`,
			`2:29: ipvs.timeouts.udp: must not be negative, got -1s`}},
		{"real server port only omitted for dr/tun", service(svc + "      real_servers:\n        - {address: 198.51.100.11, forwarding: nat}\n        - {address: 198.51.100.12, forwarding: tun}\n"), []string{
			`6:12: ipvs.virtual_services[0].real_servers[0].address: 198.51.100.11 has no port; NAT needs IP:port`}},
		{"real server family", service(svc + "      real_servers:\n        - {address: '[2001:db8::11]:80'}\n        - {address: '[2001:db8::12]:80', forwarding: tun}\n"), []string{
			`6:12: ipvs.virtual_services[0].real_servers[0].address: 2001:db8::11 is IPv6 but the service is IPv4; mixed families work only with tun`}},
		{"real server unique", service(svc + "      real_servers:\n        - {address: 198.51.100.11}\n        - {address: '198.51.100.11:80'}\n"), []string{
			`7:12: ipvs.virtual_services[0].real_servers[1].address: 198.51.100.11:80 is already real server 0`}},
		{"real server weights", service(svc + "      real_servers:\n        - {address: 198.51.100.11, weight: 70000, upper_threshold: 10, lower_threshold: 20}\n"), []string{
			`6:36: ipvs.virtual_services[0].real_servers[0].weight: 70000 is out of range 0..65535`,
			`6:72: ipvs.virtual_services[0].real_servers[0].lower_threshold: 20 is above upper_threshold 10`}},
		{"lower threshold needs an upper one", service(svc + "      real_servers:\n        - {address: 198.51.100.11, lower_threshold: 5}\n"), []string{
			`6:36: ipvs.virtual_services[0].real_servers[0].lower_threshold: needs upper_threshold`}},
		{"sorry server", service(svc + "      sorry_server: {address: 127.0.0.1, forwarding: nat}\n"), []string{
			`5:22: ipvs.virtual_services[0].sorry_server.address: 127.0.0.1 has no port; NAT needs IP:port`}},
		{"fwmark nat real needs port", service("      fwmark: 7\n      forwarding: nat\n      real_servers:\n        - {address: 198.51.100.11}\n"), []string{
			`7:12: ipvs.virtual_services[0].real_servers[0].address: 198.51.100.11 has no port; NAT needs IP:port`}},
		{"fwmark dr check needs port", service("      fwmark: 7\n      real_servers:\n        - {address: 198.51.100.11}\n"), []string{
			`6:11: ipvs.virtual_services[0].real_servers[0].check.port: required: a tcp check of 198.51.100.11 needs a port`}},

		// Checks.
		{"check type", service(svc + "      check: {type: ping}\n"), []string{`5:15: ipvs.virtual_services[0].check.type: "ping" is not one of tcp, http`}},
		{"check key for another type", service(svc + "      check: {type: tcp, path: /healthz}\n"), []string{
			`5:26: ipvs.virtual_services[0].check.path: path does not apply to a tcp check (only http, https)`}},
		{"check timing", service(svc + "      check: {interval: 1s, timeout: 2s, rise: 0, fall: 1001}\n"), []string{
			`5:29: ipvs.virtual_services[0].check.timeout: 2s is longer than interval 1s`,
			`5:42: ipvs.virtual_services[0].check.rise: 0 is out of range 1..1000`,
			`5:51: ipvs.virtual_services[0].check.fall: 1001 is out of range 1..1000`}},
		{"http check", service(svc + "      check: {type: http, path: healthz, expect_status: [99], body_regex: '(', host: 'a b'}\n"), []string{
			`5:27: ipvs.virtual_services[0].check.path: "healthz" must start with /`,
			`5:58: ipvs.virtual_services[0].check.expect_status[0]: 99 is out of range 100..599`,
			`5:63: ipvs.virtual_services[0].check.body_regex: error parsing regexp`,
			`5:80: ipvs.virtual_services[0].check.host: "a b" is not a host name`}},
		{"tls_skip_verify is https", service(svc + "      check: {type: http, tls_skip_verify: true}\n"), []string{
			`5:27: ipvs.virtual_services[0].check.tls_skip_verify: tls_skip_verify does not apply to a http check (only https)`}},
		{"udp check", service(svc + "      check: {type: udp, expect: 0xzz}\n"), []string{
			`5:7: ipvs.virtual_services[0].check.send: required for a udp check`,
			`5:26: ipvs.virtual_services[0].check.expect: "0xzz" is not valid hex after 0x`}},
		{"dns check", service(svc + "      check: {type: dns, record: AXFR}\n"), []string{
			`5:7: ipvs.virtual_services[0].check.query: required for a dns check`,
			`5:26: ipvs.virtual_services[0].check.record: "AXFR" is not one of A, AAAA`}},
		{"none check still validates timing", service(svc + "      check: {type: none, interval: -1s}\n"), []string{
			`5:27: ipvs.virtual_services[0].check.interval: must be greater than 0, got -1s`}},
		{"zones", instance("      vrid: 1\n      virtual_addresses: ['2001:db8::50']\n      source_address: 'fe80::1%eth0'\n      unicast_peers: ['fe80::2%eth0']\n") + "sync: {interface: eth1, group: 'ff02::81%eth1'}\n", []string{
			`7:7: vrrp.instances[0].source_address: fe80::1%eth0: an address takes no zone here`,
			`8:23: vrrp.instances[0].unicast_peers[0]: fe80::2%eth0: an address takes no zone here`,
			`9:25: sync.group: ff02::81%eth1: an address takes no zone here`}},
		{"exec check", service(svc + "      check: {type: exec, dynamic_weight: true}\n"), []string{
			`5:7: ipvs.virtual_services[0].check.command: required: the command as a list`}},
		{"real server check inherits, reports once", service(svc + "      check: {type: http, path: bad}\n      real_servers:\n        - {address: 198.51.100.11, check: {port: 70000, send: x}}\n"), []string{
			`5:27: ipvs.virtual_services[0].check.path: "bad" must start with /`,
			`7:44: ipvs.virtual_services[0].real_servers[0].check.port: 70000 is out of range 0..65535`,
			`7:57: ipvs.virtual_services[0].real_servers[0].check.send: send does not apply to a http check (only udp)`}},

		// Sync.
		{"sync rules", "sync:\n  sync_id: 256\n  follow: VI_9\n  group: 192.0.2.1\n  ttl: 0\n  relay: {listen: 192.0.2.11, key_file: sync.key}\n", []string{
			`1:1: sync.interface: required`,
			`2:3: sync.sync_id: 256 is out of range 0..255`,
			`3:3: sync.follow: no vrrp.instances named "VI_9"`,
			`4:3: sync.group: 192.0.2.1 is not a multicast address`,
			`5:3: sync.ttl: 0 is out of range 1..255`,
			`6:3: sync.relay.peer: required: IP:port`,
			`6:11: sync.relay.listen: 192.0.2.11 needs a port`,
			`6:31: sync.relay.key_file: "sync.key" must be an absolute path`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrs(t, tt.src)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\n got: %s\nwant: %s...", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestValidVariants are configurations near a rule's edge that must pass.
func TestValidVariants(t *testing.T) {
	tests := map[string]string{
		"same vrid on two interfaces": instance("      vrid: 51\n      virtual_addresses: [192.0.2.50]\n") +
			"    - name: VI_2\n      interface: eth1\n      vrid: 51\n      virtual_addresses: [192.0.2.51]\n",
		"same vrid for IPv4 and IPv6 on one interface (RFC 5798: VRID per address family)": instance("      vrid: 51\n      virtual_addresses: [192.0.2.50]\n") +
			"    - name: VI_6\n      interface: eth0\n      vrid: 51\n      virtual_addresses: ['2001:db8::50']\n",
		"v3 interval bounds": instance("      vrid: 1\n      advert_interval: 10ms\n      virtual_addresses: [192.0.2.50]\n") +
			"    - name: VI_2\n      interface: eth0\n      vrid: 2\n      advert_interval: 40.95s\n      virtual_addresses: [192.0.2.51]\n",
		"v2 with pass auth":                             instance("      vrid: 1\n      version: 2\n      advert_interval: 255s\n      authentication: {type: pass, password: '12345678'}\n      virtual_addresses: [192.0.2.50]\n"),
		"empty source address means default":            instance("      vrid: 1\n      source_address: ''\n      virtual_addresses: [192.0.2.50]\n"),
		"tls_skip_verify false on http":                 service("      address: 192.0.2.50:80\n      check: {type: http, tls_skip_verify: false}\n"),
		"dr reals without port, fwmark with check port": service("      fwmark: 7\n      family: ipv6\n      check: {port: 80}\n      real_servers:\n        - {address: '2001:db8::11'}\n"),
		"persistent all-port service":                   service("      address: 192.0.2.50:0\n      persistence: {timeout: 300s, netmask: 255.255.255.0}\n      real_servers:\n        - {address: 198.51.100.11}\n      check: {port: 80}\n"),
		"udp one-packet with hex payload":               service("      address: 192.0.2.50:53\n      protocol: udp\n      one_packet: true\n      check: {type: udp, send: '0xdeadbeef', expect: pong}\n"),
		"null sections keep defaults":                   "node:\nvrrp:\nipvs:\n",
		"real-time off, memory unlocked":                "node:\n  vrrp_rt_priority: 0\n  lock_memory: false\n",
		"highest real-time priority allowed":            "node:\n  vrrp_rt_priority: 49\n",
	}
	for name, src := range tests {
		t.Run(name, func(t *testing.T) { mustParse(t, src) })
	}
}

func TestRealServerCheckOverride(t *testing.T) {
	cfg := mustParse(t, service("      address: 192.0.2.50:80\n      check: {type: http, path: /healthz, interval: 5s, expect_status: [200, 204]}\n"+
		"      real_servers:\n        - {address: 198.51.100.11, check: {port: 8080, fall: 1}}\n        - {address: 198.51.100.12, check: {type: tcp}}\n        - {address: 198.51.100.13}\n"))
	rss := cfg.IPVS.VirtualServices[0].RealServers
	want := Check{Type: "http", Interval: 5 * time.Second, Timeout: time.Second, Rise: 2, Fall: 1, Port: 8080, Path: "/healthz", ExpectStatus: []int{200, 204}}
	if diff := cmp.Diff(want, rss[0].Check); diff != "" {
		t.Errorf("override (-want +got):\n%s", diff)
	}
	if rss[1].Check.Type != "tcp" || rss[1].Check.Interval != 5*time.Second {
		t.Errorf("type override: %+v", rss[1].Check)
	}
	if diff := cmp.Diff(cfg.IPVS.VirtualServices[0].Check, rss[2].Check); diff != "" {
		t.Errorf("no override must equal the service check (-svc +rs):\n%s", diff)
	}
	// The merged checks must not share slices with the service check.
	rss[0].Check.ExpectStatus[0] = 500
	if cfg.IPVS.VirtualServices[0].Check.ExpectStatus[0] != 200 {
		t.Error("real server check aliases the service's expect_status")
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	src := instance("      vrid: 0\n      priority: 300\n      version: 2\n      advert_interval: 100ms\n      virtual_addresses: ['2001:db8::1']\n      bogus: 1\n") +
		"ipvs:\n  virtual_services:\n    - name: web\n      address: 192.0.2.50\n      scheduler: nope\n"
	got := parseErrs(t, src)
	if len(got) < 7 {
		t.Fatalf("want every error (>= 7), got %d:\n%s", len(got), strings.Join(got, "\n"))
	}
	// File order.
	for i := 1; i < len(got); i++ {
		if lineOf(got[i]) < lineOf(got[i-1]) {
			t.Errorf("errors not in file order:\n%s", strings.Join(got, "\n"))
		}
	}
}

func lineOf(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func TestErrorFormat(t *testing.T) {
	_, err := Parse("directord.yaml", []byte(instance("      vrid: 300\n      virtual_addresses: [192.0.2.50]\n")))
	want := "directord.yaml:5:7: vrrp.instances[0].vrid: 300 is out of range 1..255"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestPersistenceBits(t *testing.T) {
	for _, tt := range []struct {
		in   string
		v6   bool
		want int
		err  bool
	}{
		{"255.255.255.0", false, 24, false},
		{"/24", false, 24, false},
		{"32", false, 32, false},
		{"64", true, 64, false},
		{"33", false, 0, true},
		{"255.255.255.0", true, 0, true},
		{"0.0.0.0", false, 0, true},
	} {
		got, err := PersistenceBits(tt.in, tt.v6)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("PersistenceBits(%q, %v) = %d, %v", tt.in, tt.v6, got, err)
		}
	}
}
