package vrrp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/ipv4"
)

const interval = 100 * time.Millisecond

// threeNodes starts lb1..lb3 with priorities 100, 150, 120 on one LAN and a
// client, and waits for the election: lb2 MASTER, the others BACKUP.
func threeNodes(t *testing.T, extra string) (lab *netlab.Lab, nodes []*node, client *netlab.Host) {
	lab = netlab.New(t)
	client = lab.AddHost("client", "192.0.2.100/24")
	for i, prio := range []int{100, 150, 120} {
		h := lab.AddHost([]string{"lb1", "lb2", "lb3"}[i], []string{"192.0.2.11/24", "192.0.2.12/24", "192.0.2.13/24"}[i])
		n := newNode(t, h, "vrrp:\n  instances:\n"+instanceYAML("VI_1", 51, prio, "100ms", extra))
		n.start()
		nodes = append(nodes, n)
	}
	nodes[1].waitState("VI_1", "MASTER", 5*time.Second)
	for _, i := range []int{0, 2} {
		nodes[i].waitState("VI_1", "BACKUP", 5*time.Second)
	}
	return lab, nodes, client
}

// reachVIP pings the VIP from the client and returns the MAC the client's
// neighbour entry for it now holds.
func reachVIP(t *testing.T, client *netlab.Host) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vipAddr := netip.MustParseAddr("192.0.2.50")
	if err := client.Ping(ctx, vipAddr); err != nil {
		t.Fatalf("client cannot reach the VIP: %v", err)
	}
	return neighbourMAC(t, client)
}

// RFC 5798 6.4: three routers elect the highest priority; only the master
// holds the VIP, and the client reaches it there.
func TestNetnsElectHighestPriority(t *testing.T) {
	_, nodes, client := threeNodes(t, "")
	for i, n := range nodes {
		if got, want := n.hasAddr("192.0.2.50/32"), i == 1; got != want {
			t.Errorf("%s holds the VIP: %v, want %v", n.name, got, want)
		}
	}
	if mac := reachVIP(t, client); mac != nodes[1].h.MAC().String() {
		t.Errorf("client reaches the VIP at %s, want lb2's %s", mac, nodes[1].h.MAC())
	}
}

// SIGKILL of the master (no priority 0): the next priority takes over after
// Master_Down_Interval, and the client, whose neighbour entry pointed at the
// old master, reaches the VIP through the new one. When the old master
// returns it removes the VIP its killed run left and preempts.
func TestNetnsMasterKilledNextTakesOverAndPreemptsOnReturn(t *testing.T) {
	_, nodes, client := threeNodes(t, "")
	lb1, lb2, lb3 := nodes[0], nodes[1], nodes[2]
	if mac := reachVIP(t, client); mac != lb2.h.MAC().String() {
		t.Fatalf("client reaches the VIP at %s before the kill, want lb2's %s", mac, lb2.h.MAC())
	}
	lb2.kill()
	lb3.waitState("VI_1", "MASTER", 3*time.Second)
	if lb1.stateOf("VI_1") != "BACKUP" {
		t.Errorf("lb1 is %s, want BACKUP", lb1.stateOf("VI_1"))
	}
	if mac := reachVIP(t, client); mac != lb3.h.MAC().String() {
		t.Errorf("after the takeover the client reaches the VIP at %s, want lb3's %s", mac, lb3.h.MAC())
	}

	lb2.start()
	lb2.waitLog(2*time.Second, func(l logLine) bool {
		return l.Msg == "removed VIP left bound by an earlier run" && l.VIP == "192.0.2.50/32"
	})
	lb2.waitState("VI_1", "MASTER", 3*time.Second)
	lb3.waitState("VI_1", "BACKUP", 2*time.Second)
	// lb3 logs BACKUP just before it releases the VIP, and lb2's
	// gratuitous ARP may still be on its way: a ping at once can be
	// answered by lb3. The client's entry must move to lb2 by itself.
	deadline := time.Now().Add(2 * time.Second)
	for neighbourMAC(t, client) != lb2.h.MAC().String() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if mac := reachVIP(t, client); mac != lb2.h.MAC().String() {
		t.Errorf("after preemption the client reaches the VIP at %s, want lb2's %s", mac, lb2.h.MAC())
	}
}

