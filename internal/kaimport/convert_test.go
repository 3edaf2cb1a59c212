package kaimport

import (
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/google/go-cmp/cmp"
)

func instance(t *testing.T, cfg *config.Config) config.Instance {
	t.Helper()
	if len(cfg.VRRP.Instances) != 1 {
		t.Fatalf("%d instances, want 1", len(cfg.VRRP.Instances))
	}
	return cfg.VRRP.Instances[0]
}

// keepalived speaks VRRPv2 unless told otherwise; directord defaults to
// v3, so the version is written out. IPv6 instances are always v3.
func TestVersionFollowsKeepalivedDefaults(t *testing.T) {
	for _, tt := range []struct {
		name, src string
		want      int
	}{
		{"keepalived default", vrrpOnly(""), 2},
		{"global_defs", "global_defs {\n vrrp_version 3\n}\n" + vrrpOnly(""), 3},
		{"instance over global", "global_defs {\n vrrp_version 3\n}\n" + vrrpOnly("version 2"), 2},
		{"IPv6", "vrrp_instance V6 {\n interface eth0\n virtual_router_id 9\n version 2\n virtual_ipaddress {\n  2001:db8::9\n }\n}\n", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := convertValid(t, tt.src)
			if got := instance(t, cfg).Version; got != tt.want {
				t.Errorf("version %d, want %d", got, tt.want)
			}
		})
	}
}

// old_unicast_checksum needs no key: directord detects a peer's old
// unicast checksum and answers in kind.
func TestOldUnicastChecksumNeedsNothing(t *testing.T) {
	_, notes := convertValid(t, vrrpOnly("version 3\nunicast_peer {\n 192.0.2.12\n}\nold_unicast_checksum"))
	for _, n := range notes {
		if strings.Contains(n.Option, "old_unicast_checksum") {
			t.Errorf("note %v", n)
		}
	}
}

// advert_int is seconds with a fraction; VRRPv2 carries whole seconds, v3
// centiseconds.
func TestAdvertIntervalFitsTheVersion(t *testing.T) {
	cfg, notes := convertValid(t, vrrpOnly("advert_int 0.4"))
	if got := instance(t, cfg).AdvertInterval; got != time.Second {
		t.Errorf("v2 advert_interval %s, want 1s", got)
	}
	if n := noteFor(t, notes, "advert_int"); n.Why != "400ms does not fit VRRP version 2; written as 1s" {
		t.Errorf("note %v", n)
	}
	cfg, notes = convertValid(t, vrrpOnly("version 3\nadvert_int 0.125"))
	if got := instance(t, cfg).AdvertInterval; got != 130*time.Millisecond {
		t.Errorf("v3 advert_interval %s, want 130ms", got)
	}
	noteFor(t, notes, "advert_int")
}

// state MASTER without a priority makes keepalived the address owner
// (255); nopreempt becomes preempt: false, except for the owner.
func TestPriorityStateAndPreemption(t *testing.T) {
	cfg, notes := convertValid(t, vrrpOnly("state MASTER"))
	if in := instance(t, cfg); in.Priority != 255 || !in.Preempt {
		t.Errorf("priority %d preempt %v, want 255 true", in.Priority, in.Preempt)
	}
	noteFor(t, notes, "state")

	cfg, _ = convertValid(t, vrrpOnly("state BACKUP\npriority 90\nnopreempt"))
	if in := instance(t, cfg); in.Priority != 90 || in.Preempt {
		t.Errorf("priority %d preempt %v, want 90 false", in.Priority, in.Preempt)
	}

	cfg, notes = convertValid(t, vrrpOnly("priority 255\nnopreempt\npreempt_delay 10"))
	if in := instance(t, cfg); !in.Preempt || in.PreemptDelay != 10*time.Second {
		t.Errorf("owner: preempt %v delay %s, want true 10s", in.Preempt, in.PreemptDelay)
	}
	noteFor(t, notes, "nopreempt")

	cfg, notes = convertValid(t, vrrpOnly("priority 100\nnopreempt\npreempt_delay 10"))
	if in := instance(t, cfg); in.Preempt || in.PreemptDelay != 0 {
		t.Errorf("nopreempt: preempt %v delay %s, want false 0s", in.Preempt, in.PreemptDelay)
	}
	noteFor(t, notes, "preempt_delay")
}

