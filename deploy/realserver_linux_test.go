package deploy

import (
	"context"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/directord/directord/internal/netlab"
)

// The VIPs the real server takes in these tests.
var (
	vip4 = netip.MustParsePrefix("192.0.2.50/32")
	vip6 = netip.MustParsePrefix("2001:db8::50/128")
)

// TestNetnsRealserverRoleAppliesAndRemoves runs the realserver role of the
// example playbook in a real server's network namespace, as the runbook
// does on a fresh host: the first run puts the VIPs on lo (DR) or the
// tunnel devices (TUN) and sets the ARP and reverse-path sysctls; a second
// run changes nothing; realserver_state=absent takes the VIPs away and puts
// every sysctl back to the value it had before. The host's own namespace is
// checked to be untouched.
//
// The host kernel has no IPIP: in the TUN case, veths named tunl0 and
// ip6tnl0 stand in for the tunnel devices the ipip and ip6_tunnel modules
// would create; the role finds them present, brings them up and configures
// them the same way. Decapsulation itself is exercised by the IPVS TUN tests
// in the VM.
func TestNetnsRealserverRoleAppliesAndRemoves(t *testing.T) {
	requireTool(t, "ansible-playbook")
	rootLo := rootState(t)
	for _, tc := range []struct {
		mode   string
		dev4   string
		dev6   string
		sysctl map[string]string // after the first run
	}{
		{
			mode: "dr", dev4: "lo", dev6: "lo",
			sysctl: map[string]string{
				"net/ipv4/conf/all/arp_ignore":   "1",
				"net/ipv4/conf/all/arp_announce": "2",
				"net/ipv4/conf/lo/arp_ignore":    "1",
				"net/ipv4/conf/lo/arp_announce":  "2",
			},
		},
		{
			mode: "tun", dev4: "tunl0", dev6: "ip6tnl0",
			sysctl: map[string]string{
				"net/ipv4/conf/all/arp_ignore":       "1",
				"net/ipv4/conf/all/arp_announce":     "2",
				"net/ipv4/conf/tunl0/arp_ignore":     "1",
				"net/ipv4/conf/tunl0/arp_announce":   "2",
				"net/ipv4/conf/tunl0/rp_filter":      "2",
				"net/ipv4/conf/all/rp_filter":        "", // left alone
				"net/ipv4/conf/ip6tnl0/arp_ignore":   "", // IPv6 only there
				"net/ipv4/conf/ip6tnl0/arp_announce": "",
			},
		},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			lab := netlab.New(t)
			h := lab.AddHost("rs1", "192.0.2.21/24", "2001:db8::21/64")
			if tc.mode == "tun" {
				tunnels := lab.NewSegment("tunnels")
				for _, name := range []string{tc.dev4, tc.dev6} {
					tunnels.AddLink(h, name)
					l, err := h.Netlink().LinkByName(name)
					if err == nil {
						err = h.Netlink().LinkSetDown(l) // as the module creates it
					}
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			before := readSysctls(t, h, tc.sysctl)
			// A sysctl expected unchanged keeps the value it had.
			want := map[string]string{}
			for k, v := range tc.sysctl {
				want[k] = v
				if v == "" {
					want[k] = before[k]
				}
			}

			root := t.TempDir()
			play := func(extra ...string) map[string]int {
				t.Helper()
				args := []string{"env"}
				args = append(args, ansibleVars(t)...)
				args = append(args, requireTool(t, "ansible-playbook"))
				args = append(args, playbookArgs(t, root,
					"--limit", "rs1",
					"-e", "realserver_apply=true",
					"-e", "realserver_mode="+tc.mode,
					"-e", `{"realserver_vips": ["`+vip4.Addr().String()+`", "`+vip6.Addr().String()+`"]}`,
				)...)
				args = append(args, extra...)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				out, err := h.Run(ctx, args...)
				if err != nil {
					t.Fatal(err)
				}
				return recap(t, string(out))
			}

			// Runbook step 1: prepare the real server.
			if n := play()["rs1"]; n == 0 {
				t.Error("first run changed nothing")
			}
			assertAddrs(t, h, tc.dev4, vip4, true)
			assertAddrs(t, h, tc.dev6, vip6, true)
			if got := readSysctls(t, h, want); !mapsEqual(got, want) {
				t.Errorf("sysctls after the first run:\n got %v\nwant %v", got, want)
			}
			if tc.mode == "tun" {
				assertUp(t, h, tc.dev4, true)
				assertUp(t, h, tc.dev6, true)
			}
			for _, f := range []string{"usr/local/sbin/directord-realserver", "etc/systemd/system/directord-realserver.service"} {
				if _, err := os.Stat(filepath.Join(root, "rs1", f)); err != nil {
					t.Errorf("not installed: %v", err)
				}
			}

			// Step 2: rerunning the playbook is safe.
			if n := play()["rs1"]; n != 0 {
				t.Errorf("second run changed %d things", n)
			}

			// Step 3: take the real server out.
			if n := play("-e", "realserver_state=absent")["rs1"]; n == 0 {
				t.Error("removal changed nothing")
			}
			assertAddrs(t, h, tc.dev4, vip4, false)
			assertAddrs(t, h, tc.dev6, vip6, false)
			if got := readSysctls(t, h, tc.sysctl); !mapsEqual(got, before) {
				t.Errorf("sysctls after removal:\n got %v\nwant %v (as before)", got, before)
			}
			if tc.mode == "tun" {
				assertUp(t, h, tc.dev4, false)
				assertUp(t, h, tc.dev6, false)
			}
			if left := files(t, filepath.Join(root, "rs1")); len(left) > 0 {
				t.Errorf("left after removal: %v", left)
			}
		})
	}
	if got := rootState(t); got != rootLo {
		t.Errorf("the host's own namespace changed:\n before %s\n after  %s", rootLo, got)
	}
}

// rootState sums up what the role would change in the test host's own
// namespace: lo's addresses and the ARP sysctls.
func rootState(t *testing.T) string {
	t.Helper()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, a := range addrs {
		parts = append(parts, a.IPNet.String())
	}
	slices.Sort(parts)
	for _, k := range []string{"all/arp_ignore", "all/arp_announce", "lo/arp_ignore", "lo/arp_announce"} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + k)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, k+"="+strings.TrimSpace(string(b)))
	}
	return strings.Join(parts, " ")
}

// readSysctls reads the keys of want (paths under /proc/sys) inside h.
func readSysctls(t *testing.T, h *netlab.Host, want map[string]string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := h.Do(func() error {
		for k := range want {
			b, err := os.ReadFile(filepath.Join("/proc/sys", k))
			if err != nil {
				return err
			}
			got[k] = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// assertAddrs checks whether dev in h carries vip with exactly its prefix
// length.
func assertAddrs(t *testing.T, h *netlab.Host, dev string, vip netip.Prefix, want bool) {
	t.Helper()
	l, err := h.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.Netlink().AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	found := false
	for _, a := range addrs {
		have = append(have, a.IPNet.String())
		if a.IPNet.String() == vip.String() {
			found = true
		}
	}
	if found != want {
		t.Errorf("%s on %s: present=%t, want %t (addresses: %v)", vip, dev, found, want, have)
	}
}

func assertUp(t *testing.T, h *netlab.Host, dev string, want bool) {
	t.Helper()
	l, err := h.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	if up := l.Attrs().RawFlags&1 != 0; up != want { // IFF_UP
		t.Errorf("%s up=%t, want %t", dev, up, want)
	}
}

// files lists the files under dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