// neighbourMAC is the client's neighbour entry for the VIP, without
// sending anything.
func neighbourMAC(t *testing.T, client *netlab.Host) string {
	t.Helper()
	out, err := client.Run(context.Background(), "ip", "neigh", "show", "192.0.2.50")
	if err != nil {
		t.Fatal(err)
	}
	f := splitFields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// RFC 5798 6.4.3: a master that stops sends priority 0, and the backup
// takes over after Skew_Time instead of Master_Down_Interval.
func TestNetnsGracefulStopHandsOverWithinSkewTime(t *testing.T) {
	_, nodes, _ := threeNodes(t, "")
	lb2, lb3 := nodes[1], nodes[2]
	lb2.stop()
	gone := lb2.waitState("VI_1", "INIT", time.Second)
	took := lb3.waitState("VI_1", "MASTER", 2*time.Second)
	if lb2.hasAddr("192.0.2.50/32") {
		t.Error("lb2 kept the VIP after SIGTERM")
	}
	skew := time.Duration(256-120) * interval / 256
	handover := took.Time.Sub(gone.Time)
	t.Logf("handover %v (Skew_Time %v, Master_Down_Interval %v)", handover, skew, 3*interval+skew)
	if handover < skew-5*time.Millisecond || handover > skew+50*time.Millisecond {
		t.Errorf("handover took %v, want Skew_Time %v plus a few ms", handover, skew)
	}
	if took.Reason == "" {
		t.Error("takeover logged without a reason")
	}
}

// Without preempt a returning higher-priority router stays backup. (The
// nodes start one after the other: with preempt off, whichever comes up
// first keeps the role, which is the point of the setting.)
func TestNetnsNoPreemptKeepsTheCurrentMaster(t *testing.T) {
	lab := netlab.New(t)
	var nodes []*node
	for i, prio := range []int{150, 120} {
		h := lab.AddHost([]string{"lb2", "lb3"}[i], []string{"192.0.2.12/24", "192.0.2.13/24"}[i])
		n := newNode(t, h, "vrrp:\n  instances:\n"+instanceYAML("VI_1", 51, prio, "100ms", "      preempt: false\n"))
		n.start()
		n.waitState("VI_1", []string{"MASTER", "BACKUP"}[i], 3*time.Second)
		nodes = append(nodes, n)
	}
	lb2, lb3 := nodes[0], nodes[1]
	lb2.stop()
	lb3.waitState("VI_1", "MASTER", 2*time.Second)
	lb2.start()
	lb2.waitState("VI_1", "BACKUP", 2*time.Second)
	time.Sleep(10 * interval) // well past Master_Down_Interval
	if s := lb2.stateOf("VI_1"); s != "BACKUP" {
		t.Errorf("lb2 is %s with preempt false, want BACKUP", s)
	}
	if s := lb3.stateOf("VI_1"); s != "MASTER" {
		t.Errorf("lb3 is %s, want MASTER", s)
	}
}

// A tracked interface going down puts the master in FAULT: it sends
// priority 0 and releases the VIP, and the peer takes over; when the link
// returns the router comes back through BACKUP and preempts.
func TestNetnsTrackedInterfaceDownFaultsAndPeerTakesOver(t *testing.T) {
	lab := netlab.New(t)
	nodes := twoNodes(t, lab, lab.NewSegment("sync"), func(i int) string {
		return "vrrp:\n  instances:\n" + instanceYAML("VI_1", 51, []int{150, 120}[i], "100ms", "      track:\n        interfaces: [{name: eth1, weight: 0}]\n")
	})
	lb1, lb2 := nodes[0], nodes[1]
	lb1.waitState("VI_1", "MASTER", 3*time.Second)
	lb2.waitState("VI_1", "BACKUP", 3*time.Second)

	if err := lb1.h.Link("eth1").Unplug(); err != nil {
		t.Fatal(err)
	}
	f := lb1.waitState("VI_1", "FAULT", 2*time.Second)
	if f.Reason != "tracked interface eth1 is down" {
		t.Errorf("fault reason %q", f.Reason)
	}
	lb2.waitState("VI_1", "MASTER", time.Second)
	if lb1.hasAddr("192.0.2.50/32") {
		t.Error("lb1 kept the VIP in FAULT")
	}

	if err := lb1.h.Link("eth1").Plug(); err != nil {
		t.Fatal(err)
	}
	lb1.waitState("VI_1", "MASTER", 3*time.Second)
	lb2.waitState("VI_1", "BACKUP", time.Second)
	var sawBackup bool
	for _, tr := range lb1.transitions("VI_1") {
		sawBackup = sawBackup || (tr.From == "FAULT" && tr.To == "BACKUP")
	}
	if !sawBackup {
		t.Error("lb1 did not return from FAULT through BACKUP")
	}
}

// twoNodes starts lb1 and lb2 on the LAN, each also on seg (as eth1) if
// seg is not nil.
func twoNodes(t *testing.T, lab *netlab.Lab, seg *netlab.Segment, vrrp func(i int) string) []*node {
	t.Helper()
	var nodes []*node
	for i := range 2 {
		h := lab.AddHost([]string{"lb1", "lb2"}[i], []string{"192.0.2.11/24", "192.0.2.12/24"}[i])
		if seg != nil {
			seg.AddLink(h, "eth1", []string{"198.51.100.11/24", "198.51.100.12/24"}[i])
		}
		n := newNode(t, h, vrrp(i))
		n.start()
		nodes = append(nodes, n)
	}
	return nodes
}

// Split brain: a partition of the VRRP path (nftables in one namespace)
// gives two masters; when it heals the lower priority steps down within
// one advert interval, because the higher master answers its advert at once
// (or, if the lower one heard the higher first, because it says priority 0
// as it steps down). Either way the remaining master re-announces the VIP,
// so a client that followed the other master's gratuitous ARP during the
// split comes back.
func TestNetnsPartitionHealsToOneMaster(t *testing.T) {
	partitionHeal(t, false)
}

// The same heal, but lb1 hears again before it can send (its outbound
// VRRP still dropped): it steps down on lb2's advert and its priority 0
// is lost, so lb2 hears nothing from the other master. The claim lb1's
// gratuitous ARP made during the split is what brings the client back:
// lb2 asks who holds the VIP, nobody else answers, and it announces the
// VIP again.
func TestNetnsPartitionLostStepDownReclaimed(t *testing.T) {
	partitionHeal(t, true)
}

func partitionHeal(t *testing.T, loseStepDown bool) {
	lab := netlab.New(t)
	nodes := twoNodes(t, lab, nil, func(i int) string {
		return "vrrp:\n  instances:\n" + instanceYAML("VI_1", 51, []int{100, 150}[i], "100ms", "")
	})
	lb1, lb2 := nodes[0], nodes[1]
	lb2.waitState("VI_1", "MASTER", 3*time.Second)
	lb1.waitState("VI_1", "BACKUP", 3*time.Second)
	client := lab.AddHost("client", "192.0.2.100/24")
	if mac := reachVIP(t, client); mac != lb2.h.MAC().String() {
		t.Fatalf("client reaches the VIP at %s, want lb2's %s", mac, lb2.h.MAC())
	}
	neighMAC := func() string { return neighbourMAC(t, client) }

	nft := func(args ...string) {
		t.Helper()
		if out, err := lb1.h.Run(context.Background(), append([]string{"nft"}, args...)...); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	// One table per direction, so a heal can open one and not the other.
	nft("add table inet partition_in")
	nft("add chain inet partition_in in { type filter hook input priority 0 ; }")
	nft("add rule inet partition_in in ip protocol vrrp drop")
	nft("add table inet partition_out")
	nft("add chain inet partition_out out { type filter hook output priority 0 ; }")
	nft("add rule inet partition_out out ip protocol vrrp drop")
	lb1.waitState("VI_1", "MASTER", 2*time.Second)
	if s := lb2.stateOf("VI_1"); s != "MASTER" {
		t.Fatalf("lb2 is %s during the partition, want MASTER (two masters)", s)
	}
	// lb1's gratuitous ARP moves the client to lb1 during the split.
	deadline := time.Now().Add(2 * time.Second)
	for neighMAC() != lb1.h.MAC().String() {
		if time.Now().After(deadline) {
			t.Fatalf("during the split the client's entry stayed %s, want lb1's %s", neighMAC(), lb1.h.MAC())
		}
		time.Sleep(10 * time.Millisecond)
	}

	healed := time.Now()
	if loseStepDown {
		nft("delete table inet partition_in")
	} else {
		nft("delete table inet partition_in; delete table inet partition_out")
	}
	down := lb1.waitState("VI_1", "BACKUP", 2*time.Second)
	took := down.Time.Sub(healed)
	t.Logf("one master again %v after the partition healed (advert interval %v)", took, interval)
	if took > interval+50*time.Millisecond {
		t.Errorf("convergence took %v, want within one advert interval (%v)", took, interval)
	}
	if s := lb2.stateOf("VI_1"); s != "MASTER" {
		t.Errorf("lb2 is %s after healing, want MASTER", s)
	}
	if lb1.hasAddr("192.0.2.50/32") {
		t.Error("lb1 kept the VIP after stepping down")
	}
	// The client's entry is back on lb2 without the client asking: at once
	// when lb2 heard the other master, or when lb2's probe after its
	// conflict grace (500 ms from lb1's claim) finds nobody else answering.
	deadline = time.Now().Add(2 * time.Second)
	for neighMAC() != lb2.h.MAC().String() {
		if time.Now().After(deadline) {
			t.Fatalf("after the heal the client's entry for the VIP is %s, want lb2's %s (no re-announcement)", neighMAC(), lb2.h.MAC())
		}
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Since(healed)
	t.Logf("client back on lb2 %v after the heal", back.Round(time.Millisecond))
	reclaimed := func() (logLine, bool) {
		for _, l := range lb2.lines() {
			if strings.HasPrefix(l.Msg, "VIP reclaimed") {
				return l, true
			}
		}
		return logLine{}, false
	}
	switch l, ok := reclaimed(); {
	case loseStepDown:
		l = lb2.waitLog(time.Second, func(l logLine) bool { return strings.HasPrefix(l.Msg, "VIP reclaimed") })
		t.Logf("lb2: %s, %v after the heal", l.Msg, l.Time.Sub(healed).Round(time.Millisecond))
	case ok:
		// Even one nftables transaction unhooks input and output one
		// after the other: lb1 may hear lb2 before its step-down can leave.
		t.Logf("lb1's step-down was lost in the heal; lb2 reclaimed the VIP %v after it", l.Time.Sub(healed).Round(time.Millisecond))
	case back > 400*time.Millisecond:
		t.Errorf("the client came back %v after the heal, not at once and not by a reclaim", back)
	}
}

// Unicast mode: adverts go to the configured peers only, and adverts from
// any other source are dropped and counted, whatever their priority.
func TestNetnsUnicastDropsNonPeers(t *testing.T) {
	lab := netlab.New(t)
	peers := []string{"192.0.2.12", "192.0.2.11"}
	nodes := twoNodes(t, lab, nil, func(i int) string {
		return "vrrp:\n  instances:\n" + instanceYAML("VI_1", 51, []int{100, 150}[i], "100ms",
			"      unicast_peers: ["+peers[i]+"]\n")
	})
	lb1, lb2 := nodes[0], nodes[1]
	lb2.waitState("VI_1", "MASTER", 3*time.Second)
	lb1.waitState("VI_1", "BACKUP", 3*time.Second)

	// A rogue with a higher priority that sends unicast adverts to lb1.
	before := len(lb1.transitions("VI_1"))
	rogue := newNode(t, lab.AddHost("rogue", "192.0.2.13/24"), "vrrp:\n  instances:\n"+
		instanceYAML("VI_1", 51, 200, "100ms", "      unicast_peers: [192.0.2.11]\n"))
	rogue.start()
	lb1.waitLog(2*time.Second, func(l logLine) bool {
		return l.Msg == "VRRP advert dropped" && l.Reason == "not_peer" && l.Src == "192.0.2.13"
	})
	time.Sleep(5 * interval)
	if s := lb1.stateOf("VI_1"); s != "BACKUP" {
		t.Errorf("lb1 is %s after the rogue's adverts, want BACKUP", s)
	}
	if s := lb2.stateOf("VI_1"); s != "MASTER" {
		t.Errorf("lb2 is %s, want MASTER", s)
	}
	if n := len(lb1.transitions("VI_1")) - before; n != 0 {
		t.Errorf("the rogue's adverts caused %d transitions on lb1: %+v", n, lb1.transitions("VI_1"))
	}
}

// Bad input: crafted adverts claiming priority 255 (wrong TTL, a bad
// checksum, an unknown VRID, truncated, the wrong VRRPv2 password, other
// addresses) are dropped and counted by reason, and nobody changes state.
func TestNetnsCraftedAdvertsAreDroppedAndCounted(t *testing.T) {
	lab := netlab.New(t)
	nodes := twoNodes(t, lab, nil, func(i int) string {
		prio := []int{100, 150}[i]
		return "vrrp:\n  instances:\n" + instanceYAML("VI_1", 51, prio, "100ms", "") + fmt.Sprintf(`    - name: VI_2
      interface: eth0
      vrid: 52
      priority: %d
      version: 2
      advert_interval: 1s
      authentication: {type: pass, password: s3cret}
      virtual_addresses: [192.0.2.60]
`, prio)
	})
	lb1, lb2 := nodes[0], nodes[1]
	for _, inst := range []string{"VI_1", "VI_2"} {
		lb2.waitState(inst, "MASTER", 5*time.Second)
		lb1.waitState(inst, "BACKUP", 5*time.Second)
	}
	before := []int{len(lb1.lines()), len(lb2.lines())}
	count := func(n *node) int { return len(n.transitions("VI_1")) + len(n.transitions("VI_2")) }
	transitions := []int{count(lb1), count(lb2)}

	rogue := lab.AddHost("rogue", "192.0.2.66/24")
	src, dst := netip.MustParseAddr("192.0.2.66"), groupV4
	marshal := func(a Advert) []byte {
		b, err := a.Marshal(src, dst, ChecksumRFC)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	vip50, vip60 := []netip.Addr{netip.MustParseAddr("192.0.2.50")}, []netip.Addr{netip.MustParseAddr("192.0.2.60")}
	good := marshal(Advert{Version: 3, VRID: 51, Priority: 255, Interval: interval, Addresses: vip50})
	badSum := bytes.Clone(good)
	badSum[7] ^= 0xff
	cases := []struct {
		reason string
		ttl    int
		pkt    []byte
	}{
		{"bad_ttl", 254, good},
		{"bad_checksum", 255, badSum},
		{"unknown_vrid", 255, marshal(Advert{Version: 3, VRID: 99, Priority: 255, Interval: interval, Addresses: vip50})},
		{"truncated", 255, good[:6]},
		{"auth_mismatch", 255, marshal(Advert{Version: 2, VRID: 52, Priority: 255, Interval: time.Second, Addresses: vip60, AuthType: 1, AuthData: PassAuth("guess")})},
		{"address_mismatch", 255, marshal(Advert{Version: 3, VRID: 51, Priority: 255, Interval: interval, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.99")}})},
	}
	var conn *ipv4.PacketConn
	var ifindex int
	err := rogue.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		c, err := net.ListenPacket("ip4:112", "0.0.0.0")
		if err != nil {
			return err
		}
		conn = ipv4.NewPacketConn(c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 3 {
		for _, c := range cases {
			if err := conn.SetMulticastTTL(c.ttl); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.WriteTo(c.pkt, &ipv4.ControlMessage{IfIndex: ifindex}, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, n := range nodes {
		for _, c := range cases {
			n.waitLog(2*time.Second, func(l logLine) bool {
				return l.Msg == "VRRP advert dropped" && l.Reason == c.reason && l.Src == "192.0.2.66"
			})
		}
		if got := count(n); got != transitions[i] {
			t.Errorf("%s changed state %d times after the crafted adverts:\n%v", n.name, got-transitions[i], n.lines()[before[i]:])
		}
	}
	time.Sleep(3 * interval)
	if lb2.stateOf("VI_1") != "MASTER" || lb1.stateOf("VI_1") != "BACKUP" {
		t.Errorf("states after the crafted adverts: lb1 %s, lb2 %s", lb1.stateOf("VI_1"), lb2.stateOf("VI_1"))
	}
}

// A backup stalled for longer than Master_Down_Interval (SIGSTOP, a paused
// VM) wakes up with an expired timer and a socket full of adverts from the
// live master. It processes the adverts first and stays backup.
func TestNetnsStalledBackupDoesNotTakeOver(t *testing.T) {
	lab := netlab.New(t)
	nodes := twoNodes(t, lab, nil, func(i int) string {
		return "vrrp:\n  instances:\n" + instanceYAML("VI_1", 51, []int{100, 150}[i], "100ms", "")
	})
	lb1, lb2 := nodes[0], nodes[1]
	lb2.waitState("VI_1", "MASTER", 3*time.Second)
	lb1.waitState("VI_1", "BACKUP", 3*time.Second)
	before := len(lb1.transitions("VI_1"))
	// Whether the expired timer or the queued adverts are seen first after
	// SIGCONT is up to the scheduler; enough stalls make an engine that
	// does not drain first take over (checked: 10 of 12 stalls did).
	for range 8 {
		if err := lb1.proc.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * interval) // Master_Down_Interval is 3.6 intervals
		if err := lb1.proc.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * interval)
	}
	if n := len(lb1.transitions("VI_1")) - before; n != 0 {
		t.Errorf("the stalled backup changed state %d times: %+v", n, lb1.transitions("VI_1")[before:])
	}
	if s := lb2.stateOf("VI_1"); s != "MASTER" {
		t.Errorf("lb2 is %s, want MASTER", s)
	}
}

// VRRPv3 over IPv6 (RFC 5798 5.1.2): adverts from the link-local address to
// ff02::12; the master holds the IPv6 VIP and hands it over on stop.
func TestNetnsIPv6Failover(t *testing.T) {
	lab := netlab.New(t)
	client := lab.AddHost("client", "2001:db8::100/64")
	var nodes []*node
	for i, prio := range []int{150, 120} {
		h := lab.AddHost([]string{"lb1", "lb2"}[i], []string{"2001:db8::11/64", "2001:db8::12/64"}[i])
		n := newNode(t, h, fmt.Sprintf(`vrrp:
  instances:
    - name: VI_6
      interface: eth0
      vrid: 61
      priority: %d
      advert_interval: 100ms
      virtual_addresses: ["2001:db8::50"]
      garp: {repeat: 2, master_delay: 0s}
`, prio))
		n.start()
		nodes = append(nodes, n)
	}
	lb1, lb2 := nodes[0], nodes[1]
	lb1.waitState("VI_6", "MASTER", 3*time.Second)
	lb2.waitState("VI_6", "BACKUP", 3*time.Second)
	if !lb1.hasAddr("2001:db8::50/128") || lb2.hasAddr("2001:db8::50/128") {
		t.Fatal("the IPv6 VIP is not on the master alone")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx, netip.MustParseAddr("2001:db8::50")); err != nil {
		t.Fatalf("client cannot reach the IPv6 VIP: %v", err)
	}
	lb1.stop()
	lb2.waitState("VI_6", "MASTER", time.Second)
	if err := client.Ping(ctx, netip.MustParseAddr("2001:db8::50")); err != nil {
		t.Fatalf("client cannot reach the IPv6 VIP after the handover: %v", err)
	}
	for _, l := range lb2.lines() {
		if l.Msg == "VRRP advert dropped" {
			t.Errorf("lb2 dropped an advert: %+v", l)
		}
	}
}

// A sync group moves together: when a tracked interface faults one member
// the whole group faults, and the peer becomes master of every member.
func TestNetnsSyncGroupFaultsTogether(t *testing.T) {
	lab := netlab.New(t)
	nodes := twoNodes(t, lab, lab.NewSegment("sync"), func(i int) string {
		prio := []int{150, 100}[i]
		return fmt.Sprintf(`vrrp:
  sync_groups:
    - {name: G1, instances: [VI_1, VI_2]}
  instances:
%s    - name: VI_2
      interface: eth0
      vrid: 52
      priority: %d
      advert_interval: 100ms
      virtual_addresses: [192.0.2.60]
      track:
        interfaces: [{name: eth1, weight: 0}]
`, instanceYAML("VI_1", 51, prio, "100ms", ""), prio)
	})
	lb1, lb2 := nodes[0], nodes[1]
	for _, inst := range []string{"VI_1", "VI_2"} {
		lb1.waitState(inst, "MASTER", 3*time.Second)
		lb2.waitState(inst, "BACKUP", 3*time.Second)
	}
	if err := lb1.h.Link("eth1").Unplug(); err != nil {
		t.Fatal(err)
	}
	f := lb1.waitState("VI_1", "FAULT", 2*time.Second)
	if f.Reason != "sync group G1: VI_2 faulted (tracked interface eth1 is down)" {
		t.Errorf("VI_1 fault reason %q", f.Reason)
	}
	lb1.waitState("VI_2", "FAULT", time.Second)
	for _, inst := range []string{"VI_1", "VI_2"} {
		lb2.waitState(inst, "MASTER", 2*time.Second)
	}
	if lb1.hasAddr("192.0.2.50/32") || lb1.hasAddr("192.0.2.60/32") {
		t.Error("lb1 kept a VIP of the faulted group")
	}
}

// Notify hooks run without a shell with keepalived's arguments:
// INSTANCE <name> <STATE> <priority>, STOP when the instance stops.
func TestNetnsNotifyHooks(t *testing.T) {
	lab := netlab.New(t)
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	out := filepath.Join(dir, "notify.log")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$*\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, lab.AddHost("lb1", "192.0.2.11/24"), "vrrp:\n  instances:\n"+instanceYAML("VI_1", 51, 150, "100ms",
		fmt.Sprintf("      notify:\n        master: [%q, master]\n        backup: [%q, backup]\n        stop: [%q, stop]\n        any: [%q, any]\n", hook, hook, hook, hook)))
	n.start()
	n.waitState("VI_1", "MASTER", 3*time.Second)
	n.stop()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(got)
	want := []string{
		"any INSTANCE VI_1 BACKUP 150", "any INSTANCE VI_1 MASTER 150", "any INSTANCE VI_1 STOP 150",
		"backup INSTANCE VI_1 BACKUP 150", "master INSTANCE VI_1 MASTER 150", "stop INSTANCE VI_1 STOP 150",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notify calls (-want +got):\n%s", diff)
	}
}

// A failing tracked script with a weight lowers the priority below the
// peer's, which preempts; when the script recovers the original master
// preempts back.
func TestNetnsTrackedScriptWeightMovesMaster(t *testing.T) {
	lab := netlab.New(t)
	// The script runs as nobody, which cannot enter t.TempDir's 0700 parent.
	dir, err := os.MkdirTemp("", "vrrp-script-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(dir, "healthy")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	for i, prio := range []int{150, 100} {
		h := lab.AddHost([]string{"lb1", "lb2"}[i], []string{"192.0.2.11/24", "192.0.2.12/24"}[i])
		track := ""
		scripts := ""
		if i == 0 {
			scripts = fmt.Sprintf("  scripts:\n    - {name: chk, command: [/usr/bin/test, -e, %q], interval: 100ms, timeout: 100ms, rise: 2, fall: 2}\n", flag)
			track = "      track:\n        scripts: [{name: chk, weight: -60}]\n"
		}
		n := newNode(t, h, "vrrp:\n"+scripts+"  instances:\n"+instanceYAML("VI_1", 51, prio, "100ms", track))
		n.start()
		nodes = append(nodes, n)
	}
	lb1, lb2 := nodes[0], nodes[1]
	lb1.waitState("VI_1", "MASTER", 3*time.Second)
	lb2.waitState("VI_1", "BACKUP", 3*time.Second)

	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	lb1.waitLog(2*time.Second, func(l logLine) bool { return l.Msg == "VRRP priority changed by tracking" })
	lb2.waitState("VI_1", "MASTER", 2*time.Second)
	lb1.waitState("VI_1", "BACKUP", time.Second)

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lb1.waitState("VI_1", "MASTER", 3*time.Second)
	lb2.waitState("VI_1", "BACKUP", time.Second)
}

// An idle director costs nothing: with no tracked scripts (a closed
// channel in the loop) directord once spun a core at 100%.
func TestNetnsIdleDirectordDoesNotSpin(t *testing.T) {
	lab := netlab.New(t)
	n := newNode(t, lab.AddHost("lb1", "192.0.2.11/24"), "vrrp:\n  instances:\n"+instanceYAML("VI_1", 51, 150, "1s", ""))
	n.start()
	n.waitState("VI_1", "BACKUP", time.Second)
	before := cpuTime(t, n.proc.Pid())
	time.Sleep(2 * time.Second)
	if used := cpuTime(t, n.proc.Pid()) - before; used > 200*time.Millisecond {
		t.Errorf("idle directord used %v of CPU in 2s", used)
	}
}

// cpuTime is a process's user+system time from /proc/PID/stat.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name (which may hold spaces).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}