// keepalived adds a positive weight while the tracked object is up and a
// negative one while it is down; directord adds the weight while it fails.
// priority 100 with "weight 20" is 120 up, 100 down in keepalived; the
// conversion gives priority 120 and weight -20: the same two values.
func TestTrackWeightsKeepBothPriorities(t *testing.T) {
	src := `vrrp_script chk_a {
  script "/usr/bin/pgrep -x a"
  weight 20
}
vrrp_script chk_b {
  script "/usr/bin/pgrep -x b"
}
` + vrrpOnly(`priority 100
track_interface {
  eth1 weight 10
  eth2
}
track_script {
  chk_a
  chk_b weight -15
  chk_missing
}`)
	cfg, notes := convertValid(t, src)
	in := instance(t, cfg)
	if in.Priority != 130 {
		t.Errorf("priority %d, want 130 (100 + 20 + 10)", in.Priority)
	}
	wantIf := []config.TrackRef{{Name: "eth1", Weight: -10}, {Name: "eth2", Weight: 0}}
	wantSc := []config.TrackRef{{Name: "chk_a", Weight: -20}, {Name: "chk_b", Weight: -15}}
	if diff := cmp.Diff(wantIf, in.Track.Interfaces); diff != "" {
		t.Errorf("interfaces (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantSc, in.Track.Scripts); diff != "" {
		t.Errorf("scripts (-want +got):\n%s", diff)
	}
	noteFor(t, notes, "chk_missing")
}

// In a sync group keepalived ignores tracking weights (unless
// sync_group_tracking_weight): a weighted interface faults the group, a
// weighted script is dropped. Tracking written on the group applies to
// every member.
func TestSyncGroupTracking(t *testing.T) {
	src := `vrrp_script chk {
  script "/usr/bin/pgrep -x a"
}
vrrp_sync_group G {
  group {
    VI_1
    VI_2
    VI_GONE
  }
  track_interface {
    eth9
  }
}
vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 1
  track_interface {
    eth1 weight -10
  }
  track_script {
    chk weight -10
  }
  virtual_ipaddress {
    192.0.2.1
  }
}
vrrp_instance VI_2 {
  interface eth0
  virtual_router_id 2
  virtual_ipaddress {
    192.0.2.2
  }
}
`
	cfg, notes := convertValid(t, src)
	if diff := cmp.Diff([]string{"VI_1", "VI_2"}, cfg.VRRP.SyncGroups[0].Instances); diff != "" {
		t.Errorf("group members (-want +got):\n%s", diff)
	}
	want := []config.TrackRef{{Name: "eth1", Weight: 0}, {Name: "eth9", Weight: 0}}
	if diff := cmp.Diff(want, cfg.VRRP.Instances[0].Track.Interfaces); diff != "" {
		t.Errorf("VI_1 interfaces (-want +got):\n%s", diff)
	}
	if len(cfg.VRRP.Instances[0].Track.Scripts) != 0 {
		t.Errorf("weighted script kept in a sync group: %v", cfg.VRRP.Instances[0].Track.Scripts)
	}
	if diff := cmp.Diff([]config.TrackRef{{Name: "eth9", Weight: 0}}, cfg.VRRP.Instances[1].Track.Interfaces); diff != "" {
		t.Errorf("VI_2 interfaces (-want +got):\n%s", diff)
	}
	noteFor(t, notes, "chk")
	noteFor(t, notes, "eth1")

	weighted := strings.Replace(src, "  track_interface {\n    eth9", "  sync_group_tracking_weight\n  track_interface {\n    eth9", 1)
	cfg, _ = convertValid(t, weighted)
	if diff := cmp.Diff([]config.TrackRef{{Name: "chk", Weight: -10}}, cfg.VRRP.Instances[0].Track.Scripts); diff != "" {
		t.Errorf("with sync_group_tracking_weight (-want +got):\n%s", diff)
	}
}

func TestVirtualAddressesAndAuthentication(t *testing.T) {
	src := `vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 51
  authentication {
    auth_type PASS
    auth_pass 0123456789
  }
  virtual_ipaddress {
    192.0.2.10/24 dev eth0 label eth0:vip brd 192.0.2.255
    192.0.2.11 dev eth1
    2001:db8::1
  }
}
`
	cfg, notes := convertValid(t, src)
	in := instance(t, cfg)
	if in.Authentication == nil || in.Authentication.Password != "01234567" {
		t.Errorf("authentication %+v, want the first 8 bytes", in.Authentication)
	}
	var got []string
	for _, va := range in.VirtualAddresses {
		got = append(got, va.Address.String()+" "+va.Interface+" "+va.Label)
	}
	want := []string{"192.0.2.10/24  eth0:vip", "192.0.2.11/32 eth1 "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("virtual addresses (-want +got):\n%s", diff)
	}
	noteFor(t, notes, "brd")
	noteFor(t, notes, "2001:db8::1")
	noteFor(t, notes, "auth_pass")

	_, notes = convertValid(t, vrrpOnly("version 3\nauthentication {\n auth_type PASS\n auth_pass x\n}"))
	if n := noteFor(t, notes, "authentication"); !strings.Contains(n.Why, "version 3 has no authentication") {
		t.Errorf("note %v", n)
	}
}

// Notify commands are argv lists; keepalived's quoted command line is
// split, a word after it is a user.
func TestNotifyCommands(t *testing.T) {
	cfg, notes := convertValid(t, vrrpOnly(`notify_master "/usr/local/bin/notify.sh master 'two words'"
notify "/usr/local/bin/notify-any" root`))
	in := instance(t, cfg)
	if diff := cmp.Diff([]string{"/usr/local/bin/notify.sh", "master", "two words"}, in.Notify.Master); diff != "" {
		t.Errorf("master (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/usr/local/bin/notify-any"}, in.Notify.Any); diff != "" {
		t.Errorf("any (-want +got):\n%s", diff)
	}
	if n := noteFor(t, notes, "notify"); !strings.Contains(n.Why, "user root") {
		t.Errorf("note %v", n)
	}
}

func service(t *testing.T, cfg *config.Config) config.VirtualService {
	t.Helper()
	if len(cfg.IPVS.VirtualServices) != 1 {
		t.Fatalf("%d services, want 1", len(cfg.IPVS.VirtualServices))
	}
	return cfg.IPVS.VirtualServices[0]
}

// keepalived's defaults for a virtual server differ from directord's: NAT,
// UDP when no protocol is given, a 60 s delay_loop, a 5 s connect timeout.
func TestVirtualServerKeepalivedDefaults(t *testing.T) {
	cfg, notes := convertValid(t, `virtual_server 192.0.2.10 53 {
  real_server 198.51.100.1 53 {
    TCP_CHECK {
    }
  }
}
`)
	vs := service(t, cfg)
	if vs.Forwarding != "nat" || vs.Protocol != "udp" || vs.Scheduler != "wlc" {
		t.Errorf("forwarding %s protocol %s scheduler %s, want nat udp wlc", vs.Forwarding, vs.Protocol, vs.Scheduler)
	}
	chk := vs.RealServers[0].Check
	if chk.Type != "tcp" || chk.Interval != 60*time.Second || chk.Timeout != 5*time.Second || chk.Rise != 1 || chk.Fall != 2 {
		t.Errorf("check %+v, want tcp every 60s, timeout 5s, rise 1, fall 2", chk)
	}
	noteFor(t, notes, "lb_kind")
	noteFor(t, notes, "protocol")
}

// retry N: keepalived declares a server down after N+1 failed attempts
// (fall N+1) and up after one success (rise 1). delay_loop, connect_timeout
// and retry are inherited virtual server -> real server -> checker.
func TestCheckerTimingInheritance(t *testing.T) {
	cfg, notes := convertValid(t, `virtual_server 192.0.2.10 80 {
  lb_kind DR
  protocol TCP
  delay_loop 4
  connect_timeout 9
  retry 4
  real_server 198.51.100.1 80 {
    retry 2
    HTTP_GET {
      url {
        path /health
        status_code 200-299
      }
      delay_before_retry 1
    }
  }
}
`)
	chk := service(t, cfg).RealServers[0].Check
	want := config.Check{Type: "http", Interval: 4 * time.Second, Timeout: 4 * time.Second, Rise: 1, Fall: 3, Path: "/health"}
	if diff := cmp.Diff(want, chk); diff != "" {
		t.Errorf("check (-want +got):\n%s", diff)
	}
	noteFor(t, notes, "connect_timeout")
	noteFor(t, notes, "delay_before_retry")
}

// inhibit_on_failure is per real server in keepalived, on_failure per
// service in directord.
func TestInhibitOnFailure(t *testing.T) {
	src := func(first, second string) string {
		return "virtual_server 192.0.2.10 80 {\n lb_kind DR\n protocol TCP\n" +
			" real_server 198.51.100.1 80 {\n" + first + "\n }\n" +
			" real_server 198.51.100.2 80 {\n" + second + "\n }\n}\n"
	}
	cfg, _ := convertValid(t, src("inhibit_on_failure", "inhibit_on_failure"))
	if got := service(t, cfg).OnFailure; got != "quiesce" {
		t.Errorf("all inhibited: on_failure %s, want quiesce", got)
	}
	cfg, notes := convertValid(t, src("inhibit_on_failure", ""))
	if got := service(t, cfg).OnFailure; got != "remove" {
		t.Errorf("some inhibited: on_failure %s, want remove", got)
	}
	noteFor(t, notes, "inhibit_on_failure")
}

// Real servers with different checks each carry a complete check; a second
// checker on one real server is left out.
func TestPerRealServerChecks(t *testing.T) {
	cfg, notes := convertValid(t, `virtual_server fwmark 5 {
  lb_kind DR
  delay_loop 3
  real_server 198.51.100.1 {
    TCP_CHECK {
      connect_port 22
    }
    HTTP_GET {
      url {
        path /
      }
    }
  }
  real_server 198.51.100.2 {
    MISC_CHECK {
      misc_path "/usr/local/bin/check 198.51.100.2"
    }
  }
}
`)
	vs := service(t, cfg)
	if vs.FWMark != 5 || vs.Family != "ipv4" {
		t.Errorf("fwmark %d family %s", vs.FWMark, vs.Family)
	}
	if c := vs.RealServers[0].Check; c.Type != "tcp" || c.Port != 22 || c.Interval != 3*time.Second {
		t.Errorf("first real server check %+v", c)
	}
	if c := vs.RealServers[1].Check; c.Type != "exec" || c.Port != 0 || c.Timeout != 3*time.Second ||
		!cmp.Equal(c.Command, []string{"/usr/local/bin/check", "198.51.100.2"}) {
		t.Errorf("second real server check %+v", c)
	}
	noteFor(t, notes, "HTTP_GET")
}

// Every option that is not carried over is named with its file and line.
func TestUnknownOptionsAreListed(t *testing.T) {
	_, notes := convertValid(t, vrrpOnly("use_vmac\nfrobnicate 3")+"linkbeat_use_polling\n")
	want := []string{
		"main.conf:7: use_vmac: no VRRP virtual MAC: directord announces VIPs with the interface's MAC (gratuitous ARP / NA)",
		"main.conf:8: frobnicate: no directord equivalent",
		"main.conf:10: linkbeat_use_polling: no directord equivalent",
	}
	var got []string
	for _, n := range notes {
		got = append(got, n.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
}

func TestEmptyFileIsStillAConfiguration(t *testing.T) {
	cfg, _ := convertValid(t, "# nothing here\n")
	if len(cfg.VRRP.Instances) != 0 || len(cfg.IPVS.VirtualServices) != 0 {
		t.Errorf("empty keepalived.conf converted to %+v", cfg)
	}
}
